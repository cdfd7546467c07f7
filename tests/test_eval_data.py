"""segpets.eval and the data settings a checkpoint stores (issue 23.6): every ``data.*`` key an
error message of eval tells users to set is accepted by eval; paths of the training machine
(the cache folder) are not used; the split's files, the cache and the per-group labels are
checked before the test pass, and ``metrics.json`` is written before the extras."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import segpets.eval
from segpets.data.files import read_split
from segpets.data.oxford_pet import image_path
from segpets.errors import DataError
from tests.conftest import REPO, assert_one_line_error, cli, compose_config, compose_train
from tests.test_bad_inputs import pets  # noqa: F401  (a fixture)
from tests.test_folder_data import make_folder

MESSAGE_CALLS = {"DataError", "ConfigError", "warning", "error", "info", "warn", "print"}
# data.key, data.a/b/c, data.a/data.b; not segpets.data.x
HINT = re.compile(r"(?<![\w.])data\.([a-z_]+(?:/(?:data\.)?[a-z_]+)*)")


def hinted_keys(*sources: str) -> set[str]:
    """``data.*`` keys named in the messages (errors raised, lines logged or printed) of the
    given source files or folders of the package."""
    keys: set[str] = set()
    for source in sources:
        path = REPO / "segpets" / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for node in ast.walk(ast.parse(file.read_text())):
                func = getattr(node, "func", None)
                name = getattr(func, "attr", None) or getattr(func, "id", None)
                if isinstance(node, ast.Call) and name in MESSAGE_CALLS:
                    for part in ast.walk(node):
                        if isinstance(part, ast.Constant) and isinstance(part.value, str):
                            for match in HINT.findall(part.value):
                                keys.update(k.removeprefix("data.") for k in match.split("/"))
    return keys


def test_every_data_key_a_message_names_is_accepted_by_the_command_printing_it() -> None:
    """eval prints the messages of the data modules, of eval itself and of its report; each
    ``data.<key>`` they name is a key of eval's config (no ``+`` needed). train prints every
    message; each key is one of a data config's."""
    eval_keys = hinted_keys("data", "eval.py", "evaluation", "checkpoints")
    assert {"bad_samples", "allow_test_overlap", "cache", "root", "ignore"} <= eval_keys
    # Hydra refuses data.<key>=... (struct config) unless eval's data node holds the key
    assert sorted(eval_keys - set(compose_config("eval", ["ckpt_path=x"]).data)) == []
    train_keys = set()
    for option in ("oxford_pet", "folder", "synthetic"):
        train_keys |= set(compose_config("train", [f"data={option}"]).data)
    assert hinted_keys(".") <= train_keys


@pytest.fixture
def ckpt_trained_with_cache(tiny_ckpt: Path, tmp_path: Path) -> Path:
    """tiny_ckpt as if trained with ``data.cache=true`` on a machine whose cache folder cannot
    exist here."""
    saved = torch.load(tiny_ckpt, weights_only=True)
    data = saved["hyper_parameters"]["config"]["data"]
    data.update(cache=True, cache_dir="/proc/training-machine/cache/arrays")
    torch.save(saved, tmp_path / "cached.ckpt")
    return tmp_path / "cached.ckpt"


def test_eval_caches_on_this_machine(ckpt_trained_with_cache, pets, tmp_path, monkeypatch, capfd):  # noqa: F811
    args = [f"ckpt_path={ckpt_trained_with_cache}", f"data.root={pets}", "hydra.run.dir=ev"]
    code, err = cli(segpets.eval.main, [*args, "progress_bar=false"], tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["images"] == 2
    cache = Path(compose_train([], tmp_path).paths.cache_dir) / "arrays"  # SEGPETS_CACHE_DIR
    assert list(cache.glob(f"{pets.name}-*/test-64px-*/images.npy"))


def test_a_cache_folder_that_cannot_be_made_is_one_line(
    ckpt_trained_with_cache,
    pets,  # noqa: F811
    tmp_path,
    monkeypatch,
    capfd,
):
    args = [f"ckpt_path={ckpt_trained_with_cache}", f"data.root={pets}", "hydra.run.dir=ev"]
    args += ["data.cache_dir=/proc/nowhere/arrays"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(
        code, err, r"data\.cache_dir: cannot create the cache folder '/proc/nowhere/arrays/"
    )
    assert not (tmp_path / "ev").exists()  # refused before the pass: no run folder


@pytest.mark.slow
def test_eval_scores_without_bad_files_when_told(tiny_ckpt, pets, tmp_path, monkeypatch, capfd):  # noqa: F811
    """``data.bad_samples=skip``, as eval's own message suggests, scores the readable rest."""
    broken = read_split(pets / "annotations" / "test.txt")[0]
    image_path(pets, broken).write_bytes(b"not a picture")
    args = [f"ckpt_path={tiny_ckpt}", f"data.root={pets}", "hydra.run.dir=ev"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, r"data\.bad_samples=skip would train without those samples")
    assert not (tmp_path / "ev").exists()
    args += ["data.bad_samples=skip", "progress_bar=false"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert code == 0, err[-3000:]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["images"] == 1


@pytest.fixture
def folder_ckpt(tiny_ckpt: Path, mini_root: Path, tmp_path: Path) -> Path:
    """tiny_ckpt's net as if trained with ``data=folder`` on a copy of 20 mini-set pairs."""
    from segpets.command.build import build_module

    root = make_folder(mini_root, tmp_path / "mine", count=20)
    overrides = ["data=folder", f"data.images={root / 'images'}", f"data.masks={root / 'masks'}"]
    overrides += ["model.width=4", "model.batch_norm=true", "data.image_size=64"]
    module = build_module(compose_train(overrides, tmp_path / "run"), with_optimizer=False)
    saved = torch.load(tiny_ckpt, weights_only=True)
    saved["hyper_parameters"]["config"] = module.hparams.config
    torch.save(saved, tmp_path / "folder.ckpt")
    return tmp_path / "folder.ckpt"


def test_a_bad_groups_file_is_refused_before_the_pass(folder_ckpt, tmp_path, monkeypatch, capfd):
    groups = tmp_path / "groups.csv"
    groups.write_bytes("stem,group\nAbyssinian_1,chat\n".encode("utf-16"))  # not UTF-8
    args = [f"ckpt_path={folder_ckpt}", f"data.groups={groups}", "hydra.run.dir=ev"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, rf"data\.groups file '{groups}' is not UTF-8 text")
    assert not (tmp_path / "ev").exists()  # the pass never started


def test_metrics_are_written_before_the_extras(folder_ckpt, tmp_path, monkeypatch, capfd):
    """If writing the per-image tables or overlays fails, the scores are already on disk."""

    def broken(*args, **kwargs):
        raise DataError("the extras failed")

    monkeypatch.setattr(segpets.eval, "_write_breakdown", broken)
    args = [f"ckpt_path={folder_ckpt}", "hydra.run.dir=ev", "progress_bar=false"]
    code, err = cli(segpets.eval.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, "the extras failed")
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["images"] == 2
    assert read_split(tmp_path / "ev" / "splits" / "test.txt")  # the split scored, beside it
