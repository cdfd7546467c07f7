"""Model zoo (model=smp): smp architectures × encoders built from the config, any input size,
smp's own parameter counts, training signal, pretrained weights from local files, the input
statistics that follow them, and one-line errors. End-to-end runs: tests/test_zoo_runs.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

smp = pytest.importorskip("segmentation_models_pytorch", reason="model zoo: pip install .[zoo]")
timm = pytest.importorskip("timm")

from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import segpets.train  # noqa: E402
from segpets.bench import count_gflops, model_name  # noqa: E402
from segpets.command.build import build_module  # noqa: E402
from segpets.errors import ConfigError  # noqa: E402
from segpets.losses import BCEDiceLoss  # noqa: E402
from segpets.models import SmpNet, smp_weights  # noqa: E402
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train  # noqa: E402

# smp's own and timm encoders, CNN and transformer, the dilated (DeepLabV3+), the one with a
# minimum size (PAN: 128 px) and the shallow one (PSPNet: encoder_depth 3, stride 8)
PAIRS = [
    ("Unet", "resnet18"),
    ("FPN", "mobilenet_v2"),
    ("DeepLabV3Plus", "tu-resnet10t"),
    ("Segformer", "mit_b0"),
    ("PAN", "tu-mobilenetv3_small_050"),
    ("PSPNet", "resnet18"),
]
SIZES = [(64, 64), (97, 131)]
STATS = {"mean": [0.41, 0.42, 0.43], "std": [0.21, 0.22, 0.23]}
TINY = [o for o in TINY_SYNTHETIC if not o.startswith("model.")]  # a zoo model has no width


def zoo(arch: str, encoder: str, *more: str) -> list[str]:
    return ["model=smp", f"model.arch={arch}", f"model.encoder_name={encoder}", *more]


def batch(size: tuple[int, int] = (64, 64), n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(sum(size))
    images = torch.randn(n, 3, *size, generator=gen)
    masks = (torch.rand(n, 1, *size, generator=gen) > 0.5).float()
    return images, masks


@pytest.mark.parametrize(("arch", "encoder"), PAIRS, ids=[f"{a}-{e}" for a, e in PAIRS])
def test_arch_encoder_pair(arch: str, encoder: str, tmp_path: Path) -> None:
    """Built from the config; (N, 1, H, W) logits at two sizes (one no stride divides);
    smp's own parameter count; one optimisation step lowers the loss on a fixed batch."""
    torch.manual_seed(0)
    module = build_module(compose_train(zoo(arch, encoder), tmp_path))
    net = module.net
    assert isinstance(net, SmpNet) and type(net.net).__name__ == arch
    reference = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=1)
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    net.eval()
    for size in SIZES:
        with torch.no_grad():
            assert net(batch(size, n=2)[0]).shape == (2, 1, *size)

    net.train()
    images, masks = batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    torch.manual_seed(1)  # the same dropout masks for both losses
    before = module.loss(net(images), masks)
    before.backward()
    optimizer.step()
    torch.manual_seed(1)
    with torch.no_grad():
        after = module.loss(net(images), masks)
    assert after.item() < before.item()


def test_padding_keeps_each_pixel_in_place() -> None:
    """The crop undoes the pad exactly: a net that sees a 97×131 image inside a 128×160
    canvas answers for the image's own pixels (an identity net returns its input)."""
    net = SmpNet("Unet", "resnet18").eval()
    net.net = torch.nn.Conv2d(3, 1, 1, bias=False)  # channel 0 only
    with torch.no_grad():
        net.net.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
    x = torch.randn(2, 3, 97, 131)
    assert torch.equal(net(x), x[:, :1])
    assert (net.stride, net.min_size) == (32, 32)


def test_unused_parameters_are_frozen_for_ddp() -> None:
    """PSPNet uses 3 of resnet18's 5 stages; the parameters its forward never touches are
    frozen (DDP refuses trainable parameters without gradients), the others train."""
    net = SmpNet("PSPNet", "resnet18")
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == set(net.unused) and frozen
    assert all(n.startswith(("net.encoder.layer3.", "net.encoder.layer4.")) for n in frozen)
    net(batch()[0]).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert not SmpNet("Unet", "resnet18").unused


def encoder_file(tmp_path: Path, encoder: str = "resnet18", stats: dict | None = STATS) -> Path:
    """smp's ``encoder`` with random weights saved as smp-hub lays them out (model.safetensors
    and, unless ``stats`` is None, config.json with the statistics)."""
    torch.manual_seed(123)
    folder = tmp_path / f"{encoder}-weights"
    folder.mkdir()
    state = smp.encoders.get_encoder(encoder).state_dict()
    for key, value in state.items():  # BatchNorm statistics off their initial values too
        if value.is_floating_point():
            state[key] = value + 0.01 * torch.randn_like(value)
    save_file(state, folder / "model.safetensors")
    if stats is not None:
        (folder / "config.json").write_text(json.dumps({**stats, "input_range": [0, 1]}))
    return folder / "model.safetensors"


def test_local_weights_file_loads_into_the_encoder(tmp_path: Path) -> None:
    weights = encoder_file(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(weights)
    torch.manual_seed(0)
    loaded = SmpNet("FPN", "resnet18", encoder_weights=str(weights)).net.encoder
    torch.manual_seed(0)
    scratch = SmpNet("FPN", "resnet18").net.encoder
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_mean"):
        assert torch.equal(loaded.state_dict()[key], saved[key])
        assert not torch.equal(scratch.state_dict()[key], saved[key])


def test_local_timm_weights_file_loads_through_timm(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = timm.create_model("resnet10t")
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    encoder = SmpNet("Unet", "tu-resnet10t", encoder_weights=str(path)).net.encoder.model
    assert torch.equal(encoder.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    assert torch.equal(encoder.conv1[0].weight, source.conv1[0].weight)


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet10t"])
def test_bad_weights_files_are_one_line_errors(encoder: str, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match=r"'.*wrong\.pth' (is not a state dict|does not fit)"):
        SmpNet("Unet", encoder, encoder_weights=str(wrong))
    with pytest.raises(ConfigError, match="no such file .*missing.pth.*not a pretrained tag"):
        SmpNet("Unet", encoder, encoder_weights=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(ConfigError, match="cannot read"):
        SmpNet("Unet", encoder, encoder_weights=str(garbage))


def test_statistics_follow_the_weights(tmp_path: Path) -> None:
    """The net owns its input statistics: none without weights (the seed's 0.5/0.5), the
    encoder's with them (config.json beside a local smp file; timm's pretrained config for a
    tu- encoder), recorded in the checkpoint's config; a value typed on the command line wins.
    Composing never computes them (no import, no download)."""
    weights = encoder_file(tmp_path)

    def stats(*overrides: str) -> tuple[list, list]:
        cfg = compose_train(list(overrides), tmp_path)
        assert cfg.data.mean is None or overrides[-1].startswith("data.mean")
        recorded = build_module(cfg, with_optimizer=False).hparams.config["data"]
        return recorded["mean"], recorded["std"]  # what the module normalises with

    assert stats("model=smp") == ([0.5] * 3, [0.5] * 3)
    local = f"model.encoder_weights={weights}"
    assert stats("model=smp", "model.encoder_name=resnet18", local) == (
        STATS["mean"],
        STATS["std"],
    )
    cfg = timm.models.get_pretrained_cfg("resnet10t")
    timm_stats = {"mean": list(cfg.mean), "std": list(cfg.std)}
    assert smp_weights.encoder_stats("tu-resnet10t", "imagenet") == timm_stats
    typed = stats("model=smp", "model.encoder_name=resnet18", local, "data.mean=[0.3,0.3,0.3]")
    assert typed == ([0.3] * 3, STATS["std"])


def test_statistics_of_0_255_inputs_are_rescaled_and_bgr_refused() -> None:
    params = {"mean": [124.0, 116.0, 104.0], "std": [58.0, 57.0, 57.0], "input_range": [0, 255]}
    stats = smp_weights.checked_stats(params, "x")
    assert stats["mean"] == pytest.approx([v / 255 for v in params["mean"]])
    assert stats["std"] == pytest.approx([v / 255 for v in params["std"]])
    with pytest.raises(ConfigError, match="expects BGR inputs"):
        smp_weights.checked_stats({**params, "input_space": "BGR"}, "x")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The Hugging Face hub unreachable, as on these machines, without its retries."""

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("hub unreachable and nothing cached")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", unreachable)
    smp_weights.encoder_stats.cache_clear()
    yield
    smp_weights.encoder_stats.cache_clear()


OFFLINE = r"could not download resnet34's imagenet weights from https://huggingface\.co/smp-hub/"
CONFIG_ERRORS = [
    (["model.arch=Unett"], r"model\.arch='Unett' is not an smp architecture; choices: Unet, "),
    (["model.encoder_name=resnt34"], r"model\.encoder_name='resnt34'.*did you mean resnet34"),
    (["model.encoder_name=tu-resnt18"], r"timm has no model 'resnt18'.*tu-resnet18"),
    (["model.encoder_weights=imagenet"], rf"model\.encoder_weights=imagenet: {OFFLINE}.*"
     r"set model\.encoder_weights=/path/to/model\.safetensors"),
    (["model.encoder_weights=swsl"], r"model\.encoder_weights='swsl': no such file .*: imagenet"),
    (["+model.arch_kwargs.decoder_chanels=[8]"], r"Unet takes no decoder_chanels .*decoder_chan"),
    (["+model.arch_kwargs.aux_params={}"], r"model\.arch_kwargs may not set aux_params"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "pattern"), CONFIG_ERRORS)
def test_config_errors_are_one_line(overrides, pattern, offline, tmp_path, monkeypatch, capfd):
    args = ["model=smp", *overrides, *TINY, "hydra.run.dir=run"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_local_smp_file_without_statistics_says_where_they_go(tmp_path, monkeypatch, capfd):
    weights = encoder_file(tmp_path, stats=None)
    args = [*zoo("Unet", "resnet18", f"model.encoder_weights={weights}"), *TINY]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    where = str(weights.parent / "config.json")
    assert_one_line_error(code, err, rf"no input statistics.*'{where}', or set data\.mean")


def test_bench_counts_flops_and_names_the_zoo_model(tmp_path: Path) -> None:
    cfg = compose_train(zoo("FPN", "mobilenet_v2"), tmp_path)
    assert model_name(cfg.model) == "SmpNet(FPN, mobilenet_v2)"
    net = build_module(cfg, with_optimizer=False).net
    fwd, train = count_gflops(net, BCEDiceLoss(), torch.randn(3, 64, 64))
    inner_fwd, _ = count_gflops(net.net, BCEDiceLoss(), torch.randn(3, 64, 64))
    assert 0 < fwd == pytest.approx(inner_fwd) and train > 2 * fwd  # 64 px: nothing padded


def test_checkpoint_rebuild_needs_no_pretrained_weights(tmp_path: Path) -> None:
    """eval/predict/export rebuild a net whose weights all come from the checkpoint: the
    stored encoder_weights (a file gone since, or a download) are not needed again."""
    from segpets.checkpoints.load import module_from_checkpoint

    weights = encoder_file(tmp_path)
    cfg = compose_train(zoo("Unet", "resnet18", f"model.encoder_weights={weights}"), tmp_path)
    trained = build_module(cfg, with_optimizer=False)
    config = OmegaConf.create(trained.hparams["config"])
    weights.unlink()
    rebuilt = module_from_checkpoint(config, trained.state_dict())
    assert rebuilt.hparams["config"]["model"]["encoder_weights"] == str(weights)
    x = batch(n=2)[0]
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), trained.eval()(x))


def test_zoo_experiments(tmp_path: Path) -> None:
    """smp_unet_r34 is smp's example (Unet + ImageNet resnet34, Adam 2e-4, cosine to 1e-5,
    256 px, 10 epochs); offline, a local copy of the weights brings its statistics along."""
    from safetensors.torch import load_file

    r34 = compose_train(["experiment=smp_unet_r34"], tmp_path)
    model = (r34.model._target_, r34.model.arch, r34.model.encoder_name, r34.model.encoder_weights)
    assert model == ("segpets.models.SmpNet", "Unet", "resnet34", "imagenet")
    assert (r34.optimizer.lr, r34.scheduler.scheduler.eta_min) == (2e-4, 1e-5)
    assert (r34.data.image_size, r34.trainer.max_epochs) == (256, 10)
    mobile = compose_train(["experiment=smp_unet_mobilenet"], tmp_path)
    assert (mobile.model.arch, mobile.model.encoder_name) == ("Unet", "mobilenet_v2")
    assert mobile.model.encoder_weights == "imagenet" and mobile.data.image_size == 64

    weights = encoder_file(tmp_path, "resnet34")
    cfg = compose_train(["experiment=smp_unet_r34", f"model.encoder_weights={weights}"], tmp_path)
    module = build_module(cfg)
    assert module.input_mean.tolist() == pytest.approx(STATS["mean"])
    assert module.input_std.tolist() == pytest.approx(STATS["std"])
    encoder = module.net.net.encoder
    assert torch.equal(encoder.layer3[5].conv2.weight, load_file(weights)["layer3.5.conv2.weight"])
