"""One-process or torchrun (DistributedDataParallel) execution.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs in one process and
these helpers are no-ops.
"""
import os

import torch
import torch.distributed as dist


def init_from_environment(device_type):
    """Start the process group when launched by torchrun. Returns (rank, world_size, local_rank)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return rank, world_size, local_rank


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return rank() == 0


def all_reduce_sum(tensor):
    """Sum a CPU float tensor over processes (returns it unchanged in one process)."""
    if not is_distributed():
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    reduced = tensor.to(device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def all_gather_objects(obj):
    """Gather a picklable object from every process into a list (a list of one otherwise)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier():
    if is_distributed():
        dist.barrier()


def cleanup():
    if is_distributed():
        dist.destroy_process_group()
