"""An ONNX file that stands alone: a uint8 image in, detections out.

``end_to_end_graph`` wraps the network that ``export.export_model`` writes (images -> raw
``cls_logits`` and ``box_deltas``) in ONNX operators doing what the project's Python does around
it, so that a program in any language with an ONNX runtime needs nothing else:

- input ``image``: uint8 (H, W, 3), RGB, any size;
- resized as ``data.transforms.resize`` sizes it (short side ``min_side``, long side at most
  ``max_side``, each side rounded to whole pixels) and as OpenCV resizes it: ``INTER_LINEAR``
  when enlarging, rebuilt bit for bit (11-bit fixed-point weights and OpenCV's rounding),
  ``INTER_AREA`` when shrinking, rebuilt as the mean over each output pixel's area in float64
  (OpenCV sums in float32: a value within a rounding error of half a level can round the other
  way, about one pixel in 500); then ImageNet normalisation and padding to a multiple of 32 on
  the bottom and right;
- the network, then the anchors of the padded size (``models.anchors``, either layout), the box
  decoding (``models.box_coding.decode``, clipped to the resized image), the best
  ``TOP_K_PER_LEVEL`` (anchor, class) scores of each level above the threshold, class-aware
  ``NonMaxSuppression`` (boxes offset per class, as torchvision's batched NMS does), the best
  ``max_detections``, and the boxes scaled back to the input's pixels and clipped to it;
- outputs ``boxes`` float32 (D, 4) x1 y1 x2 y2 in the input's pixels, ``scores`` float32 (D,),
  ``labels`` int64 (D,) contiguous class indices, ``category_ids`` int64 (D,) the dataset's ids;
- the score threshold (0.05), NMS IoU threshold (0.5) and number of detections kept (100) are
  fixed when the file is written (``tools/export.py --score_threshold --nms_iou --max_detections``)
  and recorded in its metadata (``score_threshold``, ``nms_iou``, ``max_detections``).

The class names are in the metadata (``class_names``) beside ``format`` = ``END_TO_END_FORMAT``.
The network and every step after the resize compute what ``Detector`` computes (the export's
check holds them to 1e-4 in score and 0.01 px on inputs that need no resize, and counts the
detections within 1e-4 and 0.5 px on the images as they are).
"""
import os

import numpy as np
import torch

from retinanet.data.loader import collate, sample_from_image
from retinanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, resize
from retinanet.deploy.export import (ExportCheckError, detection_difference, generated_images, prepare_export,
                                     promote_checked, raw_graph)
from retinanet.deploy.extras import import_extras
from retinanet.engine import DeviceConfig, detect_batch
from retinanet.deploy.metadata import END_TO_END_FORMAT, decode as decode_metadata, set_metadata
from retinanet.deploy.onnx_graph import GraphBuilder, area_resize, linear_resize
from retinanet.models.anchors import AnchorGenerator
from retinanet.models.box_coding import MAX_LOG_SCALE
from retinanet.models.postprocess import PostProcessor
from retinanet.util.io import write_bytes

IMAGE_INPUT = "image"
END_TO_END_OUTPUTS = ("boxes", "scores", "labels", "category_ids")
DECODING_DEFAULTS = {"score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 100}
TOP_K_PER_LEVEL = 1000
PAD_MULTIPLE = 32


def end_to_end_graph(raw_model, metadata, decoding=None, raw_input="images", raw_outputs=("cls_logits", "box_deltas")):
    """The end-to-end ``onnx.ModelProto`` around ``raw_model`` (the raw export's ModelProto, changed
    in place); ``metadata`` the raw export's, decoded (``metadata.decode``); ``decoding``: any of
    DECODING_DEFAULTS' keys."""
    decoding = dict(DECODING_DEFAULTS, **(decoding or {}))
    onnx, = import_extras("export", "exporting to ONNX")
    TensorProto = onnx.TensorProto
    b = GraphBuilder(onnx)
    graph = raw_model.graph
    options = metadata["model_options"]
    min_side, max_side = int(metadata["min_side"]), int(metadata["max_side"])
    num_classes = len(metadata["class_names"])

    # ----- the resize, normalisation and padding of data.transforms and data.loader.collate -----
    shape = b.op("Shape", IMAGE_INPUT)
    height, width = (b.op("Gather", shape, b.const(axis, np.int64)) for axis in (0, 1))
    height_d, width_d = (b.op("Cast", side, to=TensorProto.DOUBLE) for side in (height, width))
    scale = b.op("Min", b.op("Div", b.const(float(min_side), np.float64), b.op("Min", height_d, width_d)),
                 b.op("Div", b.const(float(max_side), np.float64), b.op("Max", height_d, width_d)))
    one_d = b.const(1.0, np.float64)
    new_height, new_width = (b.op("Cast", b.op("Max", b.op("Round", b.op("Mul", side, scale)), one_d), to=TensorProto.INT64)
                             for side in (height_d, width_d))
    pixels = b.op("Unsqueeze", b.op("Transpose", b.op("Cast", IMAGE_INPUT, to=TensorProto.FLOAT), perm=[2, 0, 1]),
                  b.i64(0))
    shrink = b.branch(lambda: b.op("Cast", area_resize(b, b.op("Cast", pixels, to=TensorProto.DOUBLE), (height, width),
                                                       (new_height, new_width)), to=TensorProto.FLOAT), TensorProto.FLOAT)
    enlarge = b.branch(lambda: b.op("Cast", linear_resize(b, b.op("Cast", pixels, to=TensorProto.INT64), (height, width),
                                                          (new_height, new_width)), to=TensorProto.FLOAT),
                       TensorProto.FLOAT)
    # OpenCV's INTER_AREA when shrinking, INTER_LINEAR otherwise; only the one needed runs
    resized = b.op("If", b.op("Less", scale, one_d), then_branch=shrink, else_branch=enlarge)
    resized = b.op("Clip", b.op("Round", resized), b.f32(0.0), b.f32(255.0))  # whole levels, as a uint8 image
    mean = b.const(np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1), np.float32, "mean")
    inverse_std = b.const((np.float32(1.0) / IMAGENET_STD).reshape(1, 3, 1, 1), np.float32, "inverse_std")
    normalised = b.op("Mul", b.op("Sub", b.op("Mul", resized, b.f32(np.float32(1 / 255.0))), mean), inverse_std)
    multiple = b.const(PAD_MULTIPLE, np.int64)
    pad_bottom, pad_right = (b.op("Mod", b.op("Sub", multiple, b.op("Mod", side, multiple)), multiple)
                             for side in (new_height, new_width))
    pads = b.op("Concat", b.i64(0, 0, 0, 0, 0, 0), b.op("Unsqueeze", pad_bottom, b.i64(0)),
                b.op("Unsqueeze", pad_right, b.i64(0)), axis=0)
    b.op("Pad", normalised, pads, b.f32(0.0), mode="constant", output_names=[raw_input])
    padded_height = b.op("Add", new_height, pad_bottom)
    padded_width = b.op("Add", new_width, pad_right)

    # ----- anchors of the padded size (models.anchors.AnchorGenerator) -----
    generator = AnchorGenerator.from_options(options)
    level_anchors, level_counts = [], []
    for cell, stride in zip(generator.cells, generator.strides):
        step = b.const(stride, np.int64)
        rows, columns = (b.op("Div", b.op("Add", side, b.const(stride - 1, np.int64)), step)
                         for side in (padded_height, padded_width))
        if generator.offset == 0.0:  # torchvision's placement: the padded side // the grid's
            stride_y, stride_x = b.op("Div", padded_height, rows), b.op("Div", padded_width, columns)
        else:
            stride_y = stride_x = step
        offset = b.f32(generator.offset)
        ys, xs = (b.op("Mul", b.op("Add", b.op("Cast", b.op("Range", b.const(0, np.int64), count, b.const(1, np.int64)),
                                                 to=TensorProto.FLOAT), offset),
                       b.op("Cast", stride_, to=TensorProto.FLOAT))
                  for count, stride_ in ((rows, stride_y), (columns, stride_x)))
        grid = b.op("Concat", b.op("Unsqueeze", rows, b.i64(0)), b.op("Unsqueeze", columns, b.i64(0)), axis=0)
        grid_y = b.op("Reshape", b.op("Expand", b.op("Unsqueeze", ys, b.i64(1)), grid), b.i64(-1, 1))
        grid_x = b.op("Reshape", b.op("Expand", b.op("Unsqueeze", xs, b.i64(0)), grid), b.i64(-1, 1))
        shifts = b.op("Unsqueeze", b.op("Concat", grid_x, grid_y, grid_x, grid_y, axis=1), b.i64(1))
        cells = b.const(cell.numpy()[None], np.float32, "cells")
        level_anchors.append(b.op("Reshape", b.op("Add", shifts, cells), b.i64(-1, 4)))
        level_counts.append(b.op("Mul", b.op("Mul", rows, columns), b.const(generator.num_anchors, np.int64)))
    anchors = b.op("Concat", *level_anchors, axis=0)

    # ----- the best scores of each level, decoded boxes, class-aware NMS (models.postprocess) -----
    scores_all = b.op("Sigmoid", b.op("Squeeze", raw_outputs[0], b.i64(0)))  # (N, K)
    deltas_all = b.op("Squeeze", raw_outputs[1], b.i64(0))  # (N, 4)
    classes = b.const(num_classes, np.int64)
    start = b.const(0, np.int64)
    level_scores, level_indices = [], []
    for count in level_counts:
        end = b.op("Add", start, count)
        flat = b.op("Reshape", b.op("Slice", scores_all, b.op("Unsqueeze", start, b.i64(0)),
                                    b.op("Unsqueeze", end, b.i64(0)), b.i64(0)), b.i64(-1))
        k = b.op("Min", b.op("Shape", flat), b.i64(TOP_K_PER_LEVEL))
        values, indices = b.op("TopK", flat, k, outputs=2, axis=0, largest=1, sorted=1)
        level_scores.append(values)
        level_indices.append(b.op("Add", indices, b.op("Mul", start, classes)))  # into the flattened (N * K)
        start = end
    candidate_scores = b.op("Concat", *level_scores, axis=0)
    candidate_indices = b.op("Concat", *level_indices, axis=0)
    above = b.op("Reshape", b.op("NonZero", b.op("Greater", candidate_scores, b.f32(decoding["score_threshold"]))), b.i64(-1))
    scores = b.op("Gather", candidate_scores, above)
    flat_indices = b.op("Gather", candidate_indices, above)
    anchor_index, labels = b.op("Div", flat_indices, classes), b.op("Mod", flat_indices, classes)
    boxes = _decode(b, b.op("Gather", anchors, anchor_index), b.op("Gather", deltas_all, anchor_index),
                    options["box_coding_std"])
    boxes = _clip(b, boxes, new_height, new_width)
    biggest = b.op("ReduceMax", b.op("Concat", b.op("Reshape", boxes, b.i64(-1)), b.f32([0.0]), axis=0), keepdims=0)
    offsets = b.op("Mul", b.op("Cast", labels, to=TensorProto.FLOAT), b.op("Add", biggest, b.f32(1.0)))
    separated = b.op("Add", boxes, b.op("Unsqueeze", offsets, b.i64(1)))
    selected = b.op("NonMaxSuppression", b.op("Unsqueeze", separated, b.i64(0)),
                    b.op("Reshape", scores, b.i64(1, 1, -1)), b.op("Shape", scores),
                    b.f32([decoding["nms_iou"]]), center_point_box=0)
    kept = b.op("Reshape", b.op("Gather", selected, b.const(2, np.int64), axis=1), b.i64(-1))
    limit = b.op("Min", b.op("Shape", kept), b.i64(int(decoding["max_detections"])))
    kept = b.op("Slice", kept, b.i64(0), limit, b.i64(0))

    # ----- back to the input's pixels -----
    scale_f = b.op("Cast", scale, to=TensorProto.FLOAT)
    final_boxes = _clip(b, b.op("Div", b.op("Gather", boxes, kept), scale_f), height, width)
    b.op("Identity", final_boxes, output_names=["boxes"])
    b.op("Identity", b.op("Gather", scores, kept), output_names=["scores"])
    final_labels = b.op("Gather", labels, kept)
    b.op("Identity", final_labels, output_names=["labels"])
    b.op("Gather", b.const(metadata["category_ids"], np.int64, "category_ids"), final_labels,
         output_names=["category_ids"])

    # ----- the graph's inputs and outputs -----
    helper = onnx.helper
    raw_inputs = [value for value in graph.input if value.name == raw_input]
    for value in raw_inputs:
        graph.input.remove(value)
    for value in list(graph.output):
        graph.output.remove(value)
    graph.input.append(helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["height", "width", 3]))
    graph.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["detections", 4]),
                         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["detections"]),
                         helper.make_tensor_value_info("labels", TensorProto.INT64, ["detections"]),
                         helper.make_tensor_value_info("category_ids", TensorProto.INT64, ["detections"])])
    network = list(graph.node)
    del graph.node[:]
    split = _first_after_pad(b.nodes, raw_input)  # the preprocessing, the network, then what follows it
    graph.node.extend(b.nodes[:split] + network + b.nodes[split:])
    graph.initializer.extend(b.initializers)
    return raw_model


def _first_after_pad(nodes, raw_input):
    """Index of the first node after the one producing the network's input (nodes are in order)."""
    return next(index for index, node in enumerate(nodes) if raw_input in node.output) + 1


def _decode(b, anchors, deltas, std):
    """models.box_coding.decode in ONNX operators: anchors and deltas (P, 4) -> boxes (P, 4)."""
    deltas = b.op("Mul", deltas, b.const(np.asarray(std, np.float32), np.float32, "std"))
    column = [lambda tensor, i=i: b.op("Slice", tensor, b.i64(i), b.i64(i + 1), b.i64(1)) for i in range(4)]
    widths = b.op("Sub", column[2](anchors), column[0](anchors))
    heights = b.op("Sub", column[3](anchors), column[1](anchors))
    half = b.f32(0.5)
    centre_x = b.op("Add", column[0](anchors), b.op("Mul", half, widths))
    centre_y = b.op("Add", column[1](anchors), b.op("Mul", half, heights))
    centre_x = b.op("Add", centre_x, b.op("Mul", column[0](deltas), widths))
    centre_y = b.op("Add", centre_y, b.op("Mul", column[1](deltas), heights))
    limit = b.f32(np.float32(MAX_LOG_SCALE))
    half_w = b.op("Mul", b.op("Mul", half, widths), b.op("Exp", b.op("Min", column[2](deltas), limit)))
    half_h = b.op("Mul", b.op("Mul", half, heights), b.op("Exp", b.op("Min", column[3](deltas), limit)))
    return b.op("Concat", b.op("Sub", centre_x, half_w), b.op("Sub", centre_y, half_h),
                b.op("Add", centre_x, half_w), b.op("Add", centre_y, half_h), axis=1)


def _clip(b, boxes, height, width):
    """models.box_coding.clip_boxes: x in [0, width], y in [0, height]; height, width int64 scalars."""
    limits = b.op("Cast", b.op("Concat", *[b.op("Unsqueeze", side, b.i64(0)) for side in (width, height, width, height)],
                              axis=0), to=b.onnx.TensorProto.FLOAT)
    return b.op("Min", b.op("Max", boxes, b.f32(0.0)), limits)


# ----- writing and checking the file -------------------------------------------------------------
MATCH_SCORE = 1e-4
MATCH_BOX_PX = 0.5


class EndToEndSession:
    """An end-to-end file opened with ONNX Runtime: ``detect(image)`` -> {boxes, scores, labels,
    category_ids} as numpy arrays, for an (H, W, 3) uint8 RGB image."""

    def __init__(self, path, threads=None):
        ort, = import_extras("end_to_end", f"running {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def detect(self, image):
        feeds = {IMAGE_INPUT: np.ascontiguousarray(image, dtype=np.uint8)}
        return dict(zip(END_TO_END_OUTPUTS, self.session.run(list(END_TO_END_OUTPUTS), feeds)))


def matched_detections(expected, got, score_tolerance=MATCH_SCORE, box_tolerance=MATCH_BOX_PX):
    """How many of ``expected``'s detections (numpy boxes, scores, labels) ``got`` has too: the same
    label, the score within ``score_tolerance`` and every corner within ``box_tolerance`` px, each
    detection of ``got`` used once."""
    used = np.zeros(len(got["scores"]), dtype=bool)
    matched = 0
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        close = (~used & (got["labels"] == label) & (np.abs(got["scores"] - score) <= score_tolerance)
                 & (np.abs(got["boxes"] - box).max(axis=1, initial=0.0) <= box_tolerance))
        if close.any():
            used[np.flatnonzero(close)[0]] = True
            matched += 1
    return matched


def export_end_to_end(checkpoint_path, output_path, check_images=None, decoding=None, log=print):
    """Export a train.py checkpoint as an end-to-end file at ``output_path`` and check it against
    PyTorch (``check_end_to_end``); written as ``*.unchecked.onnx`` and renamed once the check
    passes. decoding: any of DECODING_DEFAULTS' keys. Returns the check's dict; raises
    CheckpointError, MissingExtraError or ExportCheckError."""
    import_extras("onnxruntime", "exporting and checking an end-to-end file")
    decoding = dict(DECODING_DEFAULTS, **(decoding or {}))
    model, metadata = prepare_export(checkpoint_path)
    decoded = decode_metadata(metadata, checkpoint_path)
    proto = end_to_end_graph(raw_graph(model), decoded, decoding)
    set_metadata(proto, dict(metadata, format=END_TO_END_FORMAT, **{key: str(value) for key, value in decoding.items()}))
    unchecked = os.path.splitext(output_path)[0] + ".unchecked.onnx"
    write_bytes(unchecked, proto.SerializeToString())
    images = check_images if check_images is not None else generated_images()
    report = check_end_to_end(model, decoded, EndToEndSession(unchecked), images, unchecked, decoding)
    promote_checked(unchecked, output_path)
    log(f"exported {checkpoint_path} -> {output_path} (end to end: a uint8 image in, detections out; ONNX opset "
        f"{proto.opset_import[0].version}); {describe_end_to_end_check(report)}")
    return report


def check_end_to_end(model, metadata, session, images, path, decoding=None):
    """Run ``session`` and PyTorch (``model`` with the project's pre- and post-processing) on each
    image twice: resized by OpenCV first, so that the file resizes nothing, where every detection
    must be the same (scores within 1e-4, boxes within 0.01 px: the network, anchors, decoding and
    NMS are checked), and as it is, where the file resizes it (a shrunk pixel can differ by a level
    from OpenCV's) and the detections within 1e-4 in score and 0.5 px are counted.
    Returns {'images', 'exact_detections', 'detections', 'matched'}; raises ExportCheckError."""
    min_side, max_side = metadata["min_side"], metadata["max_side"]
    decoding = dict(DECODING_DEFAULTS, **(decoding or {}))
    transform = EvalTransform(min_side, max_side)
    postprocessor = PostProcessor(decoding["score_threshold"], decoding["nms_iou"],
                                  max_detections=decoding["max_detections"])
    report = {"images": len(images), "exact_detections": 0, "detections": 0, "matched": 0}
    for index, image in enumerate(images):
        prepared = resize(image, np.zeros((0, 4), np.float32), min_side, max_side)[0]
        for source, exact in ((prepared, True), (image, False)):
            want = _torch_detections(model, source, transform, postprocessor)
            got = session.detect(source)
            if exact:
                problem = detection_difference({key: torch.as_tensor(value) for key, value in want.items()},
                                               {key: torch.from_numpy(got[key]) for key in want})
                if problem:
                    raise ExportCheckError(f"{path}: detections differ from PyTorch's on check image {index + 1} "
                                           f"({source.shape[1]}x{source.shape[0]}, which needs no resize): {problem}")
                report["exact_detections"] += len(want["scores"])
            else:
                report["detections"] += len(want["scores"])
                report["matched"] += matched_detections(want, got)
    return report


def describe_end_to_end_check(report):
    return (f"ONNX Runtime gives PyTorch's {report['exact_detections']} detections on the {report['images']} check "
            f"images at the network's input size; on the images as they are (resized in the file) "
            f"{report['matched']} of {report['detections']} detections within {MATCH_SCORE:g} in score and "
            f"{MATCH_BOX_PX:g} px")


def _torch_detections(model, image, transform, postprocessor):
    """What Detector.predict gives for one image, in float32 on the CPU, as numpy arrays."""
    batch, targets, _ = collate([sample_from_image(image, transform, image_id=1)])
    with torch.no_grad():
        [detection] = detect_batch(model, batch, targets, postprocessor=postprocessor, device_config=DeviceConfig())
    return {key: value.numpy() for key, value in detection.items()}
