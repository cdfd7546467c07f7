"""The bad-input matrix: one row per way a run gets broken input, and what segpets does.

The rule for every error row: exactly one ``segpets: error: ...`` line naming the file or config
key, exit code 2, no Python traceback (``HYDRA_FULL_ERROR=1`` shows it), and every file that
existed before the run (data, checkpoints, earlier runs) byte-identical afterwards.
An unknown config *group option* (``model=nope``) is caught before Hydra composes
(``segpets.command.entry.check_group_choices``), so it follows the same rule and lists the choices.

The CLIs run in-process (``segpets.train.main`` with ``sys.argv``: what ``python -m`` runs,
without 10 s of interpreter start per row); tests/test_entrypoints.py runs them as processes.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segpets.eval
import segpets.train
from segpets.data.files import read_split
from segpets.data.oxford_pet import image_path, load_pair, scan_sample, trimap_path
from segpets.errors import DataError
from tests.conftest import assert_one_line_error, cli

BASE = [
    "trainer=cpu",
    "model.width=4",
    "data.image_size=64",
    "data.batch_size=16",  # one batch holds the whole tiny train split: every file is read
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.val_images=null",
]


# --- fixtures and the in-process CLI ------------------------------------------------------
@pytest.fixture
def pets(mini_root: Path, tmp_path: Path) -> Path:
    """10 trainval (9 train, 1 val) + 2 test samples copied from the mini set: a run over it
    reads every file."""
    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    splits = {
        "trainval.txt": read_split(mini_root / "annotations" / "trainval.txt")[:10],
        "test.txt": read_split(mini_root / "annotations" / "test.txt")[:2],
    }
    for split, names in splits.items():
        (root / "annotations" / split).write_text("".join(f"{n} 1 1 1\n" for n in names))
        for name in names:
            shutil.copy(image_path(mini_root, name), image_path(root, name))
            shutil.copy(trimap_path(mini_root, name), trimap_path(root, name))
    return root


def first(root: Path) -> str:
    return read_split(root / "annotations" / "trainval.txt")[0]


def snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


# --- crafted bad files ------------------------------------------------------------------
def png_bomb(path: Path, side: int = 30_000) -> None:
    """A valid PNG header declaring side×side pixels (beyond PIL's bomb limit), no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def trimap_with_value(path: Path, value: int) -> None:
    trimap = np.asarray(Image.open(path)).copy()
    trimap[0, :5] = value
    Image.fromarray(trimap).save(path)


def colour_palette(path: Path) -> None:
    """The trimap as a palette PNG whose indices are right but whose palette shows colours."""
    trimap = Image.fromarray(np.asarray(Image.open(path))).convert("P")
    trimap.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    trimap.save(path)


def keep_lines(path: Path, count: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:count]))


def resize_trimap(path: Path) -> None:
    trimap = Image.open(path)
    trimap.resize((trimap.width + 3, trimap.height)).save(path)


def fake_checkpoint(path: Path, model: dict | None, **extra) -> Path:
    hparams = {"config": {"model": model}} if model else {}
    torch.save({"state_dict": {}, "hyper_parameters": hparams, **extra}, path)
    return path


class RunsCode:
    """A pickle payload that would create ``marker`` when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# --- data rows ----------------------------------------------------------------------------
# id -> (break the data; returns the pattern the one error line must match)
DATA_ROWS: dict[str, Callable[[Path], str]] = {
    "split file missing": lambda r: (
        (r / "annotations" / "test.txt").unlink(),
        re.escape(f"split file not found: '{r / 'annotations' / 'test.txt'}'"),
    )[1],
    "split names a missing image and trimap": lambda r: (
        (r / "annotations" / "trainval.txt").open("a").write("Ghost_1 1 1 1\n"),
        r"split .train.: 2 of its files .* missing: "
        + re.escape(f"'{image_path(r, 'Ghost_1')}' (missing), '{trimap_path(r, 'Ghost_1')}'"),
    )[1],
    "zero-byte image": lambda r: (
        image_path(r, first(r)).write_bytes(b""),
        re.escape(f"'{image_path(r, first(r))}' (empty file)"),
    )[1],
    "non-image bytes named .jpg": lambda r: (
        image_path(r, first(r)).write_bytes(b"<html>not a picture</html>" * 20),
        re.escape(f"'{image_path(r, first(r))}' (not an image)"),
    )[1],
    "image above the decompression-bomb limit": lambda r: (
        png_bomb(image_path(r, first(r))),
        re.escape(f"'{image_path(r, first(r))}' (over the decompression-bomb limit)"),
    )[1],
    "image/trimap size mismatch": lambda r: (
        resize_trimap(trimap_path(r, first(r))),
        re.escape(f"'{image_path(r, first(r))}' (") + r"\d+x\d+, but its trimap is \d+x\d+\)",
    )[1],
    "truncated JPEG (found when decoded, in a DataLoader worker)": lambda r: (
        truncate(image_path(r, first(r))),
        re.escape(f"cannot read image '{image_path(r, first(r))}'") + ".*truncated",
    )[1],
    "trimap values outside {1,2,3}": lambda r: (
        trimap_with_value(trimap_path(r, first(r)), 7),
        re.escape(f"trimap '{trimap_path(r, first(r))}' has values [7] outside {{1, 2, 3}}"),
    )[1],
    "palette trimap whose colours are not grey levels": lambda r: (
        colour_palette(trimap_path(r, first(r))),
        re.escape(f"trimap '{trimap_path(r, first(r))}' is a palette image whose colours are"),
    )[1],
    "empty validation split (trainval shorter than data.val_every)": lambda r: (
        keep_lines(r / "annotations" / "trainval.txt", 9),
        re.escape(f"the val split is empty: '{r / 'annotations' / 'trainval.txt'}' lists 9 ")
        + r"image\(s\) and data\.val_every=10",
    )[1],
    "a trainval name that is also a test name": lambda r: (
        (r / "annotations" / "test.txt").open("a").write(f"{first(r)} 1 1 1\n"),
        re.escape(f"1 name(s) of '{r / 'annotations' / 'trainval.txt'}' are also in ")
        + re.escape(f"'{r / 'annotations' / 'test.txt'}' ({first(r)})")
        + r".*data\.allow_test_overlap=true",
    )[1],
}


@pytest.mark.parametrize("row", list(DATA_ROWS))
def test_data_row(row: str, pets: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    pattern = DATA_ROWS[row](pets)
    before = snapshot(pets)
    workers = ["data.num_workers=1"] if "worker" in row else []
    args = [*BASE, f"data.root={pets}", *workers]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert snapshot(pets) == before
    assert not list(tmp_path.glob("outputs/**/*.ckpt"))


def test_data_root_missing(tmp_path: Path, monkeypatch, capfd) -> None:
    args = [*BASE, f"data.root={tmp_path / 'nowhere'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, re.escape(f"not found at '{tmp_path / 'nowhere'}'"))
    assert "data.root=" in line


def test_every_bad_file_is_named_at_once(pets: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    names = read_split(pets / "annotations" / "trainval.txt")
    image_path(pets, names[0]).write_bytes(b"")
    trimap_path(pets, names[3]).write_bytes(b"junk")
    code, err = cli(segpets.train.main, [*BASE, f"data.root={pets}"], tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"^segpets: error: split .train.: 2 of its files ")
    assert str(image_path(pets, names[0])) in line and str(trimap_path(pets, names[3])) in line
    assert "data.bad_samples=skip" in line


def test_bad_samples_skip_trains_without_them(pets: Path, tmp_path, monkeypatch, capfd) -> None:
    """``data.bad_samples=skip``: pre-scan finds go with one warning and a count; a file that
    breaks only when decoded is skipped (and named) when its batch is built."""
    names = read_split(pets / "annotations" / "trainval.txt")
    image_path(pets, names[0]).write_bytes(b"")  # found by the pre-scan
    trimap_path(pets, names[1]).write_bytes(b"\x89PNG junk")  # found by the pre-scan
    truncate(image_path(pets, names[2]))  # found only when decoded
    args = [*BASE, f"data.root={pets}", "data.bad_samples=skip", "test=false"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    logged = cli.stdout + err
    assert "skipping 2 of 9 samples of split 'train'" in logged  # the 10th line is val
    assert "skipping a bad sample (data.bad_samples=skip): cannot read image '" in logged
    assert str(image_path(pets, names[2])) in logged
    assert list(tmp_path.glob("outputs/train/runs/*/checkpoints/last.ckpt"))


# --- config rows --------------------------------------------------------------------------
CONFIG_ROWS = {  # override -> pattern of the one error line (exit 2)
    "optimizer.lr=0": r"optimizer\.lr must be > 0, got 0",
    "optimizer.lr=-0.001": r"optimizer\.lr must be > 0, got -0\.001",
    "data.batch_size=0": r"data\.batch_size must be > 0, got 0",
    "data.image_size=0": r"data\.image_size must be > 0, got 0",
    "data.image_size=-64": r"data\.image_size must be > 0, got -64",
    "optimizer.weight_decay=-1": r"optimizer/scheduler: Invalid weight_decay value: -1",
    "data.bad_samples=ignore": r"data\.bad_samples must be 'fail' or 'skip', got 'ignore'",
    "callbacks.nonfinite_loss.action=retry": (
        r"callbacks\.nonfinite_loss\.action must be .stop. or .skip., got .retry."
    ),
}


@pytest.mark.parametrize("override", list(CONFIG_ROWS))
def test_config_row(override: str, pets: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    args = [*BASE, f"data.root={pets}", override]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, CONFIG_ROWS[override])
    assert not (tmp_path / "outputs").exists() or not list(tmp_path.glob("outputs/**/*.ckpt"))


@pytest.mark.parametrize(
    "override,choices",
    [("model=nope", "res34_unet, smp, unet"), ("optimizer=adam,nope", "adam, adamw, sgd")],
)
def test_unknown_group_option_lists_the_choices(override, choices, tmp_path, monkeypatch, capfd):
    code, err = cli(segpets.train.main, [override], tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"no such option in config group '\w+'")
    assert line.endswith(f"choices: {choices}")
    assert not (tmp_path / "outputs").exists()


# --- checkpoint rows ----------------------------------------------------------------------
def unet_model() -> dict:
    return {"_target_": "segpets.models.UNet", "in_channels": 3, "num_classes": 1, "width": 4}


CKPT_ROWS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "checkpoint of another model type": (
        lambda d: fake_checkpoint(
            d / "res34.ckpt", {"_target_": "segpets.models.ResNet34UNet", "num_classes": 1}
        ),
        r"is a checkpoint of another model \(model\._target_: 'segpets\.models\.ResNet34UNet'"
        r" there, 'segpets\.models\.UNet' here",
    ),
    "checkpoint of another model width": (
        lambda d: fake_checkpoint(d / "w8.ckpt", {**unet_model(), "width": 8}),
        r"model\.width: 8 there, 4 here",
    ),
    "a Lightning checkpoint that is not segpets'": (
        lambda d: fake_checkpoint(d / "other.ckpt", None, epoch=3, global_step=10),
        r"is not a segpets training checkpoint",
    ),
    "corrupt checkpoint file": (
        lambda d: (
            (d / "corrupt.ckpt").write_bytes(b"PK\x03\x04" + os.urandom(300)) and d / "corrupt.ckpt"
        ),
        r"ckpt_path: cannot load checkpoint '.*corrupt\.ckpt'",
    ),
    "checkpoint path that does not exist": (
        lambda d: d / "nope.ckpt",
        r"ckpt_path: no such file '.*nope\.ckpt'",
    ),
}


@pytest.mark.parametrize("row", list(CKPT_ROWS))
def test_checkpoint_row(row: str, pets: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    make, pattern = CKPT_ROWS[row]
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    path = make(ckpts)
    before = snapshot(ckpts)
    args = [*BASE, f"data.root={pets}", f"ckpt_path={path}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert snapshot(ckpts) == before


@pytest.mark.parametrize("entry", [segpets.train.main, segpets.eval.main])
def test_crafted_pickle_checkpoint_never_runs(entry, pets, tmp_path, monkeypatch, capfd):
    """``torch.load(weights_only=True)`` everywhere segpets loads: the payload stays inert."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, evil)
    args = [f"ckpt_path={evil}", f"data.root={pets}"]
    args += BASE if entry is segpets.train.main else []
    code, err = cli(entry, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, re.escape(f"cannot load checkpoint '{evil}'"))
    assert not marker.exists()


def test_existing_checkpoints_are_never_overwritten(pets, tmp_path, monkeypatch, capfd) -> None:
    old_run = tmp_path / "old_run"
    (old_run / "checkpoints").mkdir(parents=True)
    (old_run / "checkpoints" / "last.ckpt").write_bytes(b"precious")
    args = [*BASE, f"data.root={pets}", f"hydra.run.dir={old_run}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"already holds checkpoints \(last\.ckpt\)")
    assert f"ckpt_path={old_run / 'checkpoints' / 'last.ckpt'}" in line
    assert (old_run / "checkpoints" / "last.ckpt").read_bytes() == b"precious"


def test_full_error_shows_the_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["segpets.train", *BASE, f"data.root={tmp_path / 'no'}"])
    monkeypatch.setattr(inspect.unwrap(segpets.train.main), "__module__", "__main__")
    with pytest.raises(DataError, match="not found at"):
        segpets.train.main()


# --- images that must load ----------------------------------------------------------------
def save_as(src: Path, dst: Path, mode: str, fmt: str) -> None:
    image = Image.open(src).convert("RGB")
    converted = image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else None
    (converted or image.convert(mode)).save(dst, format=fmt)


@pytest.mark.parametrize(
    "mode,fmt", [("L", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "GIF")]
)
def test_odd_image_modes_load(mode: str, fmt: str, pets: Path) -> None:
    """Grayscale, palette, RGBA, CMYK (and GIF) files named .jpg, as in the real dataset."""
    name = first(pets)
    save_as(image_path(pets, name), image_path(pets, name), mode, fmt)
    assert Image.open(image_path(pets, name)).mode == mode
    assert scan_sample(pets, name) == []
    image, mask = load_pair(pets, name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[:2] == mask.shape


# --- predict ------------------------------------------------------------------------------
def test_predict_on_a_non_image_file(tmp_path: Path, monkeypatch, capfd) -> None:
    """segpets.predict (issue 3) skips unreadable inputs, names each one, writes nothing for
    them and exits 3 (its documented "some inputs skipped" code), without a traceback."""
    predict = pytest.importorskip("segpets.predict")
    from omegaconf import OmegaConf

    from segpets.command.build import build_module
    from tests.conftest import compose_train

    cfg = compose_train(["model.width=4", "data.image_size=64"], tmp_path)
    module = build_module(cfg, with_optimizer=False)
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": config}}, ckpt)
    bogus = tmp_path / "holiday.jpg"
    bogus.write_bytes(b"%PDF-1.4 not an image")
    out = tmp_path / "masks"
    args = [f"ckpt_path={ckpt}", f"input={bogus}", f"output_dir={out}", "progress_bar=false"]
    code, err = cli(predict.main, args, tmp_path, monkeypatch, capfd)
    assert code == 3 and "Traceback" not in err, err[-3000:]
    assert f"segpets: skipped unreadable input: cannot read image '{bogus}'" in err
    assert not list(out.glob("*.png"))
