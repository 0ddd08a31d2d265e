"""The command-line programs: train, test, vis, submission, export, check_dataset.

Each module has ``main`` and ``run`` (its console command in pyproject.toml, ``retinanet-train``
and the others); the scripts at the repository's top level and in tools/ call the same code.
"""
