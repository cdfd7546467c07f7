"""LightningDataModules over the official Oxford-IIIT Pet layout (real or synthetic)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from segpets.data import synthetic
from segpets.data.cache import CachedPetDataset, Resampling, bad_samples, load_or_build
from segpets.data.oxford_pet import (
    PetSegmentationDataset,
    TorchSeeded,
    Transform,
    collate_skipping_bad,
    read_split,
    scan_sample_and_mask,
    split_every_nth,
)
from segpets.data.transforms import warn_misaligned_mask_resizes
from segpets.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BAD_SAMPLE_POLICIES = ("fail", "skip")

TORCHVISION_FOLDER = "oxford-iiit-pet"  # torchvision's OxfordIIITPet writes <root>/oxford-iiit-pet


class PetDataModule(L.LightningDataModule):
    """Train/val from ``annotations/trainval.txt`` (every ``val_every``-th line is validation),
    test from ``annotations/test.txt``; images and masks go through the albumentations
    pipelines given (built from ``configs/data/*.yaml``).

    ``image_size``, ``mean`` and ``std`` are what the pipelines were built with; they are kept
    here so checkpoints and reports can say how inputs were prepared.
    """

    def __init__(
        self,
        root: str | Path,
        train_transform: Transform,
        eval_transform: Transform,
        image_size: int = 256,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_every: int = 10,
        download: bool = False,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        bad_samples: str = "fail",
        allow_test_overlap: bool = False,
    ) -> None:
        super().__init__()
        if bad_samples not in BAD_SAMPLE_POLICIES:
            raise ConfigError(f"data.bad_samples must be 'fail' or 'skip', got '{bad_samples}'")
        self.bad_samples = bad_samples
        for key, value in (("image_size", image_size), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value}")
        self.root = Path(root).expanduser().resolve()
        self.train_transform, self.eval_transform = train_transform, eval_transform
        warn_misaligned_mask_resizes(train_transform, "data.train_transform")
        warn_misaligned_mask_resizes(eval_transform, "data.eval_transform")
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.val_every, self.download = val_every, download
        if cache and not cache_dir:
            raise ConfigError("data.cache=true needs data.cache_dir (a folder outside data.root)")
        self.cache, self.cache_dir = cache, cache_dir
        self.allow_test_overlap = allow_test_overlap
        self.datasets: dict[str, PetSegmentationDataset] = {}
        self._splits: dict[str, list[str]] | None = None

    # --- data on disk -------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.download and not self._layout_ok():
            self._download()
        self._check_layout()

    def _layout_ok(self) -> bool:
        ann = self.root / "annotations"
        return (self.root / "images").is_dir() and (ann / "trainval.txt").is_file()

    def _check_layout(self) -> None:
        if not self._layout_ok():
            raise DataError(
                f"Oxford-IIIT Pet not found at '{self.root}' (expected images/ and "
                f"annotations/trainval.txt there); set data.root=/path/to/oxford-iiit-pet, "
                f"or data.download=true to fetch it with torchvision"
            )

    def _download(self) -> None:
        from torchvision.datasets import OxfordIIITPet

        if self.root.name != TORCHVISION_FOLDER:
            raise ConfigError(
                f"data.download=true writes to <dir>/{TORCHVISION_FOLDER} (torchvision's layout); "
                f"set data.root to a path ending in '{TORCHVISION_FOLDER}', got '{self.root}'"
            )
        try:
            OxfordIIITPet(self.root.parent, target_types="segmentation", download=True)
        except OSError as err:  # URLError/HTTPError when offline
            raise DataError(
                f"downloading Oxford-IIIT Pet to '{self.root}' failed ({err}); download it "
                f"elsewhere and set data.root=/path/to/oxford-iiit-pet"
            ) from err

    # --- datasets -----------------------------------------------------------------------
    def split_names(self, split: str) -> list[str]:
        """Names in ``split`` ∈ {train, val, test}, in split-file order (see :meth:`splits`)."""
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split must be one of train, val, test; got '{split}'")
        if split == "test" and not (self.root / "annotations" / "test.txt").is_file():
            read_split(self.root / "annotations" / "test.txt")  # "split file not found: ..."
        return self.splits()[split]

    def splits(self) -> dict[str, list[str]]:
        """{train, val, test} names, read once: every ``val_every``-th trainval line is
        validation (no test.txt: no test names). A train or validation image that is also a
        test image makes the test metrics partly training metrics: ``DataError`` naming them, unless
        ``data.allow_test_overlap=true``."""
        if self._splits is None:
            ann = self.root / "annotations"
            trainval = read_split(ann / "trainval.txt")
            test = read_split(ann / "test.txt") if (ann / "test.txt").is_file() else []
            train, val = split_every_nth(trainval, self.val_every)
            overlap = sorted(set(trainval) & set(test))
            if overlap and not self.allow_test_overlap:
                shown = ", ".join(overlap[:10]) + (" ..." if len(overlap) > 10 else "")
                raise DataError(
                    f"{len(overlap)} name(s) of '{ann / 'trainval.txt'}' are also in "
                    f"'{ann / 'test.txt'}' ({shown}): test metrics on training images are "
                    f"not test metrics; fix the split files, or set data.allow_test_overlap=true"
                )
            self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    def dataset(self, split: str) -> PetSegmentationDataset:
        if split not in self.datasets:
            self._check_layout()
            names = self._check_files(split, self._non_empty(split))
            # augmentations drawn from torch's RNG: reproducible by seed=, distinct per worker
            transform = (
                TorchSeeded(self.train_transform) if split == "train" else self.eval_transform
            )
            if self.cache:  # decoded + resized once (segpets.data.cache), augmented per sample
                self.datasets[split] = self._cached(split, names, transform)
            else:
                skip = self.bad_samples == "skip"
                self.datasets[split] = PetSegmentationDataset(self.root, names, transform, skip)
        return self.datasets[split]

    def _cached(self, split: str, names: list[str], transform: Transform) -> CachedPetDataset:
        """The split from its cache entry, built as its own pipeline resizes; samples that
        failed to decode are skipped (``bad_samples=skip``, with a warning naming each) or
        raise their ``DataError``, whether this run built the entry or an earlier one did."""
        pipeline = self.train_transform if split == "train" else self.eval_transform
        skip = self.bad_samples == "skip"
        entry, _ = load_or_build(
            self.cache_dir, self.root, split, names, self.image_size, Resampling.of(pipeline), skip
        )
        bad = bad_samples(entry)
        if bad and not skip:
            raise DataError(next(iter(bad.values())))
        if bad and len(bad) == len(names):
            raise DataError(f"all {len(names)} samples of split '{split}' are bad: {bad}")
        for message in bad.values():
            log.warning("skipping a bad sample (data.bad_samples=skip): %s", message)
        kept = [name for name in names if name not in bad]
        return CachedPetDataset(self.root, kept, transform, entry)

    def _non_empty(self, split: str) -> list[str]:
        names = self.split_names(split)
        if names:
            return names
        ann = self.root / "annotations"
        if split == "test":
            raise DataError(f"the test split is empty: '{ann / 'test.txt'}' lists no images")
        raise DataError(
            f"the {split} split is empty: '{ann / 'trainval.txt'}' lists "
            f"{len(self.split_names('train')) + len(self.split_names('val'))} image(s) and "
            f"data.val_every={self.val_every} makes every {self.val_every}th a validation "
            f"image; list more images or lower data.val_every"
        )

    def _check_files(self, split: str, names: list[str]) -> list[str]:
        """A quick pre-scan (image headers and trimaps, ~1 ms a sample, threaded; see
        ``scan_sample``) that names every bad file at once instead of dying mid-epoch on the
        first, and warns once about trimaps without any pet pixel. ``bad_samples=fail``
        raises; ``skip`` drops those samples with one warning and a count. Returns the names
        to use."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PNG decoding
            found = pool.map(partial(scan_sample_and_mask, self.root), names)
            scans = dict(zip(names, found, strict=True))
        no_pet = [name for name, (_, empty) in scans.items() if empty]
        if no_pet:
            log.warning(
                "split '%s': %d trimap(s) have no pet pixel (per-image Dice 1 for an empty "
                "prediction, 0 for any other): %s", split, len(no_pet), ", ".join(no_pet),
            )  # fmt: skip
        bad = {name: problems for name, (problems, _) in scans.items() if problems}
        if not bad:
            return names
        problems = [problem for found in bad.values() for problem in found]
        if self.bad_samples == "skip" and len(bad) < len(names):
            log.warning(
                "data.bad_samples=skip: skipping %d of %d samples of split '%s': %s",
                len(bad), len(names), split, "; ".join(problems),
            )  # fmt: skip
            return [name for name in names if name not in bad]
        if len(problems) > 10:
            log.error("bad files in split '%s':\n  %s", split, "\n  ".join(problems))
        shown = ", ".join(problems[:10])
        more = (
            f" and {len(problems) - 10} more (all listed in the log)" if len(problems) > 10 else ""
        )
        raise DataError(
            f"{len(problems)} files named by the split files are invalid, unreadable or "
            f"missing: {shown}{more}; data.bad_samples=skip would train without those samples"
        )

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}
        for split in wanted.get(stage or "", ["train", "val", "test"]):
            self.dataset(split)

    # --- loaders ------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        # Under DDP, Lightning's eval sampler pads ranks to equal length with repeated images,
        # which would count them twice in per-image Dice; this one gives each image to one rank.
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        sampler = (
            UnrepeatedDistributedSampler(ds, shuffle=False) if distributed and not shuffle else None
        )
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=collate_skipping_bad if self.bad_samples == "skip" else None,
            drop_last=shuffle and len(ds) > self.batch_size,  # no size-1 batches for BatchNorm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SyntheticPetDataModule(PetDataModule):
    """:class:`PetDataModule` over a generated dataset (see :mod:`segpets.data.synthetic`),
    written once to ``root`` (a cache folder, never a dataset folder)."""

    def __init__(self, num_trainval: int = 120, num_test: int = 60, seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_trainval, self.num_test, self.generator_seed = num_trainval, num_test, seed

    def _check_layout(self) -> None:
        synthetic.generate(self.root, self.num_trainval, self.num_test, self.generator_seed)
        super()._check_layout()
