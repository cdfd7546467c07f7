"""Hydra's override grammar, both ways: a sweep's command line expanded into its jobs, and a
value written back as an override that Hydra parses to exactly that value."""

from __future__ import annotations

import itertools
import re

from hydra.core.override_parser.types import Override, Quote, QuotedString

_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./+@%:~-]+")  # never special in Hydra's override grammar


def sweep_jobs(overrides: list[Override]) -> list[list[str]] | None:
    """Each job's overrides, as Hydra's basic sweeper expands a grid (``a=1,2 b=x,y``: four
    jobs); ``None`` for sweeps only other sweepers expand (``interval(...)``)."""
    choices = []
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            return None
    return [list(job) for job in itertools.product(*choices)]


def override_arg(key: str, value: object) -> str:
    """``key=value`` as Hydra parses it back to exactly ``value``: quoted (Hydra's own
    quoting) when the value holds characters its grammar treats specially (``=``, ``,``,
    spaces, brackets, quotes, ``${``, ...). Shell-quote it too for a command line."""
    text = str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return f"{key}={text}"
    text = text.replace("${", "\\${")  # a literal "${", not an interpolation (OmegaConf)
    return f"{key}={QuotedString(text=text, quote=Quote.single).with_quotes()}"
