"""`pip install .` gives the console commands, and they run the scripts' code."""
import os
import shutil
import site
import subprocess
import sys
import tomllib

from scripts import ROOT

COMMANDS = {"retinanet-train": "--coco_path", "retinanet-test": "--checkpoint_path", "retinanet-vis": "--num_images",
            "retinanet-submission": "--results", "retinanet-export": "--raw", "retinanet-check": "--set_name"}


def test_the_commands_listed_are_the_ones_declared():
    declared = tomllib.loads(open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read())["project"]["scripts"]
    assert set(declared) == set(COMMANDS)


def test_a_wheel_installed_in_a_new_environment_gives_each_command_and_its_help(tmp_path):
    # The project as a wheel, built offline from a copy (the build leaves nothing in the clone), installed
    # without its dependencies into a new virtual environment that borrows this one's (torch and the rest).
    source = tmp_path / "source"
    shutil.copytree(os.path.join(ROOT, "retinanet"), source / "retinanet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    quiet = {"capture_output": True, "text": True, "timeout": 300}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-q", "-w", str(tmp_path / "wheel"), str(source)], **quiet)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = (tmp_path / "wheel").glob("retinanet-*.whl")
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=120)
    python = environment / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, **quiet).stdout.strip()
    # A plain path line: this environment's packages, without running its .pth files (the editable
    # install of the clone among them).
    with open(os.path.join(target, "borrowed.pth"), "w") as pth:
        pth.write("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--disable-pip-version-check", "-q", str(wheel)], **quiet)
    assert installed.returncode == 0, installed.stderr[-2000:]
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import retinanet; print(retinanet.__file__)"], cwd=tmp_path,
                           env=clean, check=True, **quiet).stdout.strip()
    assert where.startswith(target), where  # the installed package, not the clone
    for command, flag in COMMANDS.items():
        path = environment / "bin" / command
        assert path.exists(), f"{command} was not installed"
        shown = subprocess.run([str(path), "--help"], cwd=tmp_path, env=clean, **quiet)
        assert shown.returncode == 0 and flag in shown.stdout, (command, shown.stderr[-2000:])
        assert shown.stdout.startswith(f"usage: {command}"), shown.stdout[:200]
    # A command's error is the scripts' one line and exit status 2.
    failed = subprocess.run([str(environment / "bin" / "retinanet-test"), "--checkpoint_path",
                             str(tmp_path / "absent.pt")], cwd=tmp_path, env=clean, **quiet)
    assert failed.returncode == 2 and "absent.pt" in failed.stderr, failed.stderr[-2000:]
