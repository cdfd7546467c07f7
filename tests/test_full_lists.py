"""The complete official split lists (../shared/data/oxford-pet-lists, no images): segpets'
split rule and the eval report's species/breed labels at full scale, from the lists alone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate

from segpets.data.files import read_lines, read_split
from segpets.data.oxford_pet import species_and_breeds
from tests.conftest import FULL_LISTS, compose_train


@pytest.fixture(scope="module")
def lists_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root whose annotations/ is the official lists folder and which has no images:
    whatever needs an image fails, so these tests show the split logic does not."""
    if not (FULL_LISTS / "trainval.txt").is_file():
        pytest.skip(f"official lists not found at {FULL_LISTS} (set SEGPETS_FULL_LISTS)")
    root = tmp_path_factory.mktemp("lists") / "oxford-iiit-pet"
    root.mkdir()
    (root / "annotations").symlink_to(FULL_LISTS.resolve(), target_is_directory=True)
    return root


def test_official_split_sizes(lists_root: Path, tmp_path: Path) -> None:
    dm = instantiate(compose_train([f"data.root={lists_root}"], tmp_path).data)
    sizes = {split: len(dm.split_names(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 3312, "val": 368, "test": 3669}
    trainval = read_split(lists_root / "annotations" / "trainval.txt")
    assert len(trainval) == 3680 and dm.split_names("val") == trainval[9::10]
    assert not set(trainval) & set(dm.split_names("test"))  # the official split is disjoint
    assert not (lists_root / "images").exists()


def test_species_and_breeds_as_the_eval_report_reads_them(lists_root: Path) -> None:
    """37 breeds (12 cat, 25 dog): the report's breed (the name without ``_<n>``) and species
    (list.txt's SPECIES column) agree with list.txt's class ids for all 7,349 names."""
    rows = [line.split() for line in read_lines(lists_root / "annotations" / "list.txt")]
    assert len(rows) == 7349
    labels = species_and_breeds(lists_root, [row[0] for row in rows])
    breeds = {breed: species for species, breed in labels.values()}
    assert len(breeds) == 37
    assert Counter(breeds.values()) == {"dog": 25, "cat": 12}
    class_of_breed = {labels[name][1]: class_id for name, class_id, *_ in rows}
    assert sorted(map(int, class_of_breed.values())) == list(range(1, 38))  # one id a breed
    for name, _, species_id, _ in rows:  # species straight from the file, never guessed
        assert labels[name][0] == {"1": "cat", "2": "dog"}[species_id]
    assert all(name[0].isupper() == (labels[name][0] == "cat") for name in labels)
