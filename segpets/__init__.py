"""segpets: binary pet segmentation (Oxford-IIIT Pet) with PyTorch Lightning and Hydra.

Reading order for newcomers: ``data`` → ``models`` → ``losses``/``metrics`` → ``module`` →
entry points ``train`` and ``eval``.
"""

__version__ = "0.1.0"
