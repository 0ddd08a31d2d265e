"""Deploying a trained detector: ONNX export, ONNX Runtime and OpenVINO backends, int8 quantisation.

Only the network is exported: images (B, 3, H, W) -> ``cls_logits`` (B, N, K) and ``box_deltas``
(B, N, 4). Anchors depend only on the input size and are rebuilt in Python, and the decoding is
``models.postprocess.PostProcessor``, the same code the PyTorch path runs, so there is one
source of truth for score threshold, top-k, box decoding, NMS and the detection cap.

- ``extras.py``   importing the optional packages, with a one-line install hint when missing;
- ``export.py``   the export, its metadata (class names, image sizes, normalisation, model
                  options) and the check against PyTorch;
- ``backends.py`` an exported file behind the call ``engine.detect_batch`` makes of a model;
- ``quantize.py`` static int8 quantisation calibrated on training images;
- ``cache.py``    export and quantise a checkpoint on first use into files beside it;
- ``cli.py``      the scripts' ``--backend`` / ``--int8`` flags and the detector they load.
"""
