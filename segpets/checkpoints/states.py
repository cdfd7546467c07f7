"""The training state a resumed run restores from a checkpoint, checked before fitting.

``trainer.fit(ckpt_path=...)`` hands each callback its stored state (``checkpoint["callbacks"]
[state_key]``) and Lightning's loops theirs; a checkpoint from elsewhere is data, and a state
of the wrong shape (``best_k_models: 5``, an RNG state that is a string) ended in a traceback
mid-restore. :func:`check_training_state` checks the layout Lightning reads and the state of
every callback segpets' configs use (Lightning's ``ModelCheckpoint`` and ``EarlyStopping``,
segpets' ``BestMetric`` and ``ExactResume``) by the types their ``load_state_dict`` expects,
and tries the stored RNG states (restoring the current ones after); each problem is one
``ConfigError`` naming the file and the entry.
"""

from __future__ import annotations

from typing import Any

import torch

from segpets.command.typed import value_problem
from segpets.errors import ConfigError

Score = torch.Tensor | float | None
# Top-level entries Lightning restores from (when present): their types
LAYOUT: dict[str, Any] = {
    "epoch": int,
    "global_step": int,
    "loops": dict[str, Any],
    "optimizer_states": list[dict[str, Any]],
    "lr_schedulers": list[dict[str, Any]],
    "callbacks": dict[str, dict[str, Any]],
}
# Callback class (the state key up to its first "{") -> entry -> (type, required by load)
STATES: dict[str, dict[str, tuple[Any, bool]]] = {
    "ModelCheckpoint": {
        "monitor": (str | None, False),
        "best_model_score": (Score, True),
        "best_model_path": (str, True),
        "current_score": (Score, False),
        "dirpath": (str | None, False),
        "best_k_models": (dict[str, Score], False),
        "kth_best_model_path": (str, False),
        "kth_value": (Score, False),
        "last_model_path": (str, False),
    },
    "EarlyStopping": {
        "wait_count": (int, False),
        "stopped_epoch": (int, False),
        "best_score": (Score, False),
        "patience": (int, False),
    },
    "BestMetric": {"best": (float | None, False), "best_epoch": (int | None, False)},
    "ExactResume": {
        "rng": (dict[str, Any], True),
        "plateau": (list[dict[str, float]], False),
    },
}


def check_training_state(ckpt: dict[str, Any], source: str) -> None:
    """Raise ``ConfigError`` (naming ``source``, e.g. ``ckpt_path: '/x/last.ckpt'``) at the
    first entry of ``ckpt`` that resuming would fail to restore (see the module docstring)."""
    for key, annotation in LAYOUT.items():
        if key in ckpt:
            _raise_if(value_problem(annotation, ckpt[key], key), source)
    for state_key, state in (ckpt.get("callbacks") or {}).items():
        schema = STATES.get(str(state_key).split("{", 1)[0])
        if schema is None:
            continue
        for name, (annotation, required) in schema.items():
            where = f"callbacks[{state_key!r}].{name}"
            if name not in state:
                if required:
                    raise ConfigError(f"{source}: its stored state has no {where}; refusing it")
                continue
            _raise_if(value_problem(annotation, state[name], where), source)
        if "rng" in schema and "rng" in state:
            _check_rng(state["rng"], f"callbacks[{state_key!r}].rng", source)


def _raise_if(problem: Any, source: str) -> None:
    if problem is not None:
        raise ConfigError(f"{source}: stored {problem.message}; refusing the file")


def _check_rng(states: dict[str, Any], where: str, source: str) -> None:
    """Apply the stored RNG states, then put the current ones back: what ``ExactResume``
    would restore must be a state torch, numpy and Python accept."""
    from segpets.callbacks.resume import collect_rng_states, set_rng_states  # imports us

    current = collect_rng_states()
    try:
        set_rng_states(states)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
        raise ConfigError(
            f"{source}: stored {where} is not a set of RNG states "
            f"({type(err).__name__}{': ' + first if first else ''}); refusing the file"
        ) from None
    finally:
        set_rng_states(current)
