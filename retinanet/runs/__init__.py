"""Run bookkeeping: the trainer, run folders, checkpoints, metrics, plots, tables, sweeps and the shared command-line options."""
