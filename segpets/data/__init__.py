"""Data: reading files, the Oxford-IIIT Pet layout, your own image/mask folders, the
synthetic quickstart set, and the DataModule machinery they share."""

from segpets.data.datamodule import SegmentationDataModule
from segpets.data.dataset import SegmentationDataset
from segpets.data.files import load_rgb, read_split
from segpets.data.folder import FolderDataModule
from segpets.data.oxford_pet import PetDataModule, load_mask
from segpets.data.synthetic import SyntheticPetDataModule

__all__ = [
    "FolderDataModule",
    "PetDataModule",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SyntheticPetDataModule",
    "load_mask",
    "load_rgb",
    "read_split",
]
