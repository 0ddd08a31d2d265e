"""Named sets of train.py flags that the recipe benchmark (``bench/recipes.py``) compares.

``defaults`` is train.py as it is. ``original_equivalent`` is the closest this project comes to
the original pytorch-retinanet course repository's training: use it to compare against that
code, or on data where the benchmark shows it ahead.
"""
# Flags on top of a budget. "defaults" adds nothing: it measures train.py's defaults.
RECIPES = {
    "defaults": [],
    # Our closest equivalent of the original repository: BatchNorm statistics fixed but scale and
    # shift trained, no normalisation in FPN and heads, He initialisation, Adam 1e-4, a constant
    # rate, the paper's anchor assignment.
    "original_equivalent": ["--norm", "frozen_stats_bn", "--head_norm", "none", "--head_init", "kaiming",
                            "--milestones", "1000", "--warmup_iters", "0", "--optimizer", "adam",
                            "--learning_rate", "1e-4", "--low_quality_matches", "off"],
    # The defaults before this benchmark: GroupNorm everywhere, the rate divided at 2/3 and 8/9,
    # the paper's anchor assignment.
    "groupnorm_step": ["--norm", "gn", "--head_norm", "gn", "--head_init", "normal", "--lr_schedule", "multistep",
                       "--milestones", "5", "7", "--warmup_iters", "100", "--low_quality_matches", "off"],
    "groupnorm_constant": ["--norm", "gn", "--head_norm", "gn", "--head_init", "normal", "--lr_schedule", "multistep",
                           "--milestones", "1000", "--warmup_iters", "100", "--low_quality_matches", "off"],
    # Today's defaults at a constant rate (--milestones with no value), at 1e-4 and at 3e-4.
    "defaults_constant_rate": ["--milestones"],
    "defaults_constant_rate_3e-4": ["--milestones", "--learning_rate", "3e-4"],
}
