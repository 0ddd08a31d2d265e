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


AMP_CHOICES = ("auto", "on", "off")


def cpu_has_native_bfloat16():
    """True where the processor has AVX512-BF16 or AMX instructions (bfloat16 runs fast there)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def choose_precision(device, amp):
    """(autocast dtype or None for float32, a sentence saying why) for ``--amp auto|on|off``.

    auto: bfloat16 where the hardware runs it natively (CUDA GPUs with bfloat16, CPUs with
    AVX512-BF16 or AMX), float32 elsewhere. on: bfloat16, or float16 on a GPU without bfloat16
    (then training uses a gradient scaler); on a CPU without native bfloat16 it is emulated and
    slow. off: float32. ``True``/``False`` are read as on/off (checkpoints of earlier versions).
    """
    amp = {True: "on", False: "off", None: "off"}.get(amp, amp)
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp {amp!r}; choose one of {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None, "float32 (--amp off)"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"bfloat16 autocast (--amp {amp}: this GPU supports bfloat16)"
        if amp == "auto":
            return None, "float32 (--amp auto: this GPU has no bfloat16; --amp on would use float16)"
        return torch.float16, "float16 autocast with a gradient scaler (--amp on: this GPU has no bfloat16)"
    if cpu_has_native_bfloat16():
        return torch.bfloat16, f"bfloat16 autocast (--amp {amp}: this CPU has AVX512-BF16 or AMX)"
    if amp == "auto":
        return None, "float32 (--amp auto: this CPU has no AVX512-BF16 or AMX)"
    print("warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX); --amp on will likely be slower "
          "than float32", file=sys.stderr)
    return torch.bfloat16, "bfloat16 autocast (--amp on, emulated: this CPU has no AVX512-BF16 or AMX)"


def amp_dtype_for(device, amp):
    """The autocast dtype ``choose_precision`` picks (None for float32)."""
    return choose_precision(device, amp)[0]
