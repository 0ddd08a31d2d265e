"""The run folder (run_dir.py writes and reads it), its curves (plots.py), tables over run folders
(tables.py), and the named flag sets and sweeps that launch runs (recipes.py, sweep.py)."""
