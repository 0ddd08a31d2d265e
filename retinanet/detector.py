"""Detections in your own code: a trained checkpoint behind one small class.

    from retinanet import Detector
    detector = Detector.from_checkpoint("output/<run>/model_final.pt", device="auto")
    results = detector.predict("photos/")   # a folder, pattern, path, array, PIL image, tensor or a list
    results[0].boxes, results[0].scores, results[0].class_names; results[0].save("first.png")
    detector.evaluate("data/val.json", image_dir="data/images/val")["stats"]["AP"]

``predict`` runs the same code as ``test.py`` and ``vis.py`` (``engine.detect_batch``): the
checkpoint's own image sizes, the same resize, normalisation, padding and decoding.

``backend="onnxruntime"`` or ``"openvino"`` runs the network exported to ONNX instead (the
optional ``deploy`` packages; ``retinanet/deploy/``), and ``int8=Calibration(...)`` its int8 version:

    from retinanet.deploy.quantize import Calibration
    detector = Detector.from_checkpoint("model_final.pt", backend="onnxruntime", int8=Calibration("data"))
"""
import os

import numpy as np
import torch

from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import load_image_rgb
from retinanet.data.loader import build_loader, collate, sample_from_image
from retinanet.data.transforms import DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, EvalTransform, image_size_problem
from retinanet.deploy.cache import is_exported_file, load_exported
from retinanet.engine import DeviceConfig, detect_batch, evaluate, predict
from retinanet.evaluation.analysis import find_best_threshold
from retinanet.models.precision import check_input_sizes, settle_precision
from retinanet.models.postprocess import PostProcessor
from retinanet.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from retinanet.results import Detections, expand_inputs
from retinanet.util.device import resolve_device

DEFAULT_SCORE_THRESHOLD = 0.05  # predict's threshold when the run has no best-F1 threshold


class Detector:
    """A RetinaNet in evaluation mode with its class names and image sizes.

    model: a ``RetinaNet``; class_names: one name per contiguous label; category_ids: the COCO
    category id of each label (default 1..K); min_side / max_side: the resize used in training;
    device_config: an ``engine.DeviceConfig`` (device, autocast dtype, memory format).
    """

    def __init__(self, model, class_names, category_ids=None, *, min_side=DEFAULT_MIN_SIDE,
                 max_side=DEFAULT_MAX_SIDE, device_config=None):
        self.device_config = device_config or DeviceConfig()
        dtype = self.device_config.amp_dtype
        self.precision = "float32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast (not checked)"
        self.model = model.to(self.device_config.device).eval()
        if self.device_config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids else list(range(1, len(self.class_names) + 1))
        self.transform = EvalTransform(min_side, max_side)
        # predict's default threshold; from_checkpoint takes the run's best-F1 threshold when it has one
        self.score_threshold, self.threshold_source = DEFAULT_SCORE_THRESHOLD, None

    @classmethod
    def from_checkpoint(cls, path, device="auto", *, amp="auto", channels_last=False, min_side=None, max_side=None,
                        expected_depth=None, backend=None, int8=None, log=print):
        """Rebuild the model from a checkpoint written by train.py (no model flags needed).

        device: "auto", "cpu", "cuda" or a torch.device. amp: "auto" (bfloat16 where the hardware
        runs it natively, as the scripts), "on" or "off" (float32). min_side / max_side: override the checkpoint's training sizes.
        expected_depth: when given, refuse a checkpoint of another ResNet depth.
        backend: "torch", or "onnxruntime" / "openvino" (see ``from_exported``); None: onnxruntime
        for a ``.onnx`` path or with int8, else torch. int8: a ``deploy.quantize.Calibration``
        (exported backends only).
        Raises CheckpointError for a missing, unsafe, damaged or mismatching file, ValueError for
        settings an exported backend cannot honour.
        """
        backend = backend or ("onnxruntime" if is_exported_file(path) or int8 is not None else "torch")
        if backend != "torch":
            _check_exported_settings(backend, device, amp, channels_last)
            return cls.from_exported(path, backend, int8=int8, min_side=min_side, max_side=max_side,
                                     expected_depth=expected_depth, log=log)
        if is_exported_file(path) or int8 is not None:
            raise ValueError(f"{path} is an exported file: use backend onnxruntime or openvino" if int8 is None
                             else "int8 runs an exported network: use backend onnxruntime or openvino")
        checkpoint = load_checkpoint(path)
        saved = checkpoint.get("args", {})
        if expected_depth is not None and saved.get("depth") != expected_depth:
            raise CheckpointError(f"--depth {expected_depth} disagrees with {path}, which holds a ResNet-"
                                  f"{saved.get('depth')} model; leave --depth out to use the checkpoint's")
        model = model_from_checkpoint(checkpoint, path)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        min_side = min_side or saved.get("min_side", DEFAULT_MIN_SIDE)
        max_side = max_side or saved.get("max_side", DEFAULT_MAX_SIDE)
        problem = image_size_problem(min_side, max_side)  # the flags' values are checked already: a saved one
        if problem:
            raise CheckpointError(f"{path}: the saved {problem}; give --min_side and --max_side")
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        amp_dtype, precision, _ = settle_precision(model, device, amp, check_input_sizes(min_side, max_side),
                                                   training=False, channels_last=channels_last)
        detector = cls(model, checkpoint["class_names"], checkpoint.get("category_ids"), min_side=min_side,
                       max_side=max_side, device_config=DeviceConfig(device, amp_dtype, channels_last))
        detector.checkpoint_args = saved
        detector.precision = precision
        detector.use_best_threshold(path, saved.get("val_set") or "val")
        return detector

    def use_best_threshold(self, path, set_name):
        """Make the best-F1 threshold of ``{set_name}_analysis.json`` beside ``path`` (written by the
        run's evaluation or test.py, as vis.py uses it) predict's default; nothing when there is none."""
        try:
            found = find_best_threshold(set_name, [os.path.dirname(os.path.abspath(path))])
        except ValueError:  # an unreadable analysis: keep the plain default, as without one
            found = None
        if found is not None:
            self.score_threshold = found[0]
            self.threshold_source = f"best F1 on {set_name}"

    @classmethod
    def from_exported(cls, path, backend="onnxruntime", *, int8=None, min_side=None, max_side=None,
                      expected_depth=None, log=print):
        """Run the network through ONNX Runtime or OpenVINO on the CPU, in float32 or int8.

        path: a ``.onnx`` file written by tools/export.py, or a checkpoint, exported on first use to
        the ``.onnx`` file beside it (``deploy.cache``). int8: a ``deploy.quantize.Calibration``:
        quantise on first use (``.int8.onnx`` beside the float file) and run that. Class names, image
        sizes and the decoding options come from the file's metadata; decoding is the PyTorch path's.
        Raises MissingExtraError when the optional packages are not installed.
        """
        model, metadata = load_exported(path, backend, int8=int8, min_side=min_side, max_side=max_side, log=log)
        options = metadata["model_options"]
        if expected_depth is not None and options.get("depth") != expected_depth:
            raise CheckpointError(f"--depth {expected_depth} disagrees with {path}, which holds a ResNet-"
                                  f"{options.get('depth')} model; leave --depth out to use the file's")
        detector = cls(model, metadata["class_names"], metadata["category_ids"],
                       min_side=min_side or metadata["min_side"], max_side=max_side or metadata["max_side"])
        detector.checkpoint_args = options
        detector.precision = f"{'int8' if int8 is not None else 'float32'} ({backend})"
        detector.use_best_threshold(path, "val")
        return detector

    def predict(self, images, *, score_threshold=None, nms_iou=0.5, max_detections=100, batch_size=4):
        """Detect objects in one image or many.

        images: a path, an HxWx3 uint8 RGB array (HxW grey and HxWx4 RGBA are converted), a PIL
            image or a CxHxW tensor (uint8, or float in [0, 1]); or a folder, a glob pattern
            ("photos/*.jpg") or a list or tuple of the above.
        Returns, per image, ``results.Detections``: a dict of ``boxes`` float32 (D, 4) xyxy in the
        original image's pixels, ``scores`` float32 (D,), ``labels`` int64 (D,) contiguous,
        ``class_names`` (D names) and ``category_ids`` int64 (D,), highest score first, with
        ``plot()``, ``save(path)`` and ``to_coco(image_id)``. One image gives one, a folder, a
        pattern or a list a list. score_threshold: by default ``self.score_threshold``: the best-F1
        threshold of the run's validation analysis when ``from_checkpoint`` found one beside the
        checkpoint (the results' repr says so), else 0.05.
        """
        source_of_threshold = self.threshold_source if score_threshold is None else None
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        inputs, single = expand_inputs(images)
        postprocessor = PostProcessor(score_threshold, nms_iou, max_detections=max_detections)
        outputs = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            arrays = [to_rgb_array(item) for item in chunk]
            samples = [sample_from_image(array, self.transform, image_id=start + offset)
                       for offset, array in enumerate(arrays)]
            batch, targets, _ = collate(samples)
            detections = detect_batch(self.model, batch, targets, postprocessor=postprocessor,
                                      device_config=self.device_config)
            for item, array, detection in zip(chunk, arrays, detections):
                source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                outputs.append(Detections(detection["boxes"].float().cpu().numpy(),
                                          detection["scores"].float().cpu().numpy(),
                                          detection["labels"].cpu().numpy(), self.class_names, self.category_ids,
                                          image=array, source=source, score_threshold=score_threshold,
                                          threshold_source=source_of_threshold))
        return outputs[0] if single else outputs

    def predict_loader(self, loader, postprocessor):
        """COCO results for every image of a loader (``data.loader.build_loader``), with this
        detector's category ids."""
        return predict(self.model, loader, postprocessor=postprocessor, device_config=self.device_config,
                       label_to_category_id=self.category_ids)

    def evaluate(self, source, postprocessor=None, evaluator="faster", stats=None, *, image_dir=None, batch_size=4):
        """Evaluate on a COCO set. ``source``: an annotation file (its images in ``image_dir``,
        default the file's own folder), which returns the evaluation dict (``stats``: the 12 COCO
        numbers, ``per_class``: AP and AP50 per class, ``lines``: COCOeval's text); or a loader of
        such a set (``data.loader.build_loader``), which returns (COCO results, evaluation dict or
        None) as test.py uses it. ``stats`` (a dict) receives ``skipped_images``."""
        postprocessor = postprocessor or PostProcessor()
        if isinstance(source, (str, os.PathLike)):
            dataset = CocoDetection(None, os.path.splitext(os.path.basename(source))[0], self.transform,
                                    skip_unreadable=True, json_path=os.fspath(source), image_dir=image_dir)
            loader = build_loader(dataset, batch_size=batch_size, workers=0)
            return evaluate(self.model, loader, postprocessor=postprocessor, device_config=self.device_config,
                            evaluator=evaluator, stats=stats)[1]
        return evaluate(self.model, source, postprocessor=postprocessor, device_config=self.device_config,
                        evaluator=evaluator, stats=stats)


def _check_exported_settings(backend, device, amp, channels_last):
    """Refuse what an exported backend would silently ignore; ValueError in one line."""
    if str(device) not in ("auto", "cpu"):
        raise ValueError(f"backend {backend} runs on the CPU; device {device} needs backend torch")
    if amp == "on" or channels_last:
        raise ValueError(f"backend {backend} runs in float32 or int8; amp on and channels_last need backend torch")


def to_rgb_array(item):
    """A path, PIL image, CxHxW tensor or numpy array -> HxWx3 uint8 RGB array; ValueError for
    anything else."""
    if isinstance(item, (str, os.PathLike)):
        return load_image_rgb(os.fspath(item))
    if isinstance(item, torch.Tensor):
        return _tensor_to_rgb(item)
    if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image, without importing PIL here
        return np.asarray(item.convert("RGB"))
    if not isinstance(item, np.ndarray):
        raise ValueError(f"expected an image path, a PIL image or a numpy array, got {type(item).__name__}")
    if item.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {item.dtype}")
    if item.ndim == 2:
        item = item[:, :, None]
    if item.ndim != 3 or item.shape[2] not in (1, 3, 4) or min(item.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 RGB image array, got shape {item.shape}")
    if item.shape[2] == 1:
        item = np.repeat(item, 3, axis=2)
    return np.ascontiguousarray(item[:, :, :3])


def _tensor_to_rgb(tensor):
    """A CxHxW image tensor (as torchvision reads and transforms them: uint8, or float in [0, 1])
    -> HxWx3 uint8 RGB array."""
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected a CxHxW image tensor (C 1, 3 or 4), got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise ValueError(f"expected a uint8 or float image tensor, got dtype {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()) or tensor.min() < 0 or tensor.max() > 1:
            raise ValueError("expected a float image tensor with values in [0, 1]")
        tensor = (tensor.float() * 255).round().to(torch.uint8)
    return to_rgb_array(np.ascontiguousarray(tensor.permute(1, 2, 0).numpy()))
