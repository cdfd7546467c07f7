"""segpets: binary pet segmentation (Oxford-IIIT Pet) with PyTorch Lightning and Hydra.

Reading order for newcomers: ``data`` → ``models`` → ``losses``/``metrics`` → ``module`` →
entry points ``train`` and ``eval``.
"""

import os

# albumentations asks PyPI for its latest version on every import (up to a 2 s timeout, and a
# warning on offline machines: clusters, CI, the GPU box). Every segpets process and subprocess
# test imports it, so the check is off unless the user set the variable themselves.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from segpets import resolvers  # noqa: E402  (after the environment above)

resolvers.register()

__version__ = "0.1.0"
