"""Samples from any source of image/mask pairs: the torch ``Dataset``, the reproducible
augmentation wrapper and the collate function used by every DataModule."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from segpets.data.files import decode, header_problems, load_rgb, size_mismatch
from segpets.data.pixels import check_lossless
from segpets.errors import DataError

log = logging.getLogger(__name__)

Transform = Callable[..., dict]


class SampleSource:
    """Where the samples of a dataset live and how their masks decode. Subclasses give
    :meth:`files`, :meth:`mask_from_image` and :attr:`cache_key`; the rest (pairs, the
    pre-scan) is shared, so every dataset gets the same checks and messages.

    Masks are (H, W) uint8: 0 background, 1 foreground, 255 ignored (:mod:`segpets.labels`).
    """

    mask_kind = "mask"  # how messages call the mask file ("trimap" for Oxford-IIIT Pet)

    def files(self, name: str) -> tuple[Path, Path]:
        """(image file, mask file) of sample ``name``."""
        raise NotImplementedError

    def mask_from_image(self, path: Path, img: Image.Image) -> np.ndarray:
        """(H, W) uint8 mask of the decoded mask file ``path``; ``DataError`` naming it if its
        mode or values are not what this source's masks may hold."""
        raise NotImplementedError

    @property
    def cache_key(self) -> str:
        """Everything besides the files that decides the decoded arrays (folders, label
        mapping): part of the cache's entry folder name, so other settings never share one."""
        raise NotImplementedError

    def read_mask(self, path: Path) -> np.ndarray:
        """(H, W) uint8 mask of a mask file; ``DataError`` naming it if unreadable/invalid or
        stored in a lossy format (:func:`segpets.data.pixels.check_lossless`)."""
        return decode(path, lambda img: self.mask_from_image(path, check_lossless(path, img)))

    def load_mask(self, name: str) -> np.ndarray:
        return self.read_mask(self.files(name)[1])

    def load_pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) uint8 mask of one sample, checked to match."""
        image_file, mask_file = self.files(name)
        image, mask = load_rgb(image_file), self.read_mask(mask_file)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"'{image_file}' is {image.shape[1]}x{image.shape[0]} but its {self.mask_kind} "
                f"is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def scan(self, name: str) -> tuple[list[str], bool]:
        """(problems, no foreground pixel) of one sample before training, each problem naming
        its file: the image from its header alone (missing, empty, not an image, over the
        decompression-bomb limit, another size than its mask), the mask fully decoded (~1 ms:
        unreadable, more than one channel, values it may not hold). Truncated image data is
        only seen when the sample is decoded (:meth:`load_pair`)."""
        image_file, mask_file = self.files(name)
        problems, image_size, _ = header_problems(image_file)
        mask_problems, mask_size, bands = header_problems(mask_file)
        problems += mask_problems
        no_foreground = False
        if mask_size is not None and bands != 1:
            problems.append(f"'{mask_file}' ({self.mask_kind} with {bands} channels, expected 1)")
        elif mask_size is not None:
            try:
                no_foreground = not (self.read_mask(mask_file) == 1).any()
            except DataError as err:
                problems.append(str(err))
        problems += size_mismatch(image_file, image_size, mask_file, mask_size, self.mask_kind)
        return problems, no_foreground and not problems


class TorchSeeded:
    """An albumentations pipeline re-seeded from torch's RNG for every sample.

    Albumentations 2 ignores the global seeds (each ``Compose`` owns its generator), so on its
    own the augmentations differ between two runs with the same ``seed=``, repeat across
    DataLoader workers (forked copies of one generator), and cannot be restored on resume.
    Torch's RNG is seeded by ``seed_everything``, per worker by the DataLoader, and saved in
    checkpoints by :class:`segpets.callbacks.resume.ExactResume`, so all three hold here.
    """

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, **data: Any) -> dict:
        seed = int(torch.randint(2**31 - 1, ()).item())
        # one generator pair shared by every transform (set_random_seed makes one per transform)
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return self.transform(**data)


def collate_skipping_bad(batch: list[dict | None]) -> dict:
    """``default_collate`` of the samples that loaded (``None`` marks a skipped bad one)."""
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        raise DataError(f"all {len(batch)} samples of a batch are bad (see the warnings above)")
    return default_collate(kept)


class SegmentationDataset(Dataset):
    """Samples ``{"image": uint8 (3, H, W), "mask": uint8 (1, H, W), "name": str}`` of a
    :class:`SampleSource`; mask values 0, 1 and 255 (ignored). The module normalises images on
    the device (:func:`segpets.data.transforms.normalize`); a pipeline ending in
    albumentations' ``Normalize`` gives float images instead, used as they are.

    ``transform`` is an albumentations pipeline called as ``transform(image=, mask=)`` that
    ends in ``ToTensorV2``; it is applied jointly so image and mask stay aligned.
    """

    def __init__(
        self,
        source: SampleSource,
        names: Sequence[str],
        transform: Transform,
        skip_bad: bool = False,
    ) -> None:
        self.source = source
        self.names = list(names)
        self.transform = transform
        self.skip_bad = skip_bad  # data.bad_samples=skip: a sample that fails to decode → None

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (image, mask) of sample ``index``, before the transform."""
        return self.source.load_pair(self.names[index])

    def __getitem__(self, index: int) -> dict | None:
        try:
            image, mask = self.load(index)
        except DataError as err:
            if not self.skip_bad:
                raise
            log.warning("skipping a bad sample (data.bad_samples=skip): %s", err)
            return None  # dropped by collate_skipping_bad
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"]).unsqueeze(0),
            "name": self.names[index],
        }
