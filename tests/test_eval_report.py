"""Eval report: metric definitions against hand-computed values, TTA, breakdown, full runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segpets.callbacks.val_images import panel
from segpets.data import read_split
from segpets.data.oxford_pet import species_and_breeds
from segpets.evaluation.collector import per_image_dice
from segpets.evaluation.logits import hflip_average
from segpets.evaluation.overlays import FALSE_PET_RGB, MISSED_PET_RGB, PET_RGB
from segpets.evaluation.report import captioned_panel, group_rows, overlay_panel
from segpets.metrics import PerImageBoundaryF1, boundary, boundary_f1
from segpets.models import UNet
from segpets.predict import overlay as predict_overlay
from tests.conftest import compose_config


def square(top: int, left: int, size: int = 4, shape: int = 10) -> torch.Tensor:
    mask = torch.zeros(1, 1, shape, shape)
    mask[..., top : top + size, left : left + size] = 1
    return mask


def test_boundary_is_the_ring_of_a_square_and_ignores_the_frame() -> None:
    ring = boundary(square(2, 2))[0, 0]
    assert ring.sum() == 12  # 4×4 square: 16 pixels, 4 interior
    assert ring[3:5, 3:5].sum() == 0
    assert boundary(torch.ones(1, 1, 10, 10)).sum() == 0  # all-foreground: no contour


def test_boundary_f1_hand_computed() -> None:
    truth, shifted = square(2, 2), square(2, 3)  # prediction one pixel to the right
    # tolerance 0: 6 of the 12 contour pixels coincide (top and bottom rows, cols 3-5)
    assert boundary_f1(shifted, truth, 0).item() == pytest.approx(0.5)
    assert boundary_f1(shifted, truth, 1).item() == pytest.approx(1.0)
    assert boundary_f1(truth, truth, 0).item() == 1.0
    empty = torch.zeros_like(truth)
    assert boundary_f1(empty, empty, 2).item() == 1.0  # nothing to find, nothing found
    assert boundary_f1(empty, truth, 2).item() == 0.0
    assert boundary_f1(torch.ones_like(truth), truth, 2).item() == 0.0  # all-foreground
    metric = PerImageBoundaryF1(tolerance=0)
    metric.update(torch.cat([shifted, empty]), torch.cat([truth, truth]))
    assert metric.per_image().tolist() == pytest.approx([0.5, 0.0])
    assert metric.compute().item() == pytest.approx(0.25)


def test_per_image_dice_hand_computed() -> None:
    truth, empty, full = square(2, 2), torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10)
    preds = torch.cat([square(2, 3), empty, full, empty]).long()
    target = torch.cat([truth, truth, truth, empty]).long()
    # shifted: |P∩T| = 12 → 24/32; empty pred: 0; all-foreground: 2·16/(100+16); empty/empty: 1
    expected = [24 / 32, 0.0, 32 / 116, 1.0]
    assert per_image_dice(preds, target).tolist() == pytest.approx(expected)


def symmetrise(net: nn.Module) -> nn.Module:
    """Make every kernel mirror-symmetric in width, so the net commutes with hflip."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return net


def test_hflip_tta_averages_probabilities() -> None:
    ramp = torch.linspace(-3, 3, 8).view(1, 1, 1, 8)
    images = torch.randn(2, 3, 8, 8)
    forward = lambda x: x[:, :1] + ramp  # noqa: E731 - not flip-equivariant on purpose
    expected = torch.sigmoid(forward(images)) + torch.sigmoid(forward(images.flip(-1))).flip(-1)
    got = torch.sigmoid(hflip_average(forward, images))
    torch.testing.assert_close(got, expected / 2)


def test_hflip_tta_on_flip_symmetric_input_equals_no_tta() -> None:
    torch.manual_seed(0)
    net = symmetrise(UNet(width=4)).eval()
    half = torch.randn(2, 3, 32, 16)
    images = torch.cat([half, half.flip(-1)], dim=-1)  # (2, 3, 32, 32), mirror-symmetric
    with torch.no_grad():
        plain, tta = net(images), hflip_average(net, images)
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(tta > 0, plain > 0)


def test_breakdown_of_the_mini_set_has_both_species_and_breeds(mini_root: Path) -> None:
    names = read_split(mini_root / "annotations" / "test.txt")
    labels = species_and_breeds(mini_root, names + ["Unlisted_1", "unlisted_dog_2"])
    assert labels["Abyssinian_5"] == ("cat", "Abyssinian")
    assert labels[next(n for n in names if n[0].islower())] == ("dog", "american_bulldog")
    assert labels["Unlisted_1"] == ("cat", "Unlisted") and labels["unlisted_dog_2"][0] == "dog"
    records = [
        {"name": n, "species": labels[n][0], "breed": labels[n][1], "dice": i / len(names)}
        for i, n in enumerate(names)
    ]
    breeds = group_rows(records, "breed")
    assert {r["breed"] for r in breeds} == {"Abyssinian", "american_bulldog"}
    assert {(r["breed"], r["species"]) for r in breeds} == {
        ("Abyssinian", "cat"),
        ("american_bulldog", "dog"),
    }
    assert sum(r["images"] for r in breeds) == len(names)
    assert breeds[0]["dice"] <= breeds[1]["dice"]  # worst first
    for row in breeds:
        mine = [r["dice"] for r in records if r["breed"] == row["breed"]]
        assert row["dice"] == pytest.approx(np.mean(mine), abs=1e-6)
        assert row["dice_min"] == pytest.approx(min(mine), abs=1e-6)


def test_overlay_colours_errors() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    truth = np.array([[True, True], [False, False]])
    pred = np.array([[True, False], [True, False]])
    panel = overlay_panel(image, truth, pred)
    assert panel.shape == (2, 3 * 2 + 8, 3)
    right, missed, false_pet, bg = panel[0, 12], panel[0, 13], panel[1, 12], panel[1, 13]
    assert right[1] > right[0] and missed[2] > missed[0] and false_pet[0] > false_pet[2]
    assert bg.tolist() == [100, 100, 100]
    assert panel[0, 6].tolist() == [255] * 3 and panel[1, 6].tolist() == [0] * 3  # GT panel


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_eval_report_full_res_tta_and_repeatability(tiny_ckpt: Path, mini_root, tmp_path):
    from segpets.eval import evaluate

    base = [f"ckpt_path={tiny_ckpt}", f"data.root={mini_root}", "split=val", "progress_bar=false"]
    first = tmp_path / "first"
    tta = ["eval.tta=hflip", "eval.full_res=true", "eval.worst_k=3"]
    evaluate(compose_config("eval", [*base, *tta]), first)
    report = json.loads((first / "metrics.json").read_text())
    assert report["tta"] == "hflip" and report["full_res"] and report["images"] == 20
    for metrics in (report["metrics"], report["metrics_without_tta"]):
        for key in ("dice", "dice_dataset", "iou", "pixel_accuracy", "boundary_f1"):
            assert 0.0 <= metrics[f"val/{key}"] <= 1.0
            assert 0.0 <= metrics[f"val/full_res/{key}"] <= 1.0
    per_image = read_csv(first / "per_image.csv")
    assert len(per_image) == 20
    dice = [float(r["dice"]) for r in per_image]
    assert dice == sorted(dice)
    assert np.mean(dice) == pytest.approx(report["metrics"]["val/dice"], abs=1e-5)
    full = np.mean([float(r["dice_full_res"]) for r in per_image])
    assert full == pytest.approx(report["metrics"]["val/full_res/dice"], abs=1e-5)
    species = read_csv(first / "per_species.csv")
    assert {r["species"] for r in species} == {"cat", "dog"}
    assert sum(int(r["images"]) for r in species) == 20
    assert {r["breed"] for r in read_csv(first / "per_breed.csv")} == {
        "Abyssinian",
        "american_bulldog",
    }
    worst = sorted(p.name for p in (first / "worst").iterdir())
    assert len(worst) == 3 and worst[0].startswith("01_" + per_image[0]["name"])
    # drawn at the original resolution (the checkpoint ran at 32 px), under a caption bar
    original = Image.open(mini_root / "images" / f"{per_image[0]['name']}.jpg")
    panel = np.asarray(Image.open(first / "worst" / worst[0]))
    assert panel.shape[0] > original.height and panel.shape[1] == 3 * original.width + 8
    assert list((first / "tensorboard").glob("events.out.tfevents.*"))

    # the same checkpoint again, without TTA: identical to the first run's no-TTA pass
    second = tmp_path / "second"
    metrics = evaluate(compose_config("eval", [*base, "eval.worst_k=0"]), second)
    assert metrics == {k: v for k, v in report["metrics_without_tta"].items() if k in metrics}
    assert "val/dice" in metrics and "val/full_res/dice" not in metrics
    assert not (second / "worst").exists()


def test_captioned_panel_scales_small_images_up_and_writes_its_caption() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    truth = np.zeros((30, 40), bool)
    truth[10:20, 10:30] = True
    panel = captioned_panel(image, truth, truth, "Abyssinian_1, cat, Abyssinian: Dice 0.500")
    bar = panel.shape[0] - 256
    assert panel.shape[1:] == (3 * round(40 * 256 / 30) + 8, 3) and bar >= 21
    assert (panel[:bar] < 128).any()  # the caption's text is drawn in black on white
    gt = panel[bar:, round(40 * 256 / 30) + 4]  # left column of the scaled ground truth
    assert gt.shape[0] == 256 and (panel[bar + 128, 341 + 4 + 170] == 255).all()
    assert captioned_panel(image, truth, truth, "other")[:bar].tolist() != panel[:bar].tolist()


def test_captioned_panel_keeps_a_long_caption_inside_a_portrait_panel() -> None:
    """A 334×500 photo (american_bulldog_203 of oxford-pet-24) and a long caption: the text is
    broken and shrunk to fit, never cut at the panel's right edge."""
    image, truth = np.full((500, 334, 3), 128, np.uint8), np.zeros((500, 334), bool)
    caption = "american_bulldog_203, dog, american_bulldog: Dice 0.155 (original size 0.155)"
    panel = captioned_panel(image, truth, truth, caption)
    bar = panel[: panel.shape[0] - 500]
    assert (bar < 128).any() and (bar[:, -8:] == 255).all()  # drawn, and clear of the edge


def test_overlay_leaves_ignored_pixels_grey_and_untinted() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    truth, pred, ignored = (np.zeros((4, 4), bool) for _ in range(3))
    pred[:, :2], ignored[:, 1] = True, True  # column 1: predicted pet, but ignored
    panel = overlay_panel(image, truth, pred, ignored)
    gt, blended = panel[:, 8:12], panel[:, 16:20]
    assert (gt[:, 1] == 128).all() and (gt[:, 0] == 0).all()
    assert (blended[:, 1] == 100).all() and (blended[:, 0] != 100).any()  # column 0: red


def test_one_palette_for_every_overlay() -> None:
    """The validation panel, eval's worst panels and predict's overlay draw the same thing in
    the same colour: pet (true pet) green, false pet red, missed pet blue."""
    image = np.full((2, 2, 3), 100, np.uint8)
    truth = np.array([[True, True], [False, False]])
    pred = np.array([[True, False], [True, False]])
    report = overlay_panel(image, truth, pred)[:, 12:14]  # the prediction, uint8
    chw = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    val = panel(chw, torch.from_numpy(truth)[None, None], torch.from_numpy(pred)[None, None])
    val = (val[:, 2:4, 10:12].permute(1, 2, 0) * 255).numpy()  # tile 3 of the grid, as uint8
    predicted = predict_overlay(image, torch.from_numpy(pred))
    expected = {(0, 0): PET_RGB, (1, 0): FALSE_PET_RGB, (0, 1): MISSED_PET_RGB}
    for (y, x), rgb in expected.items():
        drawn = (np.array(rgb) + 100) // 2  # blended at ALPHA = 0.5
        assert report[y, x].tolist() == drawn.tolist(), (y, x)
        assert np.abs(val[y, x] - drawn).max() <= 1, (y, x)  # [0, 1] floats: 1/255 rounding
    assert predicted[0, 0].tolist() == predicted[1, 0].tolist() == report[0, 0].tolist()
    assert predicted[:, 1].tolist() == image[:, 1].tolist()  # not predicted: untinted
