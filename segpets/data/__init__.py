"""Data: official-layout parsing and loading, the synthetic quickstart set, DataModules."""

from segpets.data.datamodule import PetDataModule, SyntheticPetDataModule
from segpets.data.oxford_pet import PetSegmentationDataset, load_mask, load_rgb, read_split

__all__ = [
    "PetDataModule",
    "SyntheticPetDataModule",
    "PetSegmentationDataset",
    "load_mask",
    "load_rgb",
    "read_split",
]
