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
        self.open(runtime, threads or torch.get_num_threads())

    def __call__(self, images):
        """images: float32 (B, 3, H, W), H and W multiples of 32 -> RetinaNet.forward's dict (CPU tensors)."""
        images = images.detach().to("cpu", torch.float32).contiguous()
        cls_logits, box_deltas = self.run(images.numpy())
        height, width = images.shape[-2:]
        sizes = feature_sizes_for_image(height, width, self.anchor_generator.levels)
        level_sizes = [rows * columns * self.anchor_generator.num_anchors for rows, columns in sizes]
        expected = (images.shape[0], sum(level_sizes), self.num_classes)
        if cls_logits.shape != expected:
            raise ExportedModelError(f"{self.path}: gave cls_logits of shape {cls_logits.shape} for input "
                                     f"{tuple(images.shape)}; expected {expected}")
        return {
            "cls_logits": torch.from_numpy(np.ascontiguousarray(cls_logits)),
            "box_deltas": torch.from_numpy(np.ascontiguousarray(box_deltas)),
            "anchors": self.anchor_generator(sizes, torch.device("cpu")),
            "level_sizes": level_sizes,
            "box_coding_std": self.box_coding_std,
        }

    def open(self, runtime, threads):
        """Load ``self.path`` into ``runtime`` (the imported package) to run on ``threads`` CPU threads."""
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
        self.outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]

    def run(self, images):
        results = self.compiled({INPUT_NAME: images})
        return [results[output] for output in self.outputs]


def open_exported(path, backend="onnxruntime", metadata=None, threads=None):
    """An ExportedModel for ``path`` run by ``backend`` (``onnxruntime`` or ``openvino``)."""
    classes = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    if backend not in classes:
        raise ValueError(f"unknown backend {backend!r} for an exported model; choose one of {', '.join(classes)}")
    return classes[backend](path, metadata, threads)
