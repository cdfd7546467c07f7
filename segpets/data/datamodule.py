"""LightningDataModules over the official Oxford-IIIT Pet layout (real or synthetic)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from segpets.data import synthetic
from segpets.data.cache import CachedPetDataset, Resampling, load_or_build
from segpets.data.oxford_pet import (
    PetSegmentationDataset,
    TorchSeeded,
    Transform,
    collate_skipping_bad,
    read_split,
    scan_sample,
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
        self.datasets: dict[str, PetSegmentationDataset] = {}

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
        """Names in ``split`` ∈ {train, val, test}, in split-file order."""
        ann = self.root / "annotations"
        if split == "test":
            return read_split(ann / "test.txt")
        if split not in ("train", "val"):
            raise ConfigError(f"split must be one of train, val, test; got '{split}'")
        train, val = split_every_nth(read_split(ann / "trainval.txt"), self.val_every)
        return train if split == "train" else val

    def dataset(self, split: str) -> PetSegmentationDataset:
        if split not in self.datasets:
            self._check_layout()
            names = self._check_files(split, self.split_names(split))
            # augmentations drawn from torch's RNG: reproducible by seed=, distinct per worker
            transform = (
                TorchSeeded(self.train_transform) if split == "train" else self.eval_transform
            )
            if self.cache:  # decoded + resized once (segpets.data.cache), augmented per sample
                pipeline = self.train_transform if split == "train" else self.eval_transform
                resampling = Resampling.of(pipeline)
                entry, _ = load_or_build(
                    self.cache_dir, self.root, split, names, self.image_size, resampling
                )
                self.datasets[split] = CachedPetDataset(self.root, names, transform, entry)
            else:
                skip = self.bad_samples == "skip"
                self.datasets[split] = PetSegmentationDataset(self.root, names, transform, skip)
        return self.datasets[split]

    def _check_files(self, split: str, names: list[str]) -> list[str]:
        """A quick pre-scan (file headers only, ~1 ms a sample, see ``scan_sample``) that names
        every bad file at once instead of dying mid-epoch on the first. ``bad_samples=fail``
        raises; ``skip`` drops those samples with one warning and a count. Returns the names
        to use."""
        bad = {name: problems for name in names if (problems := scan_sample(self.root, name))}
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
            f"{len(problems)} files named by the split files are unreadable or missing: "
            f"{shown}{more}; data.bad_samples=skip would train without those samples"
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
