"""Pictures of every bit depth read as viewers show them (issue 23.2): 16-bit grey and RGB,
32-bit integer and float pictures scaled by their range into 8-bit RGB, in the dataset and in
predict; masks only in lossless formats, 16-bit masks read as stored."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segpets.data.files import load_rgb
from segpets.data.oxford_pet import image_path, load_pair, load_trimap, trimap_path
from segpets.data.pixels import to_rgb8
from segpets.errors import DataError
from tests.test_bad_inputs import first, pets  # noqa: F401  (the fixture)
from tests.test_folder_data import folder_dm, make_folder

PHOTO = "Abyssinian_100"  # a real mini-set photo (JPEG)


def photo(mini_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (H, W, 3), grey (H, W)) uint8 of a real mini-set photo."""
    img = Image.open(mini_root / "images" / f"{PHOTO}.jpg")
    return np.asarray(img.convert("RGB")), np.asarray(img.convert("L"))


def write(kind: str, rgb: np.ndarray, grey: np.ndarray, path: Path) -> np.ndarray:
    """Write ``path`` as ``kind``; returns the 8-bit RGB picture it holds, as viewers show it."""
    grey3 = np.repeat(grey[..., None], 3, axis=2)
    if kind == "16-bit grey PNG":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path, format="PNG")
    elif kind == "16-bit grey TIFF, big-endian":
        sixteen(grey.astype(np.uint16) * 257, "I;16B").save(path, format="TIFF")
    elif kind == "48-bit RGB PNG":
        cv2.imwrite(str(path.with_suffix(".png")), rgb[..., ::-1].astype(np.uint16) * 257)
        path.with_suffix(".png").rename(path)
        return rgb
    elif kind == "64-bit RGBA PNG":
        rgba = np.dstack([rgb[..., ::-1], np.full(grey.shape, 255, np.uint8)])
        cv2.imwrite(str(path.with_suffix(".png")), rgba.astype(np.uint16) * 257)
        path.with_suffix(".png").rename(path)
        return rgb
    elif kind == "32-bit signed integer TIFF":
        Image.fromarray(grey.astype(np.int32) * 2**23).save(path, format="TIFF")
    elif kind == "32-bit float TIFF, 0-1":
        Image.fromarray(grey.astype(np.float32) / 255).save(path, format="TIFF")
    elif kind == "32-bit float TIFF, 0-255":
        Image.fromarray(grey.astype(np.float32)).save(path, format="TIFF")
    elif kind == "LA PNG":
        Image.fromarray(grey).convert("LA").save(path, format="PNG")
    elif kind == "CMYK TIFF":
        Image.fromarray(rgb).convert("CMYK").save(path, format="TIFF")
        return rgb
    return grey3


KINDS = [
    "16-bit grey PNG",
    "16-bit grey TIFF, big-endian",
    "48-bit RGB PNG",
    "64-bit RGBA PNG",
    "32-bit signed integer TIFF",
    "32-bit float TIFF, 0-1",
    "32-bit float TIFF, 0-255",
    "LA PNG",
    "CMYK TIFF",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_bit_depth_reads_as_its_8_bit_picture(kind: str, mini_root: Path, tmp_path) -> None:
    rgb, grey = photo(mini_root)
    path = tmp_path / "picture.jpg"  # named .jpg, as the real dataset's odd files are
    expected = write(kind, rgb, grey, path)
    got = load_rgb(path)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 1, kind
    assert load_rgb(path, upright=True).shape == expected.shape  # predict's path too


def test_pa_and_one_bit_pictures_convert(mini_root: Path) -> None:
    rgb, _ = photo(mini_root)
    palette = Image.fromarray(rgb).convert("P")
    assert (to_rgb8(palette.convert("PA"), Path("x")) == np.asarray(palette.convert("RGB"))).all()
    assert to_rgb8(Image.new("1", (5, 4), 1), Path("x")).tolist() == [[[255] * 3] * 5] * 4


def test_pictures_that_would_read_flat_are_refused(tmp_path: Path) -> None:
    """8-bit data in a 32-bit integer TIFF would read as black, floats beyond 65535 have no
    range to read them by: each is one error naming the file, never a silent black picture."""
    values = np.arange(64, dtype=np.int32).reshape(8, 8) * 3
    Image.fromarray(values).save(tmp_path / "int32.tif")
    with pytest.raises(DataError, match=r"int32\.tif' \(32-bit integer.*one flat grey"):
        load_rgb(tmp_path / "int32.tif")
    Image.fromarray(values.astype(np.float32) * 10_000).save(tmp_path / "huge.tif")
    with pytest.raises(
        DataError, match=r"huge\.tif' \(32-bit float\) holds values up to 1.89e\+06"
    ):
        load_rgb(tmp_path / "huge.tif")
    Image.fromarray(np.zeros((4, 4), np.int32)).save(tmp_path / "black.tif")  # flat as stored
    assert (load_rgb(tmp_path / "black.tif") == 0).all()


def test_bits_per_sample_below_16_set_the_range(tmp_path: Path) -> None:
    """A 12-bit camera picture in a 16-bit TIFF (BitsPerSample 12): 4095 is white."""
    Image.fromarray(np.array([[0, 4095], [2048, 1000]], np.uint16)).save(tmp_path / "c.tif")
    img = Image.open(tmp_path / "c.tif")
    img.tag_v2[258] = (12,)  # PIL writes 16; a camera's file says 12
    assert to_rgb8(img, tmp_path / "c.tif")[..., 0].tolist() == [[0, 255], [128, 62]]


def test_a_declared_range_wins(tmp_path: Path) -> None:
    values = np.array([[0.0, 2.0], [4.0, 1.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif", tiffinfo={340: 0.0, 341: 4.0})
    assert load_rgb(tmp_path / "f.tif")[..., 0].tolist() == [[0, 128], [255, 64]]


def test_dataset_reads_a_16_bit_image_as_its_8_bit_copy(pets: Path) -> None:  # noqa: F811
    name = first(pets)
    image8, mask8 = load_pair(pets, name)
    grey = np.asarray(Image.fromarray(image8).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(image_path(pets, name), format="PNG")
    image16, mask16 = load_pair(pets, name)
    assert (image16 == np.repeat(grey[..., None], 3, axis=2)).all()
    assert (mask16 == mask8).all()


def test_predict_segments_a_16_bit_copy_as_the_8_bit_one(tiny_ckpt: Path, mini_root, tmp_path):
    """The same photo as 8-bit grey, 16-bit grey, 8-bit RGB and 48-bit RGB PNGs: predict gives
    the 16-bit copies the masks of the 8-bit ones (not all one value)."""
    from segpets.predict import predict
    from tests.conftest import compose_config

    rgb, grey = photo(mini_root)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(grey).save(inputs / "grey8.png")
    write("16-bit grey PNG", rgb, grey, inputs / "grey16.png")
    Image.fromarray(rgb).save(inputs / "rgb8.png")
    write("48-bit RGB PNG", rgb, grey, inputs / "rgb48.png")
    out = tmp_path / "masks"
    args = [f"ckpt_path={tiny_ckpt}", f"input={inputs}", f"output_dir={out}"]
    cfg = compose_config("predict", [*args, "progress_bar=false"])
    assert predict(cfg) == []

    def mask(name: str) -> np.ndarray:
        return np.asarray(Image.open(out / f"{name}_mask.png"))

    for eight, deep in (("grey8", "grey16"), ("rgb8", "rgb48")):
        assert (mask(eight) == mask(deep)).all(), deep
        assert 0 < (mask(eight) > 0).mean() < 1


# --- masks --------------------------------------------------------------------------------
def resave_masks(root: Path, fmt: str, suffix: str, **options) -> None:
    for path in sorted((root / "masks").glob("*.png")):
        Image.open(path).convert("L").save(path.with_suffix(suffix), format=fmt, **options)
        path.unlink()


def test_jpeg_masks_are_refused_naming_the_file(mini_root: Path, tmp_path: Path) -> None:
    """``data.mask_ext=.jpg``: JPEG turns a 0/255 mask's edges into every value in between,
    which ``foreground=null`` would read as pet; refused, naming every such mask at once."""
    root = make_folder(mini_root, tmp_path / "lossy", count=6)
    resave_masks(root, "JPEG", ".jpg", quality=95)
    dm = folder_dm(root, tmp_path, "data.mask_ext=.jpg", "data.split_fractions=[0.5,0.5,0]")
    with pytest.raises(DataError) as caught:
        dm.dataset("train")
    message = str(caught.value)
    assert "is a JPEG file: lossy compression changes label values" in message
    assert message.count(str(root / "masks")) == 3  # all 3 train masks named


def sixteen(values: np.ndarray, mode: str) -> Image.Image:
    """``values`` as a 16-bit picture of PIL ``mode`` (I;16 little-, I;16B big-endian)."""
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, values.shape[::-1], values.astype(dtype).tobytes())


@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("TIFF", "I;16B")])
def test_16_bit_masks_read_as_stored(fmt: str, mode: str, mini_root: Path, tmp_path: Path):
    """16-bit masks are label maps read by value (never rescaled): a 0/1/2/255 label map as
    16-bit PNG or big-endian TIFF decodes like its 8-bit original; so do 16-bit trimaps."""
    root = make_folder(mini_root, tmp_path / "labels", labels=True, count=4)
    dm8 = folder_dm(root, tmp_path, "data.ignore=255", "data.split_fractions=[0.5,0.5,0]")
    names = sorted(p.stem for p in (root / "masks").glob("*.png"))
    expected = {name: dm8.source.load_mask(name) for name in names}
    suffix = ".png" if fmt == "PNG" else ".tif"
    for name in names:
        labels = np.asarray(Image.open(root / "masks" / f"{name}.png"))
        (root / "masks" / f"{name}.png").unlink()
        sixteen(labels, mode).save(root / "masks" / f"{name}{suffix}", format=fmt)
    assert Image.open(root / "masks" / f"{names[0]}{suffix}").mode == mode
    dm16 = folder_dm(
        root,
        tmp_path,
        "data.ignore=255",
        f"data.mask_ext={suffix}",
        "data.split_fractions=[0.5,0.5,0]",
    )
    for name in names:
        assert (dm16.source.load_mask(name) == expected[name]).all(), name

    trimap = load_trimap(trimap_path(mini_root, PHOTO))
    sixteen(trimap, mode).save(tmp_path / f"t{suffix}", format=fmt)
    assert (load_trimap(tmp_path / f"t{suffix}") == trimap).all()


def test_lossy_trimaps_are_refused(mini_root: Path, tmp_path: Path) -> None:
    trimap = load_trimap(trimap_path(mini_root, PHOTO))
    Image.fromarray(trimap).save(tmp_path / "t.png", format="JPEG")
    with pytest.raises(DataError, match=r"t\.png' is a JPEG file"):
        load_trimap(tmp_path / "t.png")
