"""Evaluation beyond the training loop: the eval report (per-image results, per-species/breed
or per-group breakdown, worst-image overlays, full-resolution scoring) and the operations on
logits shared with the module and predict (flip TTA, resizing)."""
