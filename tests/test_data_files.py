"""Split and trimap files as other tools write them (../shared/cases): byte-order marks, CRLF,
repeated names, palette trimaps, trimaps without a pet; and data.bad_samples=skip with the
cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

import segpets.train
from segpets.data.files import read_split
from segpets.data.oxford_pet import image_path, load_mask, species_and_breeds, trimap_path
from segpets.errors import DataError
from tests.conftest import CASES, assert_one_line_error, cli, compose_train
from tests.test_bad_inputs import BASE, pets, truncate  # noqa: F401


def case(*parts: str) -> Path:
    path = CASES.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found (set SEGPETS_CASES)")
    return path


def test_split_file_with_bom_and_crlf_reads_every_name() -> None:
    names = read_split(case("split-files", "trainval_bom_crlf.txt"))
    assert len(names) == 10 and names[0] == "Abyssinian_100"
    assert not any("\ufeff" in n or "\r" in n for n in names)


def test_list_file_with_bom_and_crlf_gives_species(tmp_path: Path) -> None:
    """The eval report's species/breed table reads list.txt the same way (species from the
    file, not from the capitalisation rule it falls back on)."""
    (tmp_path / "annotations").mkdir()
    text = "sphynx_1 1 1 1\r\nBeagle_1 2 2 1\r\n"
    (tmp_path / "annotations" / "list.txt").write_bytes("\ufeff".encode() + text.encode())
    labels = species_and_breeds(tmp_path, ["sphynx_1", "Beagle_1"])
    assert labels == {"sphynx_1": ("cat", "sphynx"), "Beagle_1": ("dog", "Beagle")}


def test_repeated_name_is_used_once_with_a_warning(caplog) -> None:
    path = case("split-files", "trainval_duplicate.txt")
    listed = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    assert listed.count("Abyssinian_101") == 2
    with caplog.at_level(logging.WARNING):
        names = read_split(path)
    assert names.count("Abyssinian_101") == 1 and len(names) == len(set(listed))
    assert "more than once" in caplog.text and "Abyssinian_101" in caplog.text


def test_test_overlap_can_be_allowed_explicitly(pets: Path, tmp_path: Path) -> None:  # noqa: F811
    name = read_split(pets / "annotations" / "trainval.txt")[0]
    (pets / "annotations" / "test.txt").open("a").write(f"{name} 1 1 1\n")
    overrides = [f"data.root={pets}", "data.image_size=64"]
    with pytest.raises(DataError, match="also in"):
        instantiate(compose_train(overrides, tmp_path).data).dataset("test")
    dm = instantiate(compose_train([*overrides, "data.allow_test_overlap=true"], tmp_path).data)
    assert name in dm.split_names("test") and name in dm.split_names("train")


@pytest.mark.parametrize("variant", ["permuted", "quantized"])
def test_palette_trimaps_are_decoded_through_their_palette(variant: str, mini_root: Path):
    """The label is what the palette shows, never the raw index: the permuted file's indices
    swap pet and background, the quantised one's are 0-2."""
    path = case("palette-trimap", f"Abyssinian_100_{variant}.png")
    assert Image.open(path).mode == "P"
    expected = load_mask(trimap_path(mini_root, "Abyssinian_100"))
    assert 0 < expected.mean() < 1
    assert np.array_equal(load_mask(path), expected)


def test_trimaps_without_pet_pixels_are_named_in_one_warning(pets, tmp_path, caplog):  # noqa: F811
    names = read_split(pets / "annotations" / "trainval.txt")
    for name in names[:2]:
        size = Image.open(trimap_path(pets, name)).size
        Image.fromarray(np.full(size[::-1], 2, np.uint8)).save(trimap_path(pets, name))
    dm = instantiate(compose_train([f"data.root={pets}", "data.image_size=64"], tmp_path).data)
    with caplog.at_level(logging.WARNING):
        assert len(dm.dataset("train")) == 9
    warnings = [r.getMessage() for r in caplog.records if "no pet pixel" in r.getMessage()]
    assert len(warnings) == 1 and names[0] in warnings[0] and names[1] in warnings[0]
    assert "2 trimap(s)" in warnings[0]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_cache_follows_the_bad_sample_policy(policy, pets, tmp_path, monkeypatch, capfd):  # noqa: F811
    """A truncated JPEG passes the header pre-scan and breaks the cache build: with
    data.bad_samples=skip the run trains without it (naming it), with fail it is one line."""
    bad = read_split(pets / "annotations" / "trainval.txt")[2]
    truncate(image_path(pets, bad))
    args = [*BASE, f"data.root={pets}", f"data.bad_samples={policy}", "data.cache=true"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", "test=false"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    if policy == "fail":
        assert_one_line_error(code, err, f"cannot read image '{image_path(pets, bad)}'")
        return
    assert code == 0, err[-3000:]
    logged = cli.stdout + err
    skipped = "skipping a bad sample (data.bad_samples=skip): cannot read image "
    skipped += f"'{image_path(pets, bad)}'"
    assert skipped in logged
    assert list(tmp_path.glob("outputs/train/runs/*/checkpoints/last.ckpt"))
    # the entry built with skip records the sample: a later run with fail still refuses it
    args[args.index("data.bad_samples=skip")] = "data.bad_samples=fail"
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, f"cannot read image '{image_path(pets, bad)}'")


def test_mini_set_copy_is_unchanged_by_the_rules(mini_root: Path, tmp_path: Path) -> None:
    """The official files have no BOM, repeats or overlap: the mini split sizes stand."""
    dm = instantiate(compose_train([f"data.root={mini_root}"], tmp_path).data)
    assert {s: len(dm.split_names(s)) for s in ("train", "val", "test")} == {
        "train": 180, "val": 20, "test": 198,
    }  # fmt: skip


@pytest.mark.slow
def test_eval_report_counts_empty_ground_truths(pets, tiny_ckpt, tmp_path, monkeypatch, capfd):  # noqa: F811
    """One of the two test trimaps has no pet pixel: the report says so and gives the
    per-image Dice of the other image beside the headline."""
    import csv
    import json

    import segpets.eval

    empty = read_split(pets / "annotations" / "test.txt")[0]
    size = Image.open(trimap_path(pets, empty)).size
    Image.fromarray(np.full(size[::-1], 2, np.uint8)).save(trimap_path(pets, empty))
    args = [f"ckpt_path={tiny_ckpt}", f"data.root={pets}", "hydra.run.dir=ev", "progress_bar=false"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "ev" / "per_image.csv").open())}
    other = next(float(r["dice"]) for n, r in rows.items() if n != empty)
    assert report["images"] == 2 and report["images_empty_truth"] == 1
    assert report["test/dice_without_empty_truth"] == pytest.approx(other, abs=1e-6)
    assert "1 of 2 test images have no pet pixel in their ground truth" in cli.stdout
