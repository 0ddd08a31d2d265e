"""Training: the parts of a run (setup.py), where its weights start (start.py), the run itself
(trainer.py), its stop signals (signals.py) and the learning-rate range test (lr_find.py).
From Python, ``retinanet.train`` (retinanet/api.py) runs what train.py runs."""
