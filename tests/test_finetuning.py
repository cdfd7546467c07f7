"""Fine-tuning controls of a pretrained encoder: its own learning rate (``module.encoder_lr``,
an optimizer parameter group), BatchNorm statistics kept (``module.freeze_encoder_bn``), and
Lightning's ``BackboneFinetuning`` (``callbacks=[default,backbone_finetuning]``) freezing it
for the first epochs; each refused in one line where it cannot work."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.nn.modules.batchnorm import _BatchNorm

pytest.importorskip("segmentation_models_pytorch", reason="model zoo: pip install .[zoo]")

import segpets.train  # noqa: E402
from segpets.command.build import build_module, instantiate_or_explain  # noqa: E402
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train, fit_steps  # noqa: E402

TINY = [o for o in TINY_SYNTHETIC if not o.startswith("model.")]
# a BatchNorm timm encoder, from scratch (the controls do not care where weights come from)
SMP = [
    "model=smp",
    "model.encoder_name=tu-tf_efficientnet_lite0",
    "model.arch_kwargs={decoder_channels:[16,16,8,8,8]}",
]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: torch.nn.Module, keep=lambda k: True) -> set[str]:
    now = after.state_dict()
    return {
        k for k, v in before.items() if keep(k) and v.is_floating_point() and not v.equal(now[k])
    }


def is_bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var"))


def test_encoder_lr_is_a_parameter_group_the_scheduler_scales(tmp_path: Path) -> None:
    cfg = compose_train([*TINY, *SMP, "optimizer.lr=1e-3", "module.encoder_lr=1e-4"], tmp_path)
    cfg.scheduler = compose_train(["scheduler=cosine"], tmp_path).scheduler
    cfg.scheduler.scheduler.eta_min = 0.0
    module = build_module(cfg)
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rest, encoder = optimizer.param_groups
    assert (rest["lr"], encoder["lr"]) == (1e-3, 1e-4)
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(encoder["params"]) == ids(module.backbone.parameters())
    assert ids(rest["params"]) | ids(encoder["params"]) == ids(module.parameters())
    assert not ids(rest["params"]) & ids(encoder["params"])
    optimizer.step()
    scheduler.step()  # cosine to 0: both decay by the same factor
    assert encoder["lr"] / rest["lr"] == pytest.approx(0.1)
    assert rest["lr"] < 1e-3


def test_without_encoder_lr_one_group_holds_every_parameter(tmp_path: Path) -> None:
    module = build_module(compose_train([*TINY, *SMP], tmp_path))
    (group,) = module.configure_optimizers()["optimizer"].param_groups
    assert len(group["params"]) == len(list(module.parameters()))


def test_encoder_lr_zero_leaves_the_encoder_and_trains_the_decoder(tmp_path: Path) -> None:
    overrides = [*TINY, *SMP, "module.encoder_lr=0", "module.freeze_encoder_bn=true"]
    cfg = compose_train(overrides, tmp_path)
    L.seed_everything(0)
    initial = snapshot(build_module(cfg).net)
    _, module, _ = fit_steps(cfg, tmp_path, steps=3)
    moved = changed(initial, module.net)
    assert moved and not (enc := [k for k in moved if k.startswith("net.encoder.")]), enc[:8]
    assert any(k.startswith("net.decoder.") for k in moved)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_encoder_bn_keeps_the_encoders_running_statistics(
    freeze: bool, tmp_path: Path
) -> None:
    """Frozen: the encoder's BatchNorm layers are in eval mode in training steps and their
    running statistics stay; its weights and the decoder's statistics still change. Not
    frozen (the default): the encoder's statistics move with the batches."""
    cfg = compose_train([*TINY, *SMP, f"module.freeze_encoder_bn={freeze}"], tmp_path)
    L.seed_everything(0)
    initial = snapshot(build_module(cfg).net)
    _, module, _ = fit_steps(cfg, tmp_path, steps=3)
    encoder_stats = changed(
        initial, module.net, lambda k: k.startswith("net.encoder.") and is_bn_stat(k)
    )
    assert bool(encoder_stats) is not freeze
    assert changed(initial, module.net, lambda k: k.startswith("net.decoder.") and is_bn_stat(k))
    weights = changed(
        initial, module.net, lambda k: k.startswith("net.encoder.") and k.endswith("weight")
    )
    assert weights
    module.train()
    layers = [m for m in module.backbone.modules() if isinstance(m, _BatchNorm)]
    assert layers and all(m.training is not freeze for m in layers)
    assert any(m.training for m in module.net.net.decoder.modules() if isinstance(m, _BatchNorm))


class Probe(L.Callback):
    """Per training epoch: what moved, the optimizer's group sizes, its lrs at the start (the
    callback's), and whether the
    encoder's BatchNorm layers trained in batch statistics mode."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.initial = snapshot(pl_module.net)  # after BackboneFinetuning's epoch start
        self.lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        layers = [m for m in pl_module.backbone.modules() if isinstance(m, _BatchNorm)]
        self.bn_training = {m.training for m in layers}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        groups = trainer.optimizers[0].param_groups
        self.epochs.append(
            {
                "moved": changed(self.initial, pl_module.net),
                "lrs": self.lrs,
                "sizes": [len(g["params"]) for g in groups],
                "bn_training": self.bn_training,
            }
        )


def encoder_keys(keys: set[str]) -> set[str]:
    return {k for k in keys if k.startswith("net.encoder.")}


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_backbone_finetuning_freezes_the_encoder_then_adds_it(freeze_bn: bool, tmp_path: Path):
    """callbacks/backbone_finetuning.yaml on the module's encoder: epoch 0 trains the decoder
    only; at epoch 1 the encoder joins as a second group at 0.1x the decoder's lr. freeze_bn
    (shipped): nothing of the encoder moves while frozen, its BatchNorm layers in eval mode,
    then all of it trains. freeze_bn=false (Lightning's behaviour): its BatchNorm layers train
    while frozen, in the decoder's group."""
    overrides = [*TINY, *SMP, "scheduler=cosine", "callbacks=[default,backbone_finetuning]"]
    overrides += ["callbacks.backbone_finetuning.unfreeze_backbone_at_epoch=1"]
    overrides += [f"callbacks.backbone_finetuning.freeze_bn={freeze_bn}"]
    cfg = compose_train(overrides, tmp_path)
    L.seed_everything(0)
    module = build_module(cfg)
    probe = Probe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[instantiate(cfg.callbacks.backbone_finetuning), probe],
    )
    trainer.fit(module, datamodule=instantiate_or_explain(cfg.data, "data"))
    frozen, unfrozen = probe.epochs
    bn = [n for n, m in module.backbone.named_modules() if isinstance(m, _BatchNorm)]
    bn_params = sum(1 for n, _ in module.backbone.named_parameters() if n.rsplit(".", 1)[0] in bn)
    encoder_size, total = len(list(module.backbone.parameters())), len(list(module.parameters()))
    moved_while_frozen = encoder_keys(frozen["moved"])
    if not freeze_bn:  # only BatchNorm weights and statistics, trained with the decoder's group
        assert moved_while_frozen and all(
            k.rsplit(".", 2)[-2].startswith("bn") for k in moved_while_frozen
        )
        assert frozen["sizes"] == [total - encoder_size + bn_params]
        assert frozen["bn_training"] == {True}
    else:
        assert not moved_while_frozen
        assert frozen["sizes"] == [total - encoder_size]
        assert frozen["bn_training"] == {False}
        assert unfrozen["sizes"] == [total - encoder_size, encoder_size]  # BatchNorm included
    assert frozen["moved"] - moved_while_frozen  # the decoder trained
    assert unfrozen["bn_training"] == {True}
    assert len(unfrozen["lrs"]) == 2
    assert unfrozen["lrs"][1] == pytest.approx(0.1 * unfrozen["lrs"][0])
    assert encoder_keys(unfrozen["moved"]) - moved_while_frozen


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["module.encoder_lr=1e-4"], r"module\.encoder_lr needs a net with a pretrained encoder"),
        (["module.freeze_encoder_bn=true"], r"module\.freeze_encoder_bn needs a net with a"),
        (["callbacks=[default,backbone_finetuning]"], r"callbacks: BackboneFinetuning .* UNet"),
        (
            [*SMP, "callbacks=[default,backbone_finetuning]", "module.encoder_lr=1e-4"],
            r"module\.encoder_lr=0\.0001: BackboneFinetuning sets the encoder's lr",
        ),
        ([*SMP, "module.encoder_lr=-1"], r"module\.encoder_lr must be a number >= 0"),
    ],
    ids=["encoder-lr-unet", "freeze-bn-unet", "finetuning-unet", "both-lrs", "negative"],
)
def test_controls_that_cannot_work_are_refused_in_one_line(
    overrides: list[str], pattern: str, tmp_path: Path, monkeypatch, capfd
) -> None:
    base = TINY_SYNTHETIC if not any(o.startswith("model=") for o in overrides) else TINY
    args = [*base, *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run" / "checkpoints").exists()
