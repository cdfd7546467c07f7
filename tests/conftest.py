"""Shared fixtures and helpers: the real mini dataset, composed configs, a command run in
process (``cli``) or as a subprocess (``run_segpets``), an isolated cache folder."""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONFIG_MODULE = "segpets.configs"  # the configs ship inside the package
CONFIG_DIR = REPO / "segpets" / "configs"
MINI_DATA = Path(
    os.environ.get("SEGPETS_MINI_DATA", REPO.parent / "shared" / "data" / "oxford-pet-mini")
)
# the complete official split and list files of Oxford-IIIT Pet (no images)
FULL_LISTS = Path(
    os.environ.get("SEGPETS_FULL_LISTS", REPO.parent / "shared" / "data" / "oxford-pet-lists")
)
# Exports through torch.export (ONNX's dynamo exporter, .pt2) take seconds each: those
# parameters of a test run with the slow tests only
ONNX_SLOW = pytest.param("onnx", marks=pytest.mark.slow)
TORCH_EXPORT_SLOW = pytest.param("torch_export", marks=pytest.mark.slow)
# small real inputs segpets once got wrong (../shared/cases/README.md)
CASES = Path(os.environ.get("SEGPETS_CASES", REPO.parent / "shared" / "cases"))


def run_segpets(
    command: str,
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    expect: int | None = 0,
) -> subprocess.CompletedProcess:
    """``python -m segpets.<command> *args`` in ``cwd`` as a user runs it (a subprocess, its
    output captured as text); asserts its exit code is ``expect`` unless that is ``None``."""
    proc = subprocess.run(
        [sys.executable, "-m", f"segpets.{command}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None:
        assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def cli(main: Callable, args: list[str], cwd: Path, monkeypatch, capfd) -> tuple[int, str]:
    """Run a Hydra entry point as ``python -m`` would; (exit code, stderr). Log lines (stdout)
    are kept in ``cli.stdout``."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [main.__module__, *args])
    # Hydra finds configs relative to the entry point's file only when it runs as __main__
    monkeypatch.setattr(inspect.unwrap(main), "__module__", "__main__")
    capfd.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capfd.readouterr()
    cli.stdout = captured.out
    return code, captured.err


def assert_one_line_error(code: int, err: str, pattern: str) -> str:
    """The error contract: exit code 2, no traceback, one ``segpets: error:`` line in ``err``
    and it matches ``pattern`` (a regular expression); returns that line."""
    lines = [line for line in err.splitlines() if line.startswith("segpets: error:")]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def replaced_paths(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every destination ``os.replace`` renames a file onto while the test runs (what an
    atomic write leaves under its final name)."""
    replaced: set[str] = set()
    real_replace = os.replace

    def recording(src, dst, *args, **kwargs):
        replaced.add(str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    return replaced


@pytest.fixture(autouse=True)
def python_processes_only_in_slow_tests(request: pytest.FixtureRequest, monkeypatch) -> None:
    """A test not marked ``slow`` that starts a Python interpreter fails: each one costs seconds
    of imports, and ``make test-fast`` (``-m "not slow"``) must stay fast (CONTRIBUTING.md)."""
    if request.node.get_closest_marker("slow"):
        return
    real_init = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        program = args if isinstance(args, (str, bytes, os.PathLike)) else next(iter(args), "")
        if Path(os.fsdecode(program)).name.startswith("python"):
            pytest.fail(f"{request.node.nodeid} starts a Python process; mark it slow")
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


FAST_TEST_LIMIT_S = 2.0  # a test not marked slow takes less, its fixtures aside (CONTRIBUTING)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After the run, the tests not marked ``slow`` whose own time (the call, fixtures aside)
    reached ``FAST_TEST_LIMIT_S``: candidates for the mark, so ``make test-fast`` stays ~3 min."""
    over = sorted(
        (report.duration, report.nodeid)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        and report.duration >= FAST_TEST_LIMIT_S
        and "slow" not in report.keywords
    )
    if over:
        terminalreporter.write_sep("-", f"not marked slow, yet over {FAST_TEST_LIMIT_S:.0f} s")
        for duration, nodeid in reversed(over):
            terminalreporter.write_line(f"{duration:5.1f} s  {nodeid}")


@pytest.fixture(autouse=True)
def restore_root_logging():
    """In-process Hydra runs attach handlers to the root logger that write to the (pytest-
    captured, later closed) stderr of that test; drop them so later tests log cleanly."""
    handlers, level = list(logging.root.handlers), logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture(autouse=True)
def forget_hydra_run():
    """An in-process Hydra run (``--cfg job`` above all) leaves its HydraConfig set; the next
    test that calls ``train(cfg)`` directly must not see that run's folder."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_xdist_worker() -> None:
    """Under pytest-xdist (``make test``, ``make test-fast``: one worker per core) each worker
    computes on one thread: tiny tensors gain nothing from more, and two workers of two threads
    on two cores slow each other down."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data goes to a per-session folder (also for subprocesses), never ~/.cache."""
    cache = tmp_path_factory.mktemp("segpets-cache")
    os.environ["SEGPETS_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The 400-image Oxford-IIIT Pet subset in ../shared (read-only); skip where absent."""
    if not (MINI_DATA / "annotations" / "trainval.txt").is_file():
        pytest.skip(f"real mini dataset not found at {MINI_DATA} (set SEGPETS_MINI_DATA)")
    return MINI_DATA


# A tiny net on a small generated set: a training run of 2 epochs of 2 batches takes ~2 s.
TINY_SYNTHETIC = [
    "data=synthetic",
    "data.num_trainval=40",
    "data.num_test=12",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "model.width=4",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_test_batches=1",
    "callbacks.progress_bar.refresh_rate=0",
]


_COMPOSED: dict[tuple, DictConfig] = {}


def compose_config(
    name: str, overrides: list[str], return_hydra_config: bool = False
) -> DictConfig:
    """The real config ``name`` (train, eval, predict, export, bench) composed by Hydra with
    ``overrides``, as the command line would (with its ``hydra`` node if asked), from the
    configs inside the package. A copy: a test may change it. The same command line in the same
    folder composes once per test process (~0.25 s each on 2 cores): segpets' config files do
    not change while the tests run, and interpolations (``${oc.env:...}``, paths) stay
    unresolved in the copy. Overrides of ``hydra.*`` (a search path into a test's own folder,
    whose files it may change) compose every time."""
    key = (name, tuple(overrides), return_hydra_config, os.getcwd())
    if key in _COMPOSED:
        return copy.deepcopy(_COMPOSED[key])
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=return_hydra_config)
    if not any(o.lstrip("+~").startswith("hydra.") for o in overrides):
        _COMPOSED[key] = copy.deepcopy(cfg)
    return cfg


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """The real train config, composed as the CLI would, writing under ``output_dir``."""
    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def fit_steps(cfg: DictConfig, out: Path, steps: int = 8):
    """(trainer, module in eval mode, its logits on the first validation batch) after
    ``steps`` training steps of the composed ``cfg`` on the CPU, seed 0, without validation."""
    import lightning as L
    import torch

    from segpets.command.build import build_module, instantiate_or_explain

    L.seed_everything(0)
    module = build_module(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    datamodule = instantiate_or_explain(cfg.data, "data")
    trainer.fit(module, datamodule=datamodule)
    module.eval()
    with torch.no_grad():
        batch = next(iter(datamodule.val_dataloader()))
        return trainer, module, module(module.normalize(batch["image"]))


@pytest.fixture(scope="session")
def tiny_ckpt(mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-4 UNet trained for 8 steps at 64 px on the mini set (head bias recentred),
    saved by a Trainer with the real training config inside (eval/predict/export tests)."""
    import torch

    out = tmp_path_factory.mktemp("tiny-ckpt")
    overrides = [f"data.root={mini_root}", "model.width=4", "model.batch_norm=true"]
    overrides += ["data.image_size=64", "data.batch_size=8", "data.num_workers=0"]
    cfg = compose_train(overrides, out)
    trainer, module, logits = fit_steps(cfg, out)
    # 8 steps leave every pixel on one side of 0; shift the head's bias so ~40% of the
    # validation pixels are pet, so thresholded masks (parity, TTA, overlays) are not trivial
    with torch.no_grad():
        module.net.head.bias -= logits.quantile(0.6)
    trainer.save_checkpoint(out / "tiny.ckpt")
    return out / "tiny.ckpt"
