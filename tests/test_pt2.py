"""A ``.pt2`` (torch.export) archive is data: the ways ``torch.export.load`` would run what a
crafted archive names are refused before torch reads it, with one line naming the file.

Each crafted archive is first shown to run its payload when torch loads it directly (a marker
folder appears), so the refusal is of something real."""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import segpets.predict
from segpets.command.build import build_module
from segpets.errors import ConfigError
from segpets.export import export_net
from segpets.inference.model import load_model
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train
from tests.test_bad_inputs import RunsCode


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export of a tiny UNet with its real training config."""
    folder = tmp_path_factory.mktemp("pt2")
    cfg = compose_train([*TINY_SYNTHETIC, "model.width=4"], folder)
    net = build_module(cfg, with_optimizer=False).net.eval()
    path = folder / "model.pt2"
    export_net(net, OmegaConf.to_container(cfg, resolve=True), "torch_export", path)
    return path


def rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """A copy of the archive ``src`` with each entry's bytes passed through ``change`` (name
    relative to the root folder; ``None`` keeps them)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            name = info.filename.split("/", 1)[1]
            changed = change(name, data)
            new.writestr(info.filename, data if changed is None else changed)
    return dst


def edit_program(edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes | None]:
    def change(name: str, data: bytes) -> bytes | None:
        if name != "models/model.json":
            return None
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()

    return change


def pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"x": RunsCode(marker)}, buffer)
    return buffer.getvalue()


def crafted(kind: str, good: Path, marker: Path, folder: Path) -> Path:
    """``good`` with one payload that creates ``marker`` when torch loads and runs it."""
    code = f"__import__('os').mkdir({str(marker)!r})"
    if kind == "guard":  # compiled into Python by ExportedProgram.module()

        def edit(p):
            p["guards_code"] = [*p.get("guards_code", []), code]

        change = edit_program(edit)
    elif kind == "symbolic expression":  # parsed by sympy.sympify (eval)

        def edit(p):
            values = p["graph_module"]["graph"]["sym_int_values"]
            first = next(v for v in values.values() if "as_expr" in v)
            first["as_expr"]["expr_str"] = code

        change = edit_program(edit)
    elif kind == "pickled weight":  # torch.load(weights_only=False)

        def change(name, data):
            if name == "data/weights/model_weights_config.json":
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                return json.dumps(config).encode()
            return pickled(marker) if name == "data/weights/weight_0" else None

    elif kind == "sample inputs":  # retried with weights_only=False when the safe load fails

        def change(name, data):
            return pickled(marker) if name == "data/sample_inputs/model.pt" else None

    else:  # a node target resolved by attribute walks from `torch`: any callable there

        def edit(p):
            node = p["graph_module"]["graph"]["nodes"][-1]
            node["target"] = "torch.serialization.os.mkdir"

        change = edit_program(edit)
    return rewrite(good, folder / f"{kind.replace(' ', '_')}.pt2", change)


def load_with_torch(path: Path) -> None:
    """What loading without segpets' checks does: load, build the module, run it once."""
    with contextlib.suppress(Exception):  # the payload runs (or not) before what fails next
        torch.export.load(str(path)).module()(torch.randn(1, 3, 32, 32))


KINDS = ["guard", "symbolic expression", "pickled weight", "sample inputs", "node target"]
REASONS = {
    "guard": "shape guard '__import__",
    "symbolic expression": "symbolic expression '__import__",
    "pickled weight": "weights '.*' is not stored as a plain tensor",
    "sample inputs": "sample inputs need more than tensors",
    "node target": "graph calls 'torch.serialization.os.mkdir', not an ATen operator",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_crafted_archive_is_refused_before_torch_reads_it(
    kind: str, good_pt2: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    marker = tmp_path / "pwned"
    evil = crafted(kind, good_pt2, marker, tmp_path)
    if kind != "node target":  # the payload is real: torch's own load runs it
        load_with_torch(evil)
        assert marker.is_dir(), f"{kind}: the crafted archive did not run its payload"
        marker.rmdir()
    with pytest.raises(ConfigError, match=REASONS[kind]):
        load_model(evil)
    assert not marker.exists()

    image = tmp_path / "cat.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (120, 80, 60)).save(image)
    args = [f"ckpt_path={evil}", f"input={image}", f"output_dir={tmp_path / 'masks'}"]
    code, err = cli(segpets.predict.main, args, tmp_path, monkeypatch, capfd)
    assert_one_line_error(code, err, re.escape(str(evil)) + ".*" + REASONS[kind])
    assert not marker.exists() and not (tmp_path / "masks").exists()


@pytest.mark.slow
def test_compiled_code_and_unknown_entries_are_refused(good_pt2: Path, tmp_path: Path) -> None:
    evil = rewrite(good_pt2, tmp_path / "aoti.pt2", lambda name, data: None)
    with zipfile.ZipFile(evil, "a") as archive:
        archive.writestr("model/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ConfigError, match="unexpected entry 'data/aotinductor/model/model.so'"):
        load_model(evil)


@pytest.mark.slow
def test_the_real_export_passes_and_loads(good_pt2: Path) -> None:
    model = load_model(good_pt2)
    assert model.config.model.width == 4
    logits = model.logits(torch.randn(3, 3, 48, 80))  # other batch and H×W than traced
    assert logits.shape == (3, 1, 48, 80) and torch.isfinite(logits).all()


def test_not_an_archive_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="refusing torch.export archive .* unreadable"):
        load_model(bad)
