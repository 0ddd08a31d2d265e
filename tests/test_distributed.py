"""Two processes on the CPU (gloo), launched the way torchrun launches them."""
import os
import subprocess
import sys
import textwrap

import torch

from retinanet.data.coco import CocoDetection
from retinanet.data.sampler import AspectRatioBatchSampler
from retinanet.data.synthetic import generate_dataset
from retinanet.data.transforms import EvalTransform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import os, sys
    import torch
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_script", os.path.join({root!r}, "train.py"))
    train_script = importlib.util.module_from_spec(spec); spec.loader.exec_module(train_script)
    from retinanet.training.trainer import Trainer

    args = train_script.parse_args(sys.argv[1:])
    trainer = Trainer(args)
    trainer.fit()
    rank = int(os.environ["RANK"])
    torch.save(trainer.model_without_ddp.state_dict(), os.path.join({out!r}, f"rank{{rank}}.pt"))
    torch.save(len(trainer.train_loader), os.path.join({out!r}, f"steps{{rank}}.pt"))
    trainer.close()
""")


def test_two_processes_train_one_epoch_and_end_with_identical_weights(tmp_path):
    data = tmp_path / "data"
    generate_dataset(str(data), num_train=12, num_val=2, num_test=2, min_size=96, max_size=128, seed=5)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(root=ROOT, out=str(tmp_path)))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(worker), "--coco_path", str(data), "--output_path", str(tmp_path / "output"),
               "--log_dir", str(tmp_path / "log"), "--run_name", "ddp", "--depth", "18", "--fpn_channels", "64",
               "--min_side", "96", "--max_side", "128", "--workers", "0", "--batch_size", "2", "--epochs", "1",
               "--val_set", "", "--device", "cpu", "--print_every", "0"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Each rank stepped through its own half of the epoch's batches (padded to an even count).
    dataset = CocoDetection(str(data), "train", EvalTransform())
    all_batches = len(AspectRatioBatchSampler(dataset.aspect_ratios(), 2, seed=3407))
    assert torch.load(tmp_path / "steps0.pt") == torch.load(tmp_path / "steps1.pt") == (all_batches + 1) // 2
    # Only the main process writes the run's files.
    assert (tmp_path / "output" / "ddp" / "checkpoint_last.pt").exists()
    assert "2 process(es)" in (tmp_path / "log" / "ddp.log").read_text()
