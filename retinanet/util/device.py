"""Choosing the device and the autocast dtype, once, for every script and the Python API."""
import os
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


# oneDNN instruction-set limits below AVX512_CORE_BF16: with one of these in ONEDNN_MAX_CPU_ISA (or
# its older name DNNL_MAX_CPU_ISA), oneDNN emulates bfloat16 whatever the processor has.
ISA_LIMITS_WITHOUT_BFLOAT16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def isa_limit():
    """The oneDNN instruction-set limit set in the environment, upper-case, or None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value else None


def cpu_has_native_bfloat16():
    """True where the processor has AVX512-BF16 or AMX instructions (bfloat16 runs fast there) and
    no oneDNN instruction-set limit in the environment keeps them from being used."""
    if isa_limit() in ISA_LIMITS_WITHOUT_BFLOAT16:
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def _no_native_reason():
    limit = isa_limit()
    if limit in ISA_LIMITS_WITHOUT_BFLOAT16:
        return f"ONEDNN_MAX_CPU_ISA={limit} keeps oneDNN from AVX512-BF16 and AMX"
    return "this CPU has no AVX512-BF16 or AMX"


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
        return None, f"float32 (--amp auto: {_no_native_reason()})"
    print(f"warning: no native bfloat16 ({_no_native_reason()}); --amp on will likely be slower than float32",
          file=sys.stderr)
    return torch.bfloat16, f"bfloat16 autocast (--amp on, emulated: {_no_native_reason()})"

