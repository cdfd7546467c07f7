"""Records that tell the truth and survive (issue 23.9, 23.10): segpets.summarize skips a run
whose record it cannot read (naming it) and tabulates the rest; TensorBoard's HPARAMS row is
on disk when training returns; a test on a subset of the test set says so and stores the
counts; summary files and bench reports are renamed into place whole."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.summary.writer.record_writer import RecordWriter

from segpets.bench import write_reports
from segpets.summarize import main, summarize
from segpets.train import _log_hparams, train
from tests.conftest import TINY_SYNTHETIC, compose_train
from tests.test_summarize import fake_run

BAD_OVERRIDES = {
    "a YAML tag": "!!python/object/apply:os.system ['echo pwned']\n",
    "a bare scalar": "lr=0.1\n",
    "broken YAML": "- a=1\n- [b=2\n",
    "a mapping": "optimizer.lr: 0.1\n",
    "not UTF-8": b"\xff\xfe- a=1\n",
}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    fake_run(root / "0", ["model.width=4", "optimizer.lr=1e-4"], [0.5, 0.6], 0.58)
    fake_run(root / "1", ["model.width=4", "optimizer.lr=1e-3"], [0.7, 0.8], 0.79)
    return root


@pytest.mark.parametrize("bad", list(BAD_OVERRIDES))
def test_summarize_skips_a_bad_run_record_and_tabulates_the_rest(bad, sweep, capsys) -> None:
    record = fake_run(sweep / "2", ["model.width=4"], [0.9], 0.9) / ".hydra" / "overrides.yaml"
    content = BAD_OVERRIDES[bad]
    record.write_bytes(content if isinstance(content, bytes) else content.encode())
    main([str(sweep)])  # no SystemExit: the table is written
    captured = capsys.readouterr()
    assert "2 runs in" in captured.out and "optimizer.lr=1e-3" in captured.out
    (warning,) = [line for line in captured.err.splitlines() if "skipping run" in line]
    assert warning.startswith("segpets: warning: ") and str(record) in warning
    rows = summarize(sweep)
    assert [Path(r["run"]).name for r in rows] == ["1", "0"]
    assert "Traceback" not in captured.err


def test_summarize_with_no_readable_run_is_one_line(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "sweep" / "0", ["a=1"], [0.5], None)
    (run / ".hydra" / "overrides.yaml").write_text("[unclosed\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "sweep")])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"segpets: error: none of the 1 runs under '{tmp_path / 'sweep'}' has a "
                      "readable record"]  # fmt: skip


def test_hparams_are_on_disk_when_training_returns(tmp_path: Path, monkeypatch) -> None:
    """The HPARAMS row is written after the test closed the logger's writer, which reopens;
    its events must be on disk before train returns: TensorBoard writes them from a daemon
    thread, and a process exiting next lost them in 8 of 24 runs. Here the thread is slowed
    down (0.2 s a record) so that whatever it has not written yet shows."""
    real_write = RecordWriter.write

    def slow_write(self, data):
        time.sleep(0.2)
        return real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", slow_write)
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="", default_hp_metric=False)
    logger.log_metrics({"val/dice": 0.5}, step=1)
    logger.finalize("success")  # what the end of trainer.test leaves
    cfg = compose_train([*TINY_SYNTHETIC, "optimizer.lr=0.003"], tmp_path)
    _log_hparams(cfg, SimpleNamespace(loggers=[logger]), {"best/val/dice": 0.6, "test/dice": 0.5})
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(
        events.PluginTagToContent("hparams")
    )
    assert events.Scalars("hp/test/dice")[0].value == pytest.approx(0.5)


@pytest.mark.slow
def test_a_test_on_a_subset_says_so_and_stores_the_counts(tmp_path: Path, capsys) -> None:
    """trainer.limit_test_batches=1 (4 of the 12 test images): printed as "on 4 of 12 test
    images" and stored in test_metrics.json; a full test says nothing of the kind."""
    run = tmp_path / "run"
    train(compose_train([*TINY_SYNTHETIC, "trainer.max_epochs=1", "logger=csv"], run))
    report = json.loads((run / "test_metrics.json").read_text())
    assert (report["images"], report["images_total"]) == (4, 12)
    out = capsys.readouterr().out
    assert f"= {report['metrics']['test/dice']:.4f} on 4 of 12 test images  [checkpoint:" in out

    full = tmp_path / "full"
    args = ["train=false", f"ckpt_path={report['ckpt_path']}", "trainer.limit_test_batches=1.0"]
    train(compose_train([*TINY_SYNTHETIC, "trainer.max_epochs=1", "logger=csv", *args], full))
    report = json.loads((full / "test_metrics.json").read_text())
    assert (report["images"], report["images_total"]) == (12, 12)
    assert " test images  [checkpoint:" not in capsys.readouterr().out


def test_summary_and_bench_reports_are_renamed_into_place(sweep, tmp_path, replaced_paths):
    replaced = replaced_paths
    summarize(sweep, out=tmp_path / "summary")
    bench = tmp_path / "bench"
    meta = {
        "model": "UNet", "params_M": 1.0, "image_size": 64, "batch_size": 2, "precision": "32",
        "machine": "test", "torch": "x", "threads": 1, "load_average": 0, "date_utc": "now",
        "timing": "t",
    }  # fmt: skip
    write_reports([], meta, bench)
    written = [*(tmp_path / "summary").iterdir(), *bench.iterdir()]
    assert {p.name for p in written} == {
        "summary.csv", "summary_loss.png", "summary_val_dice.png",
        "bench.md", "bench.csv", "bench.json",
    }  # fmt: skip
    assert {str(p) for p in written} <= replaced
    assert yaml.safe_load((bench / "bench.json").read_text())["rows"] == []
