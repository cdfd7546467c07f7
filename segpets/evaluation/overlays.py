"""One palette for every overlay segpets draws, drawn with torchvision's
:func:`~torchvision.utils.draw_segmentation_masks`: the validation panel in TensorBoard
(:mod:`segpets.callbacks.val_images`), eval's ``worst/*.png`` (:mod:`segpets.evaluation.report`)
and predict's ``*_overlay.png`` (:mod:`segpets.predict`).

- green, :data:`PET_RGB`: pet. A mask drawn alone (a ground truth, a prediction) shows its pet
  pixels in it; a prediction drawn against its ground truth shows its *true* pet pixels in it.
- red, :data:`FALSE_PET_RGB`: false pet, background the prediction calls pet.
- blue, :data:`MISSED_PET_RGB`: missed pet, pet the prediction calls background.
- grey, :data:`IGNORED_RGB`: :data:`~segpets.labels.IGNORE_INDEX` pixels of a ground truth
  (counted in no metric); a prediction drawn against the truth leaves them untinted.

Colours are RGB in 0-255, blended with the image at :data:`ALPHA` (colour weight).
"""

from __future__ import annotations

import torch
from torchvision.utils import draw_segmentation_masks

PET_RGB = (40, 200, 60)  # green
FALSE_PET_RGB = (230, 30, 30)  # red
MISSED_PET_RGB = (40, 90, 255)  # blue
IGNORED_RGB = (128, 128, 128)  # grey
ALPHA = 0.5  # colour weight; 0.5 keeps untinted pixels exact (x·0.5 + x·0.5 = x)


def draw_mask(
    image: torch.Tensor,
    pet: torch.Tensor,
    ignored: torch.Tensor | None = None,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """A mask alone over ``image``: ``pet`` pixels green, ``ignored`` ones grey.

    ``image`` (3, H, W) uint8 in [0, 255] or float in [0, 1]; ``pet`` and ``ignored`` (H, W)
    bool, disjoint → (3, H, W) of ``image``'s dtype. Raises ``ValueError`` (torchvision) on
    other shapes or dtypes."""
    masks, colours = [pet], [PET_RGB]
    if ignored is not None:
        masks, colours = [pet & ~ignored, ignored], [PET_RGB, IGNORED_RGB]
    return draw_segmentation_masks(image, torch.stack(masks), alpha, colours)


def draw_outcomes(
    image: torch.Tensor,
    truth: torch.Tensor,
    pred: torch.Tensor,
    ignored: torch.Tensor | None = None,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """A prediction against its ground truth over ``image``: true pet green, false pet red,
    missed pet blue; ``ignored`` pixels and true background untinted.

    ``image`` (3, H, W) uint8 in [0, 255] or float in [0, 1]; ``truth``, ``pred`` and
    ``ignored`` (H, W) bool → (3, H, W) of ``image``'s dtype."""
    counted = ~ignored if ignored is not None else torch.ones_like(truth)
    masks = torch.stack([truth & pred, ~truth & pred, truth & ~pred]) & counted
    return draw_segmentation_masks(image, masks, alpha, [PET_RGB, FALSE_PET_RGB, MISSED_PET_RGB])
