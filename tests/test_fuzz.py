"""Fuzz the loader with mutated real files: every mutated image/trimap pair either loads into
well-formed tensors or raises segpets' ``DataError`` (one clear line naming the file); nothing
else escapes, nothing crashes the process, nothing hangs (10 s alarm per example).

CI runs a bounded, derandomized subset (``SEGPETS_FUZZ_EXAMPLES``, default 200). The full run
(≥ 10,000 random examples) is ``scripts/fuzz.sh``.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segpets.data.dataset import SegmentationDataset
from segpets.data.oxford_pet import OxfordPetSource, image_path, scan_sample, trimap_path
from segpets.errors import DataError
from tests.conftest import compose_train

EXAMPLES = int(os.environ.get("SEGPETS_FUZZ_EXAMPLES", "200"))
# JPEG cat and dog, the RGBA PNG and the GIF named .jpg: the real dataset's formats
SEEDS = ["Abyssinian_1", "american_bulldog_10", "Abyssinian_5", "Abyssinian_34"]
TIMEOUT_S = 10

position = st.one_of(st.integers(0, 700), st.integers(0, 2**20))  # headers, or anywhere
operation = st.tuples(
    st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "repeat"]),
    position,
    st.binary(min_size=1, max_size=24),
)
mutation = st.tuples(
    st.sampled_from(SEEDS),
    st.sampled_from(["image", "trimap", "both"]),
    st.lists(operation, min_size=1, max_size=6),
)


def mutate(data: bytes, operations: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, payload in operations:
        at = pos % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= 1 << (payload[0] % 8)
        elif kind == "overwrite":
            buf[at : at + len(payload)] = payload
        elif kind == "insert":
            buf[at:at] = payload
        elif kind == "delete":
            del buf[at : at + payload[0]]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "repeat":  # duplicate a chunk (chunk/marker confusion)
            buf[at:at] = buf[at : at + 64 + payload[0]]
    return bytes(buf)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"one example took over {TIMEOUT_S} s")


@pytest.mark.slow
def test_mutated_files_load_or_raise_data_error(mini_root: Path, tmp_path: Path) -> None:
    originals = {n: (image_path(mini_root, n), trimap_path(mini_root, n)) for n in SEEDS}
    if not all(p.is_file() for pair in originals.values() for p in pair):
        pytest.skip("fuzz seed files missing from the mini dataset")
    seeds = {n: (a.read_bytes(), b.read_bytes()) for n, (a, b) in originals.items()}
    root = tmp_path / "fuzz"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    cfg = compose_train([f"data.root={root}", "data.image_size=64"], tmp_path)
    from hydra.utils import instantiate

    transform = instantiate(cfg.data.eval_transform)
    counts = {"loaded": 0, "DataError": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=EXAMPLES <= 1000,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutation)
    def one(example) -> None:
        name, which, operations = example
        image, trimap = seeds[name]
        if which in ("image", "both"):
            image = mutate(image, operations)
        if which in ("trimap", "both"):
            trimap = mutate(trimap, operations)
        image_path(root, name).write_bytes(image)
        trimap_path(root, name).write_bytes(trimap)
        signal.alarm(TIMEOUT_S)
        try:
            problems = scan_sample(root, name)
            assert isinstance(problems, list)
            sample = SegmentationDataset(OxfordPetSource(root), [name], transform)[0]
            assert sample["image"].shape == (3, 64, 64) and sample["mask"].shape == (1, 64, 64)
            assert torch.isfinite(sample["image"]).all()
            assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
            counts["loaded"] += 1
        except DataError as err:
            message = str(err)
            assert "\n" not in message and str(root) in message, message
            counts["DataError"] += 1
        finally:
            signal.alarm(0)

    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        one()
    finally:
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(root, ignore_errors=True)
    total = counts["loaded"] + counts["DataError"]
    print(f"fuzz: {total} mutated pairs: {counts}")
    assert total >= EXAMPLES and counts["loaded"] and counts["DataError"]
