"""An exported file behind the call ``engine.detect_batch`` makes of a model.

``open_exported(path, backend)`` gives an object that takes a padded batch (B, 3, H, W), H and W
multiples of 32, and returns the dict ``RetinaNet.forward`` returns: the runtime computes
``cls_logits`` (B, N, K) and ``box_deltas`` (B, N, 4); ``anchors`` (N, 4), ``level_sizes`` and
``box_coding_std`` are rebuilt here from the input size and the file's model options (anchor
layout, sizes, scales and ratios), by the same ``AnchorGenerator`` the network uses. ``PostProcessor`` then decodes it as for PyTorch.
Both runtimes run on the CPU in float32 (OpenVINO's bfloat16 default is turned off) with as many
threads as PyTorch uses.
"""
import numpy as np
import torch

from retinanet.deploy.extras import import_extras
from retinanet.deploy.metadata import ExportedModelError, read_metadata
from retinanet.models.anchors import AnchorGenerator, feature_sizes_for_image
from retinanet.util.device import isa_limit

INPUT_NAME = "images"
OUTPUT_NAMES = ("cls_logits", "box_deltas")
EXPORTED_BACKENDS = ("onnxruntime", "openvino")
BACKEND_CHOICES = ("torch",) + EXPORTED_BACKENDS


class ExportedModel:
    """Base class: subclasses open the file and implement ``run(images) -> (cls_logits, box_deltas)``."""

    backend = None  # also the name of the optional packages it needs (extras.NEEDS)

    def __init__(self, path, metadata=None, threads=None):
        runtime = import_extras(self.backend)[-1]
        self.path = path
        self.metadata = metadata or read_metadata(path)
        options = self.metadata["model_options"]
        self.anchor_generator = AnchorGenerator.from_options(options)  # the saved layout, sizes, scales, ratios
        self.box_coding_std = tuple(float(value) for value in options["box_coding_std"])
        self.num_classes = len(self.metadata["class_names"])
        try:
            self.open(runtime, threads or torch.get_num_threads())
        except (ExportedModelError, ValueError):
            raise
        except Exception as error:  # the runtimes' own exception types: report the file, not the runtime
            raise ExportedModelError(f"{path}: {self.backend} cannot load the file ({_first_line(error)})") from None
        problem = interface_problem(*self.interface())
        if problem:
            raise ExportedModelError(f"{path}: not a detector's network: {problem}")

    def __call__(self, images):
        """images: float32 (B, 3, H, W), H and W multiples of 32 -> RetinaNet.forward's dict (CPU tensors)."""
        images = images.detach().to("cpu", torch.float32).contiguous()
        try:
            cls_logits, box_deltas = self.run(images.numpy())
        except Exception as error:  # the runtimes' own exception types: report the file, not the runtime
            raise ExportedModelError(f"{self.path}: {self.backend} failed on an input of shape "
                                     f"{tuple(images.shape)} ({_first_line(error)})") from None
        height, width = images.shape[-2:]
        sizes = feature_sizes_for_image(height, width, self.anchor_generator.levels)
        level_sizes = [rows * columns * self.anchor_generator.num_anchors for rows, columns in sizes]
        for name, array, width_ in (("cls_logits", cls_logits, self.num_classes), ("box_deltas", box_deltas, 4)):
            expected = (images.shape[0], sum(level_sizes), width_)
            if tuple(array.shape) != expected or array.dtype != np.float32:
                raise ExportedModelError(f"{self.path}: gave {name} of shape {tuple(array.shape)} and type "
                                         f"{array.dtype} for input {tuple(images.shape)}; expected {expected}, float32")
        return {
            "cls_logits": torch.from_numpy(np.ascontiguousarray(cls_logits)),
            "box_deltas": torch.from_numpy(np.ascontiguousarray(box_deltas)),
            "anchors": self.anchor_generator(sizes, torch.device("cpu"), image_size=(height, width)),
            "level_sizes": level_sizes,
            "box_coding_std": self.box_coding_std,
        }

    def open(self, runtime, threads):
        """Load ``self.path`` into ``runtime`` (the imported package) to run on ``threads`` CPU threads."""
        raise NotImplementedError

    def interface(self):
        """({input name: rank}, {output name: rank}) of the loaded network (rank None when unknown)."""
        raise NotImplementedError

    def run(self, images):
        """float32 (B, 3, H, W) array -> (cls_logits, box_deltas) arrays."""
        raise NotImplementedError

    # What Detector and engine.predict ask of a torch module; an exported model is always ready.
    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self


class OnnxRuntimeModel(ExportedModel):
    backend = "onnxruntime"

    def open(self, onnxruntime, threads):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])

    def interface(self):
        def ranks(values):
            return {value.name: len(value.shape) if isinstance(value.shape, list) else None for value in values}
        return ranks(self.session.get_inputs()), ranks(self.session.get_outputs())

    def run(self, images):
        return self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})


class OpenVinoModel(ExportedModel):
    backend = "openvino"

    def open(self, openvino, threads):
        limit = isa_limit()
        if limit is not None:  # seen with openvino 2026.4.1 and ONEDNN_MAX_CPU_ISA=AVX2: a segmentation fault
            raise ValueError(f"the OpenVINO backend crashes when ONEDNN_MAX_CPU_ISA ({limit}) limits its bundled "
                             "oneDNN; unset ONEDNN_MAX_CPU_ISA and DNNL_MAX_CPU_ISA for it, or use --backend "
                             "onnxruntime")
        core = openvino.Core()
        # f32: on CPUs with bfloat16 instructions OpenVINO would otherwise run in bfloat16.
        self.compiled = core.compile_model(core.read_model(self.path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})

    def interface(self):
        def ranks(ports):
            return {name: (port.get_partial_shape().rank.get_length() if port.get_partial_shape().rank.is_static
                           else None) for port in ports for name in port.get_names()}
        inputs, outputs = ranks(self.compiled.inputs), ranks(self.compiled.outputs)
        if not interface_problem(inputs, outputs):
            self.outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]
        return inputs, outputs

    def run(self, images):
        results = self.compiled({INPUT_NAME: images})
        return [results[output] for output in self.outputs]


def interface_problem(inputs, outputs):
    """What keeps a network with these inputs and outputs ({name: rank}) from being run as a
    detector exported by tools/export.py, or ''."""
    expected_outputs = {name: 3 for name in OUTPUT_NAMES}
    if list(inputs) != [INPUT_NAME] or inputs[INPUT_NAME] not in (4, None):
        return f"its inputs are {_describe(inputs)}; expected one, '{INPUT_NAME}' of rank 4"
    if any(name not in outputs or outputs[name] not in (rank, None) for name, rank in expected_outputs.items()):
        return f"its outputs are {_describe(outputs)}; expected {_describe(expected_outputs)}"
    return ""


def _describe(ranks):
    return ", ".join(f"'{name}' of rank {rank if rank is not None else '?'}" for name, rank in ranks.items()) or "none"


def _first_line(error):
    """The line of a runtime's message that says what is wrong: OpenVINO's begin with lines naming its
    own source files ("Exception from src/...", "Check '...' failed at src/..."), which are skipped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    line = telling[-1] if telling else (lines[0] if lines else "")
    return f"{type(error).__name__}: {line}"


def open_exported(path, backend="onnxruntime", metadata=None, threads=None):
    """An ExportedModel for ``path`` run by ``backend`` (``onnxruntime`` or ``openvino``)."""
    classes = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    if backend not in classes:
        raise ValueError(f"unknown backend {backend!r} for an exported model; choose one of {', '.join(classes)}")
    return classes[backend](path, metadata, threads)
