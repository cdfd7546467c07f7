"""Trust by vouching, never by the file: a checkpoint or export of the user's own net is
rebuilt only when the user vouches for its class outside the file, with ``trusted_targets``
(command line or their own config) or a ``segpets.trusted_targets`` entry point of an
installed package; everything else is refused as before (tests/test_trust.py).

The user's package (``ownnets``) and a fake installed distribution vouching for it (a
``*.dist-info`` folder with ``entry_points.txt``) live in temporary folders put on
``sys.path``; nothing is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import segpets.eval
import segpets.export
import segpets.predict
import segpets.train
from segpets.checkpoints.trust import check_plain_data
from segpets.errors import ConfigError
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train
from tests.test_trust import crafted, image, save_ckpt

ENTRY_POINT_GROUP = "segpets.trusted_targets"
TARGET = "ownnets.nets.OwnNet"
VOUCH = f"trusted_targets=[{TARGET}]"
OWN_NET = '''
from torch import nn


class OwnNet(nn.Module):
    """(N, 3, H, W) -> (N, 1, H, W) logits; takes the keys of segpets' model=unet config."""

    def __init__(self, in_channels=3, num_classes=1, width=4, batch_norm=False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 1)
        )

    def forward(self, x):
        return self.body(x)
'''
# segpets' tiny synthetic run with the user's net in place of the UNet
OWN_RUN = [
    *TINY_SYNTHETIC,
    f"model._target_={TARGET}",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.val_images=null",
]


@pytest.fixture(scope="module")
def own_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the user's package ``ownnets`` (put on sys.path by :func:`own`)."""
    root = tmp_path_factory.mktemp("own-package")
    (root / "ownnets").mkdir()
    (root / "ownnets" / "__init__.py").write_text("")
    (root / "ownnets" / "nets.py").write_text(OWN_NET)
    return root


@pytest.fixture
def own(own_package: Path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(own_package))
    return own_package


@pytest.fixture(scope="module")
def own_run(own_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a real (tiny) training run of the user's net: checkpoints/last.ckpt."""
    from segpets.train import train

    out = tmp_path_factory.mktemp("own-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(own_package))
        train(compose_train([*OWN_RUN, "test=false"], out))
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out


def installed_distribution(folder: Path, target: str = TARGET) -> Path:
    """A fake installed package vouching for ``target`` through the entry-point group: what
    ``pip install`` of a project with ``[project.entry-points."segpets.trusted_targets"]``
    writes. Put ``folder`` on sys.path to 'install' it."""
    info = folder / "ownnets_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ownnets-dist\nVersion: 1.0\n")
    module, _, attr = target.rpartition(".")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nownnet = {module}:{attr}\n")
    return folder


def reading(entry, ckpt: Path, tmp_path: Path) -> list[str]:
    """Arguments of a command reading ``ckpt`` and writing under ``tmp_path``."""
    if entry is segpets.eval.main:
        return [f"ckpt_path={ckpt}", "progress_bar=false", "eval.worst_k=0"]
    if entry is segpets.export.main:
        return [f"ckpt_path={ckpt}", f"output={tmp_path / 'model.onnx'}"]
    out = tmp_path / "masks"
    return [f"ckpt_path={ckpt}", f"input={image(tmp_path)}", f"output_dir={out}"]


READERS = [segpets.eval.main, segpets.export.main, segpets.predict.main]
READER_IDS = ["eval", "export", "predict"]


def wrote(entry, tmp_path: Path) -> bool:
    """Whether the command wrote its output (and so got past every check)."""
    if entry is segpets.eval.main:
        return any((tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json"))
    if entry is segpets.export.main:
        return (tmp_path / "model.onnx").is_file()
    return any((tmp_path / "masks").glob("*_mask.png"))


@pytest.mark.parametrize("entry", READERS, ids=READER_IDS)
def test_own_net_unvouched_is_refused_saying_how_to_vouch(
    entry, own, own_run, tmp_path, monkeypatch, capfd
):
    ckpt = own_run / "checkpoints" / "last.ckpt"
    code, err = cli(entry, reading(entry, ckpt, tmp_path), tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, rf"untrusted target '{TARGET}' at model\._target_")
    assert f"trusted_targets=[{TARGET}]" in line and ENTRY_POINT_GROUP in line
    assert not wrote(entry, tmp_path) and not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("entry", READERS, ids=READER_IDS)
def test_own_net_vouched_on_the_command_line(entry, own, own_run, tmp_path, monkeypatch, capfd):
    ckpt = own_run / "checkpoints" / "last.ckpt"
    args = [*reading(entry, ckpt, tmp_path), VOUCH]
    code, err = cli(entry, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert wrote(entry, tmp_path)


@pytest.mark.slow
def test_export_of_own_net_is_vouched_like_a_checkpoint(own, own_run, tmp_path, monkeypatch, capfd):
    """An export carries the training config too: predict reads it only when vouched."""
    onnx = tmp_path / "model.onnx"
    args = [f"ckpt_path={own_run / 'checkpoints' / 'last.ckpt'}", f"output={onnx}", VOUCH]
    code, err = cli(segpets.export.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    predict = [f"ckpt_path={onnx}", f"input={image(tmp_path)}", f"output_dir={tmp_path / 'm'}"]
    code, err = cli(segpets.predict.main, predict, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, rf"untrusted target '{TARGET}'.*trusted_targets=\[")
    code, err = cli(segpets.predict.main, [*predict, VOUCH], tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert list((tmp_path / "m").glob("*_mask.png"))


@pytest.mark.slow
def test_own_net_vouched_in_the_users_config(own, own_run, tmp_path, monkeypatch, capfd):
    """``trusted_targets`` in a primary config of the user's own that extends segpets' eval
    (``--config-dir`` + ``--config-name``), instead of on every command line."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "my_eval.yaml").write_text(
        f"defaults:\n  - eval\n  - _self_\ntrusted_targets: [{TARGET}]\n"
    )
    args = ["--config-dir", str(conf), "--config-name", "my_eval"]
    args += reading(segpets.eval.main, own_run / "checkpoints" / "last.ckpt", tmp_path)
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert wrote(segpets.eval.main, tmp_path)


@pytest.mark.slow
def test_own_net_vouched_by_an_installed_package(own, own_run, tmp_path, monkeypatch, capfd):
    from segpets.checkpoints.trust import installed_targets

    monkeypatch.syspath_prepend(str(installed_distribution(tmp_path / "site")))
    assert TARGET in installed_targets()
    args = reading(segpets.eval.main, own_run / "checkpoints" / "last.ckpt", tmp_path)
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert wrote(segpets.eval.main, tmp_path)


ALL = [segpets.train.main, *READERS]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            f"[{TARGET[:-3]}Nope]",
            rf"trusted_targets: '{TARGET[:-3]}Nope' does not import "
            r"\('ownnets\.nets' has no attribute or submodule 'OwnNope'\)",
        ),
        ("[nosuchpackage.Net]", r"'nosuchpackage\.Net' does not import \(no module named"),
        ("[os]", r"trusted_targets\[0\]: 'os' is not a dotted name"),
        (TARGET, r"trusted_targets: expected a list of dotted names"),
    ],
    ids=["missing class", "missing package", "not dotted", "not a list"],
)
@pytest.mark.parametrize("entry", ALL, ids=["train", *READER_IDS])
def test_trusted_targets_entry_that_does_not_import(
    entry, value, says, own, own_run, tmp_path, monkeypatch, capfd
):
    """One line naming the entry, exit 2, before any work: no run folder, nothing read."""
    ckpt = own_run / "checkpoints" / "last.ckpt"
    args = OWN_RUN if entry is segpets.train.main else reading(entry, ckpt, tmp_path)
    code, err = cli(entry, [*args, f"trusted_targets={value}"], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, says)
    assert not (tmp_path / "outputs").exists() and not wrote(entry, tmp_path)


@pytest.mark.parametrize("entry", ALL, ids=["train-resume", *READER_IDS])
def test_crafted_checkpoint_is_refused_whatever_else_is_vouched_for(
    entry, own, tmp_path, monkeypatch, capfd
):
    """Vouching for one class trusts that class, nothing else a file names."""
    monkeypatch.syspath_prepend(str(installed_distribution(tmp_path / "site")))
    marker = tmp_path / "pwned"
    config = OmegaConf.to_container(compose_train(TINY_SYNTHETIC, tmp_path / "r"), resolve=True)
    ckpt = save_ckpt(tmp_path / "evil.ckpt", crafted(config, "model", marker, tmp_path))
    args = [*TINY_SYNTHETIC, f"ckpt_path={ckpt}"]
    args = args if entry is segpets.train.main else reading(entry, ckpt, tmp_path)
    code, err = cli(entry, [*args, VOUCH], tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"untrusted target 'os\.makedirs' at model\._target_")
    assert not marker.exists()


@pytest.mark.slow
def test_own_net_resumes_and_tests_without_vouching(own, own_run, tmp_path, monkeypatch, capfd):
    """A training run trusts the targets its own config builds (the user's net here) in the
    checkpoint it resumes from or tests: it never builds the stored config."""
    last = own_run / "checkpoints" / "last.ckpt"
    args = [*OWN_RUN, "trainer.max_epochs=2", f"ckpt_path={last}", "test=false"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    args = [*OWN_RUN, "train=false", f"ckpt_path={last}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]


@pytest.mark.slow
def test_resume_trusts_only_what_its_own_config_builds(own, own_run, tmp_path, monkeypatch, capfd):
    """A checkpoint of the user's net whose data section names another class is refused on
    resume: the run's own config does not build that class."""
    ckpt = torch.load(own_run / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["hyper_parameters"]["config"]["data"]["_target_"] = "os.makedirs"
    ckpt["hyper_parameters"]["config"]["data"]["name"] = str(marker)
    torch.save(ckpt, tmp_path / "evil.ckpt")
    args = [*OWN_RUN, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'evil.ckpt'}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"untrusted target 'os\.makedirs' at data\._target_")
    assert not marker.exists()


def test_vouched_targets_pass_the_stored_config_check(own) -> None:
    from segpets.checkpoints.trust import listed_targets

    section = {"_target_": TARGET, "width": 4}
    with pytest.raises(ConfigError, match=re.escape(f"trusted_targets=[{TARGET}]")):
        check_plain_data(section, "model", "x")
    check_plain_data(section, "model", "x", vouched=listed_targets({"trusted_targets": [TARGET]}))
    with pytest.raises(ConfigError, match="untrusted target 'os.makedirs'"):
        check_plain_data({"_target_": "os.makedirs"}, "model", "x", vouched={TARGET})
