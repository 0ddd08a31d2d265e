"""Running the steps of a scripted pipeline (``tools/demo.py``, ``tools/bccd_run.py``)."""
import subprocess


def run_command(command, cwd=None):
    """Run one step, echoing it; stop the pipeline if it fails."""
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command, cwd=cwd)
    if completed.returncode != 0:
        raise SystemExit(f"stopped: '{' '.join(command[1:3])}' exited with status {completed.returncode}")
