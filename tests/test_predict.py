"""segpets.predict: original sizes for every image mode, skipped inputs, no overwriting."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from segpets.errors import ConfigError
from segpets.predict import SKIPPED_EXIT_CODE, predict
from tests.conftest import CASES, compose_config, run_segpets


@pytest.fixture(scope="module")
def inputs(mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini set's RGBA PNG and GIF (both named .jpg), grayscale/palette/CMYK versions of a
    real dog photo at odd sizes, and one file that is not an image."""
    folder = tmp_path_factory.mktemp("predict-inputs")
    for name in ("Abyssinian_5", "Abyssinian_34"):
        shutil.copy(mini_root / "images" / f"{name}.jpg", folder)
    dog = Image.open(mini_root / "images" / "american_bulldog_100.jpg").convert("RGB")
    dog.convert("L").resize((123, 77)).save(folder / "gray.png")
    dog.convert("P").resize((90, 131)).save(folder / "palette.png")
    dog.convert("CMYK").resize((101, 64)).save(folder / "cmyk.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated, not a JPEG")
    return folder


def compose_predict(overrides: list[str]):
    return compose_config("predict", [*overrides, "progress_bar=false"])


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_predict_cli_sizes_modes_and_skips(tiny_ckpt: Path, inputs: Path, tmp_path: Path):
    out = tmp_path / "masks"
    before = files_under(tmp_path)
    args = [f"ckpt_path={tiny_ckpt}", f"input={inputs}", f"output_dir={out}", "batch_size=2"]
    args += ["overlay=true", "probabilities=true", "tta=hflip", "progress_bar=false"]
    proc = run_segpets("predict", args, tmp_path, timeout=300, expect=SKIPPED_EXIT_CODE)
    assert "Traceback" not in proc.stderr and str(inputs / "broken.jpg") in proc.stderr
    assert all(p.is_relative_to(out) for p in files_under(tmp_path) - before)  # nothing outside
    images = sorted(p for p in inputs.iterdir() if p.name != "broken.jpg")
    assert len(images) == 5
    for image in images:
        size = Image.open(image).size  # (W, H) as stored
        for kind in ("mask", "overlay", "prob"):
            written = Image.open(out / f"{image.stem}_{kind}.png")
            assert written.size == size, (image.name, kind)
        mask = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        assert set(np.unique(mask)) <= {0, 255}
    assert not (out / "broken_mask.png").exists()


@pytest.mark.slow
def test_predict_refuses_to_overwrite_and_thresholds(tiny_ckpt: Path, inputs: Path, tmp_path):
    out = tmp_path / "out"
    glob = str(inputs / "*.png")
    base = [f"ckpt_path={tiny_ckpt}", f"input={glob}", f"output_dir={out}"]
    assert predict(compose_predict([*base, "threshold=0.3"])) == []
    masks = sorted(out.glob("*_mask.png"))
    assert [m.name for m in masks] == ["gray_mask.png", "palette_mask.png"]
    stamps = {m: m.stat().st_mtime_ns for m in masks}
    low = {m: np.asarray(Image.open(m)) > 0 for m in masks}
    with pytest.raises(ConfigError, match="already exist.*overwrite=true"):
        predict(compose_predict([*base, "threshold=0.7"]))
    assert {m: m.stat().st_mtime_ns for m in masks} == stamps  # untouched
    assert predict(compose_predict([*base, "threshold=0.7", "overwrite=true"])) == []
    for m in masks:  # a higher threshold only removes pixels
        high = np.asarray(Image.open(m)) > 0
        assert not (high & ~low[m]).any()


def test_predict_rejects_bad_options(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    base = [f"ckpt_path={tmp_path / 'none.ckpt'}", f"input={image}", f"output_dir={tmp_path}/o"]
    with pytest.raises(ConfigError, match="threshold"):
        predict(compose_predict([*base, "threshold=1.5"]))
    with pytest.raises(ConfigError, match="tta"):
        predict(compose_predict([*base, "tta=vflip"]))
    with pytest.raises(ConfigError, match="no such file or folder"):
        predict(compose_predict([*base[:1], f"input={tmp_path}/nothing", base[2]]))
    with pytest.raises(ConfigError, match="ckpt_path: no such file"):
        predict(compose_predict(base))


# EXIF Orientation → the PIL transpose a viewer applies (ImageOps.exif_transpose)
SHOWN_BY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# the transpose that stores an upright photo so that its tag shows it upright again
UNDO = {**SHOWN_BY, 6: SHOWN_BY[8], 8: SHOWN_BY[6]}


def test_predict_segments_photos_as_displayed_for_every_exif_orientation(
    tiny_ckpt: Path, mini_root: Path, tmp_path: Path
) -> None:
    """A photo stored turned, with the EXIF tag that turns it back (what phones write), gets the
    mask, overlay and probabilities of the displayed photo, at the displayed size."""
    upright = Image.open(mini_root / "images" / "Abyssinian_100.jpg").convert("RGB")
    upright = upright.crop((0, 0, 301, 233))  # odd and not square: a turn changes W×H
    folder = tmp_path / "photos"
    folder.mkdir()
    upright.save(folder / "orientation_1.png")
    for tag, undo in UNDO.items():
        stored = upright.transpose(undo)
        exif = Image.Exif()
        exif[0x0112] = tag  # Orientation
        stored.save(folder / f"orientation_{tag}.png", exif=exif)
        assert ImageOps.exif_transpose(Image.open(folder / f"orientation_{tag}.png")).size == (
            301,
            233,
        )
    out = tmp_path / "out"
    cfg = compose_predict(
        [f"ckpt_path={tiny_ckpt}", f"input={folder}", f"output_dir={out}", "overlay=true"]
        + ["probabilities=true"]
    )
    assert predict(cfg) == []
    reference = {k: np.asarray(Image.open(out / f"orientation_1_{k}.png")) for k in KINDS}
    assert reference["mask"].shape == (233, 301) and 0 < reference["mask"].mean() < 255
    for tag in range(2, 9):
        for kind in KINDS:
            got = np.asarray(Image.open(out / f"orientation_{tag}_{kind}.png"))
            assert np.array_equal(got, reference[kind]), f"orientation {tag}: {kind} differs"


KINDS = ("mask", "overlay", "prob")


def test_predict_phone_photo_case(tiny_ckpt: Path, tmp_path: Path) -> None:
    """../shared/cases/exif/phone_photo.jpg: stored 500×394 with Orientation 6, shown 394×500."""
    photo = CASES / "exif" / "phone_photo.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found (set SEGPETS_CASES)")
    out = tmp_path / "out"
    cfg = compose_predict([f"ckpt_path={tiny_ckpt}", f"input={photo}", f"output_dir={out}"])
    assert predict(cfg) == []
    shown = ImageOps.exif_transpose(Image.open(photo))
    assert Image.open(photo).size == (500, 394) and shown.size == (394, 500)
    assert Image.open(out / "phone_photo_mask.png").size == (394, 500)
    # the same pixels turned upright by hand and saved without a tag: the very same mask
    shown.convert("RGB").save(tmp_path / "by_hand.png")
    cfg = compose_predict([f"ckpt_path={tiny_ckpt}", f"input={tmp_path / 'by_hand.png'}"])
    cfg.output_dir = str(out)
    assert predict(cfg) == []
    by_hand = np.asarray(Image.open(out / "by_hand_mask.png"))
    assert np.array_equal(np.asarray(Image.open(out / "phone_photo_mask.png")), by_hand)
