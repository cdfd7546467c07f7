"""Evaluation and inference beyond the training loop: the eval report (per-image results,
per-species/breed breakdown, worst-image overlays, full-resolution scoring), flip TTA, and
the preprocessing/backends shared by ``segpets.predict`` and ``segpets.export``."""
