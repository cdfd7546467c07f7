"""The LightningDataModule machinery every dataset shares: pipelines, the decode-once cache,
the pre-scan, the bad-sample policy and the loaders. A dataset supplies its
:class:`~segpets.data.dataset.SampleSource` (where files are, how masks decode) and its
splits: :class:`segpets.data.PetDataModule` (Oxford-IIIT Pet) and
:class:`segpets.data.FolderDataModule` (your own image/mask folders)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import lightning as L
import torch.distributed as dist
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from segpets.config_types import RGB, ImageSide, PositiveInt, PositiveRGB, Workers
from segpets.data.cache import CachedDataset, Resampling, bad_samples, load_or_build
from segpets.data.dataset import (
    SampleSource,
    SegmentationDataset,
    TorchSeeded,
    Transform,
    collate_skipping_bad,
)
from segpets.data.transforms import warn_misaligned_mask_resizes
from segpets.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BAD_SAMPLE_POLICIES = ("fail", "skip")
SPLITS = ("train", "val", "test")


class SegmentationDataModule(L.LightningDataModule):
    """Train/val/test :class:`SegmentationDataset` s of ``source`` through the albumentations
    pipelines given (built from ``configs/data/*.yaml``); subclasses set ``self.source`` and
    implement :meth:`splits`.

    ``image_size`` is what the pipelines resize to. ``mean``/``std`` are the normalisation the
    module applies to these uint8 batches on the device (``data.mean``/``std``; ``None``: the
    net's own), kept here so reports can say how inputs were prepared. ``num_workers``: loader
    processes, or ``"auto"``: Lightning's ``suggested_max_num_workers`` for the trainer's
    devices on this machine (the usable CPUs per device, minus one).
    """

    source: SampleSource
    root: Path  # where the data is, for reports and messages

    def __init__(
        self,
        train_transform: Transform,
        eval_transform: Transform,
        image_size: ImageSide = 256,
        mean: RGB | None = None,
        std: PositiveRGB | None = None,
        batch_size: PositiveInt = 16,
        num_workers: Workers = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        bad_samples: Literal["fail", "skip"] = "fail",
    ) -> None:
        super().__init__()
        if bad_samples not in BAD_SAMPLE_POLICIES:
            raise ConfigError(f"data.bad_samples must be 'fail' or 'skip', got '{bad_samples}'")
        self.bad_samples = bad_samples
        for key, value in (("image_size", image_size), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value}")
        self.train_transform, self.eval_transform = train_transform, eval_transform
        warn_misaligned_mask_resizes(train_transform, "data.train_transform")
        warn_misaligned_mask_resizes(eval_transform, "data.eval_transform")
        if num_workers != "auto" and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
        ):
            raise ConfigError(
                f"data.num_workers must be an integer >= 0 or auto, got {num_workers!r}"
            )
        self.image_size = image_size
        self.mean, self.std = (tuple(v) if v is not None else None for v in (mean, std))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        if cache and not cache_dir:
            raise ConfigError("data.cache=true needs data.cache_dir (a folder outside the data)")
        self.cache, self.cache_dir = cache, cache_dir
        self.datasets: dict[str, SegmentationDataset] = {}

    # --- what a dataset supplies --------------------------------------------------------
    def splits(self) -> dict[str, list[str]]:
        """{train, val, test}: sample names of each split, in a fixed order."""
        raise NotImplementedError

    def check_layout(self) -> None:
        """Raise ``DataError`` saying where the data was looked for, if it is not there."""

    def empty_split_message(self, split: str) -> str:
        return f"the {split} split is empty"

    def sample_labels(self, names: list[str]) -> dict[str, dict[str, str]]:
        """name → {column: value} for the eval report's per-group tables (e.g. species and
        breed); none by default."""
        return {name: {} for name in names}

    def split_names(self, split: str) -> list[str]:
        """Names in ``split`` ∈ {train, val, test}, in order (see :meth:`splits`)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of train, val, test; got '{split}'")
        return self.splits()[split]

    # --- datasets -----------------------------------------------------------------------
    def dataset(self, split: str) -> SegmentationDataset:
        if split not in self.datasets:
            self.check_layout()
            names = self.split_names(split)
            if not names:
                raise DataError(self.empty_split_message(split))
            names = self._check_files(split, names)
            # augmentations drawn from torch's RNG: reproducible by seed=, distinct per worker
            transform = (
                TorchSeeded(self.train_transform) if split == "train" else self.eval_transform
            )
            if self.cache:  # decoded + resized once (segpets.data.cache), augmented per sample
                self.datasets[split] = self._cached(split, names, transform)
            else:
                skip = self.bad_samples == "skip"
                self.datasets[split] = SegmentationDataset(self.source, names, transform, skip)
        return self.datasets[split]

    def _cached(self, split: str, names: list[str], transform: Transform) -> CachedDataset:
        """The split from its cache entry, built as its own pipeline resizes; samples that
        failed to decode are skipped (``bad_samples=skip``, with a warning naming each) or
        raise their ``DataError``, whether this run built the entry or an earlier one did."""
        pipeline = self.train_transform if split == "train" else self.eval_transform
        skip = self.bad_samples == "skip"
        resampling = Resampling.of(pipeline)
        entry, _ = load_or_build(
            self.cache_dir, self.source, split, names, self.image_size, resampling, skip
        )
        bad = bad_samples(entry)
        if bad and not skip:
            raise DataError(next(iter(bad.values())))
        if bad and len(bad) == len(names):
            raise DataError(f"all {len(names)} samples of split '{split}' are bad: {bad}")
        for message in bad.values():
            log.warning("skipping a bad sample (data.bad_samples=skip): %s", message)
        kept = [name for name in names if name not in bad]
        return CachedDataset(self.source, kept, transform, entry)

    def _check_files(self, split: str, names: list[str]) -> list[str]:
        """A quick pre-scan (image headers, masks decoded; ~1 ms a sample, threaded; see
        :meth:`SampleSource.scan`) that names every bad file at once instead of dying
        mid-epoch on the first, and warns once about masks without any foreground pixel.
        ``bad_samples=fail`` raises; ``skip`` drops those samples with one warning and a
        count. Returns the names to use."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PNG decoding
            scans = dict(zip(names, pool.map(self.source.scan, names), strict=True))
        empty = [name for name, (_, no_foreground) in scans.items() if no_foreground]
        if split == "train" and len(empty) == len(names) > 0:
            raise DataError(
                f"split 'train': none of its {len(names)} {self.source.mask_kind}s has a "
                "foreground pixel after decoding; check the label mapping (for data=folder: "
                "data.foreground/background/ignore, e.g. 0/255 masks with data.ignore=255)"
            )
        if empty:
            log.warning(
                "split '%s': %d %s(s) have no pet pixel (per-image Dice 1 for an empty "
                "prediction, 0 for any other): %s",
                split, len(empty), self.source.mask_kind, ", ".join(empty),
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
            f"split '{split}': {len(problems)} of its files are invalid, unreadable or "
            f"missing: {shown}{more}; data.bad_samples=skip would train without those samples"
        )

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}
        for split in wanted.get(stage or "", list(SPLITS)):
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
        workers = self.loader_workers()
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            collate_fn=collate_skipping_bad if self.bad_samples == "skip" else None,
            drop_last=shuffle and len(ds) > self.batch_size,  # no size-1 batches for BatchNorm
        )

    def loader_workers(self) -> int:
        """``num_workers``, with ``"auto"`` resolved for this trainer's devices."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return suggested_max_num_workers(devices)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
