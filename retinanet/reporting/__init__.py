"""A run's report page (page.py) and its picture of predictions (prediction_grid.py)."""
