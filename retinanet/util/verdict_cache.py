"""Verdicts about this machine's kernels, kept between runs: {machine: {key: number}} in a JSON file.

The file lies in ``cache_dir()``: ``$RETINANET_CACHE_DIR``, else ``$XDG_CACHE_HOME/retinanet``, else
``~/.cache/retinanet``. A machine is what a kernel's choice depends on (``machine_fingerprint``),
so a cache copied to another machine, or read under another PyTorch or ISA limit, gives nothing.
A missing or unreadable file is an empty cache; a failed write is a warning, and the next run
measures again.
"""
import json
import math
import os
import platform
import sys

import torch

from retinanet.util.io import write_json

CACHE_VERSION = 1


def cache_dir():
    """``$RETINANET_CACHE_DIR``, else ``$XDG_CACHE_HOME/retinanet``, else ``~/.cache/retinanet``."""
    if os.environ.get("RETINANET_CACHE_DIR"):
        return os.environ["RETINANET_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "retinanet")


def machine_fingerprint(device):
    """What a kernel's choice depends on: the processor or GPU, PyTorch, the ISA limit, the threads."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = f"{torch.cuda.get_device_name(index)} cuda {torch.version.cuda}"
    else:
        hardware = f"{_cpu_model()} {torch.backends.cpu.get_cpu_capability()} threads {torch.get_num_threads()}"
    limits = " ".join(f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                      if os.environ.get(name))
    return f"torch {torch.__version__} | {hardware}" + (f" | {limits}" if limits else "")


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (macOS, Windows): the platform's own name below
    return platform.processor() or platform.machine()


class VerdictCache:
    """The numbers saved for this machine in ``cache_dir()/file_name``; ``put`` then ``save``."""

    def __init__(self, file_name, fingerprint):
        self.path = os.path.join(cache_dir(), file_name)
        self.fingerprint = fingerprint
        self.new = {}
        machines = self._read().get("machines", {})
        self.entries = machines.get(fingerprint, {}) if isinstance(machines, dict) else {}

    def get(self, key):
        value = self.entries.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def put(self, key, value):
        self.new[key] = value if math.isfinite(value) else 1e30  # JSON has no infinity

    def save(self):
        if not self.new:
            return
        try:
            saved = self._read()
            machines = saved.get("machines") if isinstance(saved.get("machines"), dict) else {}
            machines.setdefault(self.fingerprint, {}).update(self.new)
            write_json(self.path, {"version": CACHE_VERSION, "machines": machines})
        except OSError as error:  # a read-only home: the measurement runs again next time, and says why
            print(f"warning: cannot write the cache {self.path}: {getattr(error, 'reason', None) or error.strerror or error}; set "
                  "RETINANET_CACHE_DIR to a writable folder to keep these verdicts", file=sys.stderr)

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as stream:
                saved = json.load(stream)
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) and saved.get("version") == CACHE_VERSION else {}
