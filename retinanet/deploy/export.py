"""Exporting a checkpoint's network to ONNX and checking the file against PyTorch.

The file holds the network only (``RawOutputs``): input ``images`` float32 (B, 3, H, W), outputs
``cls_logits`` (B, N, K) and ``box_deltas`` (B, N, 4), with B, H and W dynamic (H and W multiples
of 32, as ``data.loader.collate`` pads them). Its metadata is described in ``metadata.py``.

``check_against_torch`` runs sample images through both, batched and one at a time (so that
dynamic batch and image sizes are exercised): raw outputs must agree within RAW_TOLERANCE of their
scale (``raw_difference``) and
the decoded detections must be the same (count, labels and order; scores within 1e-4, boxes
within 0.01 px, the precision of a COCO results file).
"""
import io
import os
import warnings

import torch
from torch import nn

from retinanet.data.image_io import load_image_rgb
from retinanet.data.loader import collate, list_images, sample_from_image
from retinanet.data.synthetic import generate_image
from retinanet.data.transforms import DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, EvalTransform, image_size_problem
from retinanet.deploy.backends import INPUT_NAME, OUTPUT_NAMES, open_exported
from retinanet.deploy.extras import import_extras
from retinanet.deploy.metadata import build_metadata, set_metadata
from retinanet.models.postprocess import PostProcessor
from retinanet.models.retinanet import model_options
from retinanet.models.checkpoint import (CheckpointError, check_model_description, load_checkpoint,
                                       model_from_checkpoint)
from retinanet.util.io import WriteError, file_sha256, write_bytes

# The TorchScript exporter: on a ResNet-18 test model it exports in 0.7 s where the torch.export
# based one takes 17 s (230 s on a cold start), and its graph quantises (the other's shares
# GroupNorm constants in a way onnxruntime.quantization refuses). 20 is the newest opset it writes.
OPSET = 20
RAW_TOLERANCE = 1e-4
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE_PX = 0.01


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce PyTorch's outputs."""


class RawOutputs(nn.Module):
    """A RetinaNet without what is rebuilt outside the graph: images -> (cls_logits, box_deltas)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        outputs = self.model(images)
        return outputs["cls_logits"], outputs["box_deltas"]


def raw_graph(model, opset=OPSET):
    """The ``onnx.ModelProto`` of ``model`` (a RetinaNet, on the CPU): images -> raw outputs."""
    onnx, = import_extras("export", "exporting to ONNX")
    graph = io.BytesIO()
    example = torch.zeros(2, 3, 96, 128)  # any multiple-of-32 size: the axes are dynamic
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
               **{name: {0: "batch", 1: "anchors"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        # The exporter is chosen on purpose (see OPSET), so its deprecation notices would only alarm;
        # tracing warns about GroupNorm's batch-size check, which the graph does not need, and
        # every export is checked against PyTorch at other sizes.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(RawOutputs(model).eval(), (example,), graph, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)
    return onnx.load_from_string(graph.getvalue())


def export_model(model, path, metadata, opset=OPSET):
    """Write ``model`` (a RetinaNet, on the CPU) to ``path`` with ``metadata`` ({key: string}), atomically."""
    proto = raw_graph(model, opset)
    set_metadata(proto, metadata)
    write_bytes(path, proto.SerializeToString())  # raises WriteError naming the file, and leaves nothing behind


def prepare_export(checkpoint_path):
    """(the model of a train.py checkpoint in float32 on the CPU, the metadata of its export)."""
    checkpoint = load_checkpoint(checkpoint_path)
    args = check_model_description(checkpoint, checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path).eval()
    problem = image_size_problem(args.get("min_side", DEFAULT_MIN_SIDE), args.get("max_side", DEFAULT_MAX_SIDE))
    if problem:
        raise CheckpointError(f"{checkpoint_path}: the saved {problem}")
    names = checkpoint["class_names"]
    metadata = build_metadata(names, checkpoint.get("category_ids") or range(1, len(names) + 1),
                              args.get("min_side", DEFAULT_MIN_SIDE), args.get("max_side", DEFAULT_MAX_SIDE),
                              model_options(args), file_sha256(checkpoint_path))
    return model, metadata


def export_checkpoint(checkpoint_path, output_path, check_images=None, check_backend="onnxruntime", log=print):
    """Export a train.py checkpoint to ``output_path`` and check it with ``check_backend``.

    The file is written as ``*.unchecked.onnx`` and renamed only once the check passes, so that a
    failed export is never taken for a good one (it is left there for inspection).
    check_images: HxWx3 uint8 RGB arrays (default: generated_images()). Returns the check's dict
    (``check_against_torch``). Raises CheckpointError, MissingExtraError or ExportCheckError.
    """
    import_extras(check_backend, f"exporting and checking with {check_backend}")
    model, metadata = prepare_export(checkpoint_path)
    unchecked = os.path.splitext(output_path)[0] + ".unchecked.onnx"
    export_model(model, unchecked, metadata)
    transform = EvalTransform(int(metadata["min_side"]), int(metadata["max_side"]))
    images = check_images if check_images is not None else generated_images()
    report = check_against_torch(model, open_exported(unchecked, check_backend), images, transform)
    promote_checked(unchecked, output_path)
    log(f"exported {checkpoint_path} -> {output_path} (ONNX opset {OPSET}); {describe_check(report, check_backend)}")
    return report


def promote_checked(unchecked, output_path):
    """Rename a checked ``*.unchecked.onnx`` to ``output_path``; WriteError naming it when that fails."""
    try:
        os.replace(unchecked, output_path)
    except OSError as error:
        os.remove(unchecked)
        raise WriteError.from_os_error(output_path, error) from None


def generated_images(count=2):
    """``count`` images of the built-in synthetic style (HxWx3 uint8), different sizes, no files needed."""
    return [generate_image(seed=0, set_index=7, image_index=index, min_size=160, max_size=320)[0]
            for index in range(count)]


def check_against_torch(model, exported, images, transform, postprocessor=None):
    """Compare ``exported`` (an ExportedModel) with ``model`` on ``images``, batched and one by one.

    Returns {'images', 'max_raw_difference', 'detections'}; raises ExportCheckError naming the
    first disagreement.
    """
    postprocessor = postprocessor or PostProcessor()
    samples = [sample_from_image(image, transform, image_id=index + 1) for index, image in enumerate(images)]
    worst, detections = 0.0, 0
    for batch, targets, _ in [collate(samples)] + [collate([sample]) for sample in samples]:
        with torch.no_grad():
            expected = model(batch)
        got = exported(batch)
        for name in OUTPUT_NAMES:
            difference = raw_difference(expected[name], got[name])
            worst = max(worst, difference)
            if not difference <= RAW_TOLERANCE:
                raise ExportCheckError(f"{exported.path}: {name} differs from PyTorch's by {difference:.3g} of its "
                                       f"scale (limit {RAW_TOLERANCE:g}) on a batch of shape {tuple(batch.shape)}")
        sizes, scales = [t["size"] for t in targets], [t["scale"] for t in targets]
        for index, (want, have) in enumerate(zip(postprocessor(expected, sizes, scales),
                                                 postprocessor(got, sizes, scales))):
            problem = detection_difference(want, have)
            if problem:
                raise ExportCheckError(f"{exported.path}: detections differ from PyTorch's on image "
                                       f"{targets[index]['image_id']} of a batch of shape {tuple(batch.shape)}: "
                                       f"{problem}")
            detections += len(want["scores"])
    return {"images": len(images), "max_raw_difference": worst, "detections": detections}


def raw_difference(expected, got):
    """The largest absolute difference, relative to the output's scale (its largest magnitude, at
    least 1). Relative because GroupNorm over a nearly constant group divides by a tiny deviation:
    PyTorch's own float32 result then differs from float64 by up to 2e-4 on logits of 5 (seen on
    a ResNet-18 with GroupNorm after one epoch), while ONNX Runtime stays within 6e-6 of float64."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return float((expected - got).abs().max()) / scale if expected.numel() else 0.0


def detection_difference(expected, got):
    """'' when two images' detections are the same, else a sentence saying how they differ."""
    if len(expected["scores"]) != len(got["scores"]):
        return f"{len(got['scores'])} detections instead of {len(expected['scores'])}"
    if not torch.equal(expected["labels"], got["labels"]):
        return "labels differ"
    score_gap = float((expected["scores"] - got["scores"]).abs().max()) if len(got["scores"]) else 0.0
    box_gap = float((expected["boxes"] - got["boxes"]).abs().max()) if len(got["scores"]) else 0.0
    if score_gap > SCORE_TOLERANCE or box_gap > BOX_TOLERANCE_PX:
        return f"scores differ by up to {score_gap:.3g}, boxes by up to {box_gap:.3g} px"
    return ""


def describe_check(report, backend):
    runtime = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}[backend]
    return (f"{runtime} matches PyTorch on {report['images']} images, batched and one by one: raw outputs within "
            f"{report['max_raw_difference']:.2g} of their scale (limit {RAW_TOLERANCE:g}), the same {report['detections']} detections")


def read_images_for_check(paths, limit):
    """The first ``limit`` image files of ``paths`` (folders expanded) as RGB arrays; ValueError or
    ImageReadError naming a bad path."""
    return [load_image_rgb(path) for path in list_images(paths)[:limit]]
