"""Scoring detections: COCO evaluation and strict checks of results files."""
