"""Choosing the device and the autocast dtype, once, for every script and the Python API."""
import sys

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name):
    """``auto``: cuda when PyTorch sees a GPU, else cpu. Raises ValueError for cuda without one."""
    if name not in DEVICE_CHOICES and not str(name).startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def amp_dtype_for(device, enabled):
    """The autocast dtype for --amp: bfloat16 where the device supports it, else float16 (GPU).

    On the CPU only bfloat16 autocast exists; it is fast where the processor has native
    bfloat16 instructions (AVX512-BF16 or AMX) and slow elsewhere, so it stays opt-in."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("warning: this CPU has no fast bfloat16 support; --amp will likely be slower than float32",
              file=sys.stderr)
    return torch.bfloat16
