"""segpets: binary pet segmentation (Oxford-IIIT Pet) with PyTorch Lightning and Hydra.

Reading order for newcomers: ``data`` → ``models`` → ``losses``/``metrics`` → ``module`` →
the commands ``train``, ``eval``, ``predict``, ``export`` (``python -m segpets`` lists them).
Importing ``segpets`` imports nothing heavy; its Hydra configs (``segpets.configs``) compose
with Hydra's plain API without it.
"""

import os

# albumentations asks PyPI for its latest version on every import (up to a 2 s timeout, and a
# warning on offline machines: clusters, CI, the GPU box). Every segpets process and subprocess
# test imports it, so the check is off unless the user set the variable themselves.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.2.0"
