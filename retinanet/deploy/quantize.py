"""Static int8 post-training quantisation of an exported float32 file (onnxruntime.quantization).

Calibration feeds ``Calibration.num_images`` training images, one at a time, through the float
model, preprocessed exactly as evaluation does (``EvalTransform`` at the file's image sizes,
padding to a multiple of 32), and records every convolution input's range (min-max). The
quantised file is QDQ (QuantizeLinear / DequantizeLinear pairs around each convolution) with
uint8 activations and per-channel int8 weights; GroupNorm, additions and upsampling stay in
float32. Both ONNX Runtime and OpenVINO run it.
"""
import json
import os
from dataclasses import dataclass

import numpy as np

from retinanet.data.coco import CocoDetection
from retinanet.data.layout import SetNotFoundError, resolve_set
from retinanet.data.loader import collate
from retinanet.data.transforms import EvalTransform
from retinanet.deploy.backends import INPUT_NAME
from retinanet.deploy.extras import import_extras
from retinanet.deploy.metadata import encode, set_metadata
from retinanet.util.io import WriteError, file_sha256, write_bytes


@dataclass(frozen=True)
class Calibration:
    """Where int8 calibration images come from: ``num_images`` of the set ``set_name`` under ``coco_path``
    (any layout of ``data.layout``), or of the explicit ``json_path`` / ``image_dir`` (the image folder
    defaulting to the JSON's own), the first ones of a shuffle seeded with ``seed``."""
    coco_path: str | None
    set_name: str = "train"
    num_images: int = 32
    seed: int = 0
    json_path: str | None = None
    image_dir: str | None = None

    def files(self):
        """The calibration set's SetFiles; ValueError in one line, naming the paths looked for, when no
        layout holds the set or the explicit file is missing."""
        try:
            return resolve_set(self.coco_path or ".", self.set_name, self.json_path, self.image_dir)
        except SetNotFoundError as error:
            raise ValueError(f"int8 calibration: {error}; point --calibration_json (or --coco_path and "
                             "--calibration_set) at the training images") from None

    def check(self):
        self.files()

    def describe(self, min_side, max_side):
        """What the calibration depends on, as stored in an int8 file's metadata: the paths as given (a
        cached int8 file is reused without the calibration images being there)."""
        def absolute(path):
            return os.path.abspath(path) if path else None

        return {"coco_path": absolute(self.coco_path), "set_name": self.set_name, "json_path": absolute(self.json_path),
                "image_dir": absolute(self.image_dir), "num_images": self.num_images, "seed": self.seed,
                "min_side": int(min_side), "max_side": int(max_side)}


class CalibrationImages:
    """ONNX Runtime's CalibrationDataReader: {'images': float32 (1, 3, H, W)} per training image, then None."""

    def __init__(self, calibration, min_side, max_side):
        files = calibration.files()
        dataset = CocoDetection(None, calibration.set_name, EvalTransform(min_side, max_side),
                                json_path=files.json_path, image_dir=files.image_dir)
        order = np.random.default_rng(calibration.seed).permutation(len(dataset))
        self.dataset = dataset
        self.indices = [int(index) for index in order[:calibration.num_images]]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.indices):
            return None
        images, _, _ = collate([self.dataset[self.indices[self.position]]])
        self.position += 1
        return {INPUT_NAME: images.numpy()}


def quantize_int8(float_path, output_path, calibration, metadata, min_side, max_side, log=print):
    """Write the int8 version of ``float_path`` to ``output_path``, atomically.

    metadata: the float file's decoded metadata; min_side / max_side: the image sizes the model
    will be run at (calibration images are resized to them). Returns the number of calibration
    images used (fewer than asked when the set is smaller).
    """
    onnx, _ = import_extras("int8", "--int8")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = CalibrationImages(calibration, min_side, max_side)
    used = len(reader.indices)
    if used < calibration.num_images:
        log(f"{reader.dataset.json_path} has {used} images: calibrating on all of them "
            f"(--calibration_images {calibration.num_images})")
    temporary = f"{output_path}.partial"  # onnxruntime's quantiser writes to a path; removed whatever happens
    try:
        quantize_static(float_path, temporary, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(temporary)
    except OSError as error:
        raise WriteError.from_os_error(output_path, error) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    values = dict(metadata)
    values.update(precision="int8", calibration=calibration.describe(min_side, max_side),
                  float_sha256=file_sha256(float_path))
    set_metadata(proto, encode(values))
    write_bytes(output_path, proto.SerializeToString())
    log(f"quantised {float_path} -> {output_path} (int8, calibrated on {used} images of {reader.dataset.json_path})")
    return used


def calibration_matches(int8_metadata, calibration, min_side, max_side, float_sha256):
    """True when an int8 file was quantised from this float file with this calibration."""
    return (int8_metadata.get("precision") == "int8" and int8_metadata.get("float_sha256") == float_sha256
            and json.dumps(int8_metadata.get("calibration"), sort_keys=True)
            == json.dumps(calibration.describe(min_side, max_side), sort_keys=True))
