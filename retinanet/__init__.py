"""RetinaNet (Lin et al., 2017) for COCO-format datasets: model, data, loss, training and evaluation."""

__version__ = "1.0.0"
