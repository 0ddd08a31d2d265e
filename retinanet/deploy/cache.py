"""A checkpoint or exported file, ready for a backend: exported and quantised on first use, reused after.

Files go beside their source: ``model_final.pt`` -> ``model_final.onnx`` (float32) and
``model_final.int8.onnx``. A file is reused only while its metadata says it was made from the
same source (the checkpoint's SHA-256; for int8 also the float file's SHA-256 and the same
calibration and image sizes); otherwise it is made again, and a line says why.
"""
import os

from retinanet.deploy.backends import EXPORTED_BACKENDS, open_exported
from retinanet.deploy.export import export_checkpoint, generated_images
from retinanet.deploy.extras import import_extras
from retinanet.deploy.metadata import ExportedModelError, read_metadata
from retinanet.deploy.quantize import calibration_matches, quantize_int8
from retinanet.util.io import file_sha256

EXPORTED_SUFFIX = ".onnx"


def is_exported_file(path):
    return os.fspath(path).lower().endswith(EXPORTED_SUFFIX)


def exported_path_for(checkpoint_path):
    return os.path.splitext(checkpoint_path)[0] + EXPORTED_SUFFIX


def int8_path_for(float_path):
    return os.path.splitext(float_path)[0] + ".int8" + EXPORTED_SUFFIX


def ensure_exported(checkpoint_path, backend="onnxruntime", log=print):
    """The float32 export of a checkpoint, made (and checked with ``backend``) unless a current one exists."""
    path = exported_path_for(checkpoint_path)
    if os.path.isfile(path):
        if read_metadata(path)["source_sha256"] == file_sha256(checkpoint_path):
            return path
        log(f"{path} was exported from another version of {checkpoint_path}: exporting again")
    export_checkpoint(checkpoint_path, path, generated_images(), check_backend=backend, log=log)
    return path


def ensure_int8(float_path, calibration, min_side, max_side, log=print):
    """The int8 file quantised from ``float_path`` with ``calibration``, made unless a current one exists."""
    metadata = read_metadata(float_path)
    if metadata["precision"] != "float32":
        raise ExportedModelError(f"{float_path}: already {metadata['precision']}; --int8 quantises a float32 export")
    path = int8_path_for(float_path)
    float_sha256 = file_sha256(float_path)
    if os.path.isfile(path):
        if calibration_matches(read_metadata(path), calibration, min_side, max_side, float_sha256):
            return path
        calibration.check()
        log(f"{path} was quantised from another model or calibration: quantising again")
    quantize_int8(float_path, path, calibration, metadata, min_side, max_side, log=log)
    return path


def load_exported(path, backend="onnxruntime", *, int8=None, min_side=None, max_side=None, log=print):
    """An ExportedModel for a checkpoint (exported on first use) or an exported file.

    int8: a ``quantize.Calibration`` to run the int8 version instead. min_side / max_side: the
    image sizes it will run at (default: the file's), used for calibration. Returns
    (model, metadata of the file that runs).
    """
    if backend not in EXPORTED_BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for an exported model; "
                         f"choose one of {', '.join(EXPORTED_BACKENDS)}")
    import_extras(backend)  # before any work: a missing package is reported first, in one line
    if int8 is not None:
        import_extras("int8", "--int8")
    path = os.fspath(path)
    float_path = path if is_exported_file(path) else ensure_exported(path, backend, log)
    if int8 is not None:
        metadata = read_metadata(float_path)
        path = ensure_int8(float_path, int8, min_side or metadata["min_side"], max_side or metadata["max_side"], log)
    else:
        path = float_path
    model = open_exported(path, backend)
    log(f"backend {backend} ({model.metadata['precision']}): {path}")
    return model, model.metadata

