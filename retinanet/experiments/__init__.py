"""Launching runs: the named flag sets the recipe benchmark compares (recipes.py) and seed and
learning-rate sweeps of train.py (sweep.py)."""
