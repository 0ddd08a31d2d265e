"""RetinaNet (Lin et al., 2017) for COCO-format datasets: model, data, loss, training and evaluation.

For detections in your own code, ``from retinanet import Detector`` (see ``retinanet/detector.py``);
to train from Python, ``retinanet.train(config, **flags)`` (see ``retinanet/api.py``).
"""

__version__ = "1.1.0"
__all__ = ["Detector", "train"]


def __getattr__(name):
    # Imported on first use, so that ``import retinanet.data.synthetic`` stays light.
    if name == "Detector":
        from retinanet.detector import Detector
        return Detector
    if name == "train":
        from retinanet.api import train
        return train
    raise AttributeError(f"module 'retinanet' has no attribute {name!r}")
