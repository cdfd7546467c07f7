"""logger=mlflow | wandb | many_loggers | [a,b]: one tiny run with every logger at once, read
back through each library's own reader: MLflow's client on the SQLite store, W&B's offline run
file (its protobuf records), TensorBoard's EventAccumulator, the CSV logger's files. Nothing
goes online: W&B runs offline (WANDB_MODE=offline too), MLflow writes a local SQLite file."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import segpets.train
from segpets.command.checks import check_values
from segpets.command.loggers import build_loggers, sqlite_path
from segpets.errors import ConfigError
from segpets.train import train
from tests.conftest import TINY_SYNTHETIC, assert_one_line_error, cli, compose_train

TAGS = ["tiny", "loggers-test"]


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte W&B header, then
    LevelDB log blocks of 32 KiB holding records (4-byte CRC, 2-byte length, 1-byte type:
    1 full, 2 first, 3 middle, 4 last), each a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, records, pending = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(pending + chunk)
            pending = b""
        elif kind in (2, 3):
            pending += chunk
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run (2 epochs, then test) with logger=many_loggers and TAGS, in a scratch
    working directory; W&B kept offline and its own folders inside the scratch folder too."""
    root = tmp_path_factory.mktemp("loggers")
    env = pytest.MonkeyPatch()
    env.chdir(root)
    env.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env.setenv(var, str(root / "wandb-home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        overrides = [*TINY_SYNTHETIC, "logger=many_loggers", f"tags=[{','.join(TAGS)}]"]
        overrides += [f"paths.log_dir={root / 'logs'}", "trainer.log_every_n_steps=1"]
        cfg = compose_train(overrides, root / "logs" / "run")
        metrics = train(cfg)
    finally:
        torch.set_num_threads(threads)
        env.undo()
    out = root / "logs" / "run"
    return {"root": root, "out": out, "cfg": cfg, "metrics": metrics}


def test_many_loggers_is_every_logger(tmp_path: Path) -> None:
    cfg = compose_train(["logger=many_loggers"], tmp_path)
    assert set(cfg.logger) == {"csv", "tensorboard", "mlflow", "wandb"}
    two = compose_train(["logger=[csv,tensorboard]"], tmp_path)  # any list of options
    assert set(two.logger) == {"csv", "tensorboard"}
    built = build_loggers(two.logger)
    assert [type(lg) for lg in built] == [CSVLogger, TensorBoardLogger]


def test_mlflow_store_is_sqlite_under_the_log_dir(tmp_path: Path) -> None:
    cfg = compose_train(["logger=mlflow", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    uri = cfg.logger.mlflow.tracking_uri
    assert uri == f"sqlite:///{tmp_path / 'logs'}/mlflow.db"
    assert sqlite_path(uri) == tmp_path / "logs" / "mlflow.db"
    assert cfg.logger.mlflow.experiment_name == cfg.task_name
    assert cfg.logger.mlflow.log_model is False  # checkpoints are not copied into MLflow
    assert compose_train(["logger=wandb"], tmp_path).logger.wandb.offline is True


@pytest.mark.slow
def test_mlflow_run_read_back_with_mlflows_client(run: dict) -> None:
    from mlflow.tracking import MlflowClient

    store = run["out"].parent / "mlflow.db"
    assert store.read_bytes()[:16] == b"SQLite format 3\x00"  # a real database file
    assert not (run["root"] / "mlruns").exists()  # nothing beside it, nothing elsewhere
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("train")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    # params: the flattened run config
    params = found.data.params
    assert params["config/optimizer/lr"] == str(run["cfg"].optimizer.lr)
    assert params["config/model/width"] == "4"
    assert params["config/data/_target_"] == run["cfg"].data._target_
    assert len(params) > 100
    # metrics as logged: two validations, the test, the best value
    history = client.get_metric_history(found.info.run_id, "val/dice")
    assert len(history) == 2
    logged = found.data.metrics
    assert logged["test/dice"] == pytest.approx(run["metrics"]["test/dice"])
    assert logged["best/val/dice"] == pytest.approx(max(m.value for m in history))
    # tags: the run's, its folder, the checkpoint that was tested
    tags = found.data.tags
    assert set(TAGS) <= set(tags)
    assert tags["segpets.run_dir"] == str(run["out"].resolve())
    tested = json.loads((run["out"] / "test_metrics.json").read_text())["ckpt_path"]
    assert tags["segpets.tested_checkpoint"] == tested and Path(tested).is_file()


@pytest.mark.slow
def test_wandb_offline_run_read_back_from_its_files(run: dict) -> None:
    (folder,) = (run["out"] / "wandb").glob("offline-run-*")  # under the run, offline
    (log,) = folder.glob("run-*.wandb")
    records = wandb_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds and records[kinds.index("exit")].exit.exit_code == 0
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert list(runs[-1].tags) == TAGS and runs[-1].run_group == "train"
    config = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["config"]["optimizer"]["lr"] == run["cfg"].optimizer.lr
    history = [
        json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
        if "/".join(item.nested_key) == "val/dice" or item.key == "val/dice"
    ]
    assert len(history) == 2
    summary = {
        "/".join(item.nested_key) or item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    tested = json.loads((run["out"] / "test_metrics.json").read_text())["ckpt_path"]
    assert summary["tested_checkpoint"] == tested
    assert summary["best/val/dice"] == pytest.approx(max(history))


@pytest.mark.slow
def test_tensorboard_and_csv_carry_the_tags_and_metrics(run: dict) -> None:
    acc = EventAccumulator(str(run["out"] / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = acc.Tensors("tags/text_summary")
    assert text.tensor_proto.string_val[0].decode() == ", ".join(TAGS)
    plugin = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["tags"].string_value == ", ".join(TAGS)
    dice = [e.value for e in acc.Scalars("val/dice")]

    rows = list(csv.DictReader((run["out"] / "csv" / "metrics.csv").open()))
    assert [float(r["val/dice"]) for r in rows if r["val/dice"]] == pytest.approx(dice)
    hparams = yaml.safe_load((run["out"] / "csv" / "hparams.yaml").read_text())
    assert hparams["tags"] == TAGS and hparams["config"]["tags"] == TAGS


@pytest.mark.slow
def test_loggers_agree_on_the_validation_dice(run: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run['out'].parent / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    mlflow_dice = [m.value for m in client.get_metric_history(found.info.run_id, "val/dice")]
    acc = EventAccumulator(str(run["out"] / "tensorboard")).Reload()
    assert mlflow_dice == pytest.approx([e.value for e in acc.Scalars("val/dice")])


@pytest.mark.parametrize(
    "case",
    ["parent is a file", "store is a folder", "store is not SQLite"],
)
def test_unusable_mlflow_store_is_one_line_before_training(
    case: str, tmp_path: Path, monkeypatch, capfd
) -> None:
    blocker = tmp_path / "blocker"
    if case == "parent is a file":
        blocker.write_text("a file where the store's folder would be")
        store = blocker / "mlflow.db"
    elif case == "store is a folder":
        store = blocker
        store.mkdir()
    else:
        store = tmp_path / "notes.txt"
        store.write_text("my notes, not a database")
    args = [*TINY_SYNTHETIC, "logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{store}"]
    code, err = cli(segpets.train.main, args, tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"logger\.mlflow\.tracking_uri: cannot use the MLflow")
    assert str(store) in line
    assert not (tmp_path / "outputs").exists()  # refused before anything was written
    if case == "store is not SQLite":
        assert store.read_text() == "my notes, not a database"  # the user's file untouched


def test_a_logger_without_its_package_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import segpets.command.loggers as loggers

    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(
        loggers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real(name),
    )
    cfg = compose_train(["logger=many_loggers"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"logger\.wandb: needs the wandb package.*segpets\[loggers\]"
    ):
        check_values(cfg)


def test_unknown_logger_in_a_list_lists_the_choices(tmp_path: Path, monkeypatch, capfd) -> None:
    code, err = cli(segpets.train.main, ["logger=[csv,nope]"], tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"logger=\[csv,nope\]: 'nope': no such option")
    assert line.endswith("choices: csv, many_loggers, mlflow, none, tensorboard, wandb")
    code, err = cli(segpets.train.main, ["callbacks=[default,x]"], tmp_path, monkeypatch, capfd)
    line = assert_one_line_error(code, err, r"callbacks=\[default,x\]: 'x': no such option")
    assert "early_stopping" in line
    assert not (tmp_path / "outputs").exists()
