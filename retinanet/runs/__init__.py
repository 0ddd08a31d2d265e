"""The run folder: run_dir.py writes and reads it, plots.py draws its curves, tables.py formats
tables over run folders (means and spreads over seeds)."""
