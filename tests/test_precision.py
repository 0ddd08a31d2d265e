"""--amp auto|on|off: bfloat16 only where the hardware runs it natively, unless forced."""
import pytest
import torch

from retinanet.util import device as device_module
from retinanet.util.device import choose_precision
from scripts import load_script

CPU = torch.device("cpu")


@pytest.mark.parametrize("native, amp, dtype, reason", [
    (True, "auto", torch.bfloat16, "this CPU has AVX512-BF16 or AMX"),
    (False, "auto", None, "this CPU has no AVX512-BF16 or AMX"),
    (True, "off", None, "float32 (--amp off)"),
    (False, "off", None, "float32 (--amp off)"),
    (True, "on", torch.bfloat16, "--amp on"),
    (False, "on", torch.bfloat16, "emulated"),
    (False, True, torch.bfloat16, "emulated"),  # checkpoints of earlier versions stored a boolean
    (True, False, None, "float32"),
])
def test_cpu_precision_follows_the_hardware_unless_forced(monkeypatch, native, amp, dtype, reason):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: native)
    chosen, why = choose_precision(CPU, amp)
    assert chosen == dtype and reason in why


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_an_isa_limit_below_bfloat16_means_float32_on_auto(monkeypatch, variable):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(variable, "avx2")
    assert not device_module.cpu_has_native_bfloat16()
    chosen, why = choose_precision(CPU, "auto")
    assert chosen is None and why == "float32 (--amp auto: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from AVX512-BF16 and AMX)"
    monkeypatch.setenv(variable, "AVX512_CORE_AMX")  # a limit at or above bfloat16 leaves the hardware's say
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert device_module.cpu_has_native_bfloat16() == hardware


def test_a_gpu_without_bfloat16_uses_float32_on_auto_and_float16_when_forced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    gpu = torch.device("cuda")
    assert choose_precision(gpu, "auto")[0] is None
    assert choose_precision(gpu, "on")[0] == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision(gpu, "auto")[0] == torch.bfloat16


def test_unknown_amp_value_is_refused():
    with pytest.raises(ValueError, match="auto, on, off"):
        choose_precision(CPU, "sometimes")


def test_amp_flag_defaults_to_auto_and_a_bare_flag_means_on(tmp_path):
    train_script = load_script("train")
    assert train_script.parse_args(["--coco_path", str(tmp_path)]).amp == "auto"
    assert train_script.parse_args(["--coco_path", str(tmp_path), "--amp"]).amp == "on"
    assert train_script.parse_args(["--coco_path", str(tmp_path), "--amp", "off"]).amp == "off"
