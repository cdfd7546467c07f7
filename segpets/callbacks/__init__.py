"""Lightning callbacks of segpets, one module per config file of ``configs/callbacks/``
(``val_images``, ``nonfinite_loss``, ``resume``, ``backbone_finetuning``), and ``best_metric``,
which ``segpets.train`` adds for the sweeper's ``optimized_metric``."""
