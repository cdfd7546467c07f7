"""TensorBoard dashboards: scalars, the validation image panel and the HPARAMS tab, read back
from the event files with TensorBoard's own reader."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from segpets.callbacks.val_images import panel
from segpets.evaluation.overlays import FALSE_PET_RGB, IGNORED_RGB, MISSED_PET_RGB, PET_RGB
from segpets.train import train
from tests.conftest import TINY_SYNTHETIC, compose_train

TINY = [
    *TINY_SYNTHETIC,
    "trainer.log_every_n_steps=1",
    "callbacks.val_images.num_images=3",
]


def colour(rgb: tuple[int, int, int]) -> torch.Tensor:
    """A palette colour as the (3, 1, 1) float a [0, 1] image holds."""
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255


def test_panel_rows_are_image_truth_prediction() -> None:
    images = torch.zeros(2, 3, 8, 8)
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4] = 1
    preds = torch.zeros(2, 1, 8, 8)
    preds[:, :, :, :4] = 1
    grid = panel(images, masks, preds, alpha=1.0)
    assert grid.shape == (3, 2 * 10 + 2, 3 * 10 + 2)  # 2 rows × 3 tiles of 8 px + 2 px padding
    truth, pred = grid[:, 2:10, 12:20], grid[:, 2:10, 22:30]  # first row, tiles 2 and 3
    assert truth[:, :4].eq(colour(PET_RGB)).all() and truth[:, 4:].eq(0).all()  # pet green
    assert pred[:, :4, :4].eq(colour(PET_RGB)).all()  # true pet: green
    assert pred[:, 4:, :4].eq(colour(FALSE_PET_RGB)).all()  # false pet: red
    assert pred[:, :4, 4:].eq(colour(MISSED_PET_RGB)).all()  # missed pet: blue
    assert pred[:, 4:, 4:].eq(0).all()  # true background: the image


def test_panel_shows_ignored_pixels_grey_in_the_truth_and_untinted_in_the_prediction() -> None:
    images = torch.full((1, 3, 4, 4), 0.5)
    masks, preds, ignored = (torch.zeros(1, 1, 4, 4) for _ in range(3))
    preds[..., :2], ignored[..., 1] = 1, 1  # column 1: predicted pet, but ignored
    grid = panel(images, masks, preds, alpha=1.0, ignored=ignored)
    truth, pred = grid[:, 2:6, 8:12], grid[:, 2:6, 14:18]
    assert truth[:, :, 1].eq(colour(IGNORED_RGB)[:, 0]).all() and truth[:, :, 0].eq(0.5).all()
    assert pred[:, :, 0].eq(colour(FALSE_PET_RGB)[:, 0]).all() and pred[:, :, 1].eq(0.5).all()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> EventAccumulator:
    out = tmp_path_factory.mktemp("tb-run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine runs this tiny net ~10x faster on one
    try:
        metrics = train(compose_train(TINY, out))
    finally:
        torch.set_num_threads(threads)
    assert "test/dice" in metrics and "best/val/dice" in metrics
    # fit, test and the final hparams each leave an event file; TensorBoard reads the folder
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    return acc.Reload()


def test_scalars_cover_losses_dice_and_lr(events: EventAccumulator) -> None:
    scalars = set(events.Tags()["scalars"])
    wanted = {"train/loss_step", "train/loss_epoch", "val/loss", "val/dice", "lr-Adam"}
    assert wanted <= scalars, wanted - scalars
    assert len(events.Scalars("val/dice")) == 2  # one per epoch


def test_image_panel_every_epoch(events: EventAccumulator) -> None:
    shots = events.Images("val/predictions")
    assert len(shots) == 2  # after each of the 2 validation epochs, none for the sanity check
    assert (shots[0].height, shots[0].width) == (3 * 34 + 2, 3 * 34 + 2)  # 3 images × 3 tiles


def test_hparams_tab_has_settings_and_final_metrics(events: EventAccumulator) -> None:
    plugin = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin)
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(5e-4)
    assert hparams["model.width"].number_value == 4
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"])
    shown = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"hp/best/val/dice", "hp/test/dice"} <= shown
    best = max(s.value for s in events.Scalars("val/dice"))
    assert events.Scalars("hp/best/val/dice")[0].value == pytest.approx(best)
