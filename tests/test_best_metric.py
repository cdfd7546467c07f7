"""BestMetric, the best of ``optimized_metric`` a training run returns: its direction, NaN
never best, ties keep the first epoch, and its state survives a checkpoint round trip."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from segpets.callbacks.best_metric import BestMetric

NAN = math.nan


def read(values: list[float], monitor: str, best: BestMetric | None = None, start: int = 0):
    """``values`` as the validation results of ``monitor`` in epochs ``start``, ``start + 1``..."""
    best = best or BestMetric(monitor)
    for epoch, value in enumerate(values, start):
        trainer = SimpleNamespace(
            callback_metrics={monitor: value}, current_epoch=epoch, sanity_checking=False
        )
        best.on_validation_end(trainer, None)
    return best


@pytest.mark.parametrize(
    ("monitor", "values", "expected", "epoch"),
    [
        ("val/dice", [NAN, 0.5, 0.7, 0.7, NAN, 0.6], 0.7, 2),  # max; a tie keeps epoch 2
        ("val/loss", [3.0, 1.0, NAN, 2.0, 1.0], 1.0, 1),  # min
        ("val/loss", [math.inf, math.inf], math.inf, 0),  # a finite-less min is still read
    ],
)
def test_best_in_the_metrics_direction_nan_never_best(monitor, values, expected, epoch) -> None:
    best = read(values, monitor)
    assert (best.best, best.best_epoch) == (expected, epoch)


def test_only_nan_is_no_best() -> None:
    best = read([NAN, NAN], "val/dice")
    assert best.best is None and best.state_dict() == {"best": None, "best_epoch": None}


def test_state_round_trip_returns_the_same_best() -> None:
    """What a checkpoint keeps: a resumed tracker continues from the saved best."""
    saved = read([0.4, 0.8], "val/dice").state_dict()
    assert saved == {"best": pytest.approx(0.8), "best_epoch": 1}
    resumed = BestMetric("val/dice")
    resumed.load_state_dict(saved)
    assert (resumed.best, resumed.best_epoch) == (saved["best"], 1)
    read([0.6, NAN], "val/dice", resumed, start=2)  # worse: the saved best stays
    assert (resumed.best, resumed.best_epoch) == (saved["best"], 1)
    read([0.9], "val/dice", resumed, start=4)
    assert resumed.best == pytest.approx(0.9) and resumed.best_epoch == 4
    empty = BestMetric("val/dice")
    empty.load_state_dict({"best": None, "best_epoch": None})
    assert empty.best is None
