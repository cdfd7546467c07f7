"""``seed=N trainer.deterministic=true``: two CPU runs give identical metrics and weights
(augmentations included: they are drawn from torch's RNG, see ``TorchSeeded``), and another
seed gives other weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from segpets.data.dataset import TorchSeeded
from segpets.train import train
from tests.conftest import compose_train


def tiny_cfg(mini_root: Path, out: Path, *extra: str):
    """One epoch of a width-4 UNet at 64 px on the mini set, no test, CSV logs only."""
    base = [
        f"data.root={mini_root}",
        "trainer=cpu",
        "model.width=4",
        "data.image_size=64",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.val_images=null",
    ]
    return compose_train([*base, *extra], out)


def tiny_run(mini_root: Path, out: Path, seed: int) -> tuple[dict[str, float], dict]:
    extra = ["trainer.limit_train_batches=2", "trainer.deterministic=true", f"seed={seed}"]
    cfg = tiny_cfg(mini_root, out, *extra)
    metrics = train(cfg)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics, state["state_dict"]


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(mini_root: Path, tmp_path: Path) -> None:
    metrics_a, weights_a = tiny_run(mini_root, tmp_path / "a", seed=3)
    metrics_b, weights_b = tiny_run(mini_root, tmp_path / "b", seed=3)
    assert metrics_a == metrics_b and "val/dice" in metrics_a
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    _, weights_c = tiny_run(mini_root, tmp_path / "c", seed=4)
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


def test_augmentations_follow_torch_seed(mini_root: Path, tmp_path: Path) -> None:
    """Albumentations 2 ignores global seeds; TorchSeeded ties it to torch's RNG."""
    from hydra.utils import instantiate

    cfg = compose_train([f"data.root={mini_root}", "data.image_size=64"], tmp_path)
    image = torch.randint(0, 255, (80, 96, 3), dtype=torch.uint8).numpy()
    mask = (image[..., 0] > 127).astype("uint8")

    def augment(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        transform = TorchSeeded(instantiate(cfg.data.train_transform))  # a fresh pipeline
        return torch.stack([transform(image=image, mask=mask)["image"] for _ in range(4)])

    assert torch.equal(augment(0), augment(0))
    assert not torch.equal(augment(0), augment(1))


@pytest.mark.parametrize("action", ["stop", "skip"])
def test_nonfinite_loss_is_stopped_or_skipped(action, mini_root: Path, tmp_path: Path, caplog):
    """A NaN loss at global step 1: ``stop`` names it and saves nothing after; ``skip`` leaves
    the weights of that step untouched and trains on; no checkpoint ever holds NaN."""
    from segpets.callbacks.nonfinite_loss import NonFiniteLossError

    cfg = tiny_cfg(
        mini_root,
        tmp_path,
        "trainer.limit_train_batches=3",
        f"callbacks.nonfinite_loss.action={action}",
        "+loss.nan_at_call=2",  # see NaNAt below: the 2nd training loss is NaN
        "loss._target_=tests.test_determinism.NaNAt",
    )
    if action == "stop":
        with pytest.raises(NonFiniteLossError, match=r"global step 1, batch 1 \(images: \w+"):
            train(cfg)
        assert not list(tmp_path.rglob("*.ckpt"))
        return
    with caplog.at_level(logging.WARNING, logger="segpets.callbacks.guards"):
        train(cfg)
    assert "skipping the update of epoch 0, global step 1, batch 1" in caplog.text
    assert "1 training batches with a non-finite loss were skipped" in caplog.text
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


class NaNAt(torch.nn.Module):
    """Test-only loss: segpets' BCE+Dice, but NaN on its ``nan_at_call``-th training call."""

    def __init__(self, nan_at_call: int, **kwargs) -> None:
        super().__init__()
        from segpets.losses import BCEDiceLoss

        self.inner, self.nan_at_call, self.calls = BCEDiceLoss(**kwargs), nan_at_call, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits, target)
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.nan_at_call:
                return loss * float("nan")
        return loss
