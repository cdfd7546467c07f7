"""Types of config values, precise enough to check a value before anything is built.

segpets' constructors annotate their arguments with these (``image_size: PositiveInt``,
``num_classes: NumClasses``); :mod:`segpets.command.typed` checks every value of a composed
config against the annotations of the constructor it reaches (segpets', Lightning's, torch's,
albumentations') with pydantic, and says what is allowed with :func:`describe`. The constraint
markers are ``annotated_types``' (``Ge``, ``Gt``, ``Le``, ``Lt``, ``Len``), which pydantic
enforces; :class:`Note` adds the reason to the message.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Len, Lt


@dataclass(frozen=True)
class Note:
    """Why a value is constrained, said after what is allowed in the error message."""

    text: str


# The largest image side segpets resizes to (data.image_size, a stored Resize): a 4096² float
# batch of one is 200 MB before the net; a crafted 40000-px Resize asked predict for 4.8 GB.
MAX_IMAGE_SIDE = 4096

PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Gt(0), Lt(1)]  # strictly between 0 and 1 (a threshold)
ImageSide = Annotated[int, Gt(0), Le(MAX_IMAGE_SIDE)]  # pixels
RGB = Annotated[Sequence[float], Len(3, 3)]  # one value per channel, R, G, B (0-1 units)
PositiveRGB = Annotated[Sequence[PositiveFloat], Len(3, 3)]
RGBChannels = Annotated[Literal[3], Note("segpets reads every picture as RGB")]
Workers = NonNegativeInt | Literal["auto"]  # DataLoader processes, or Lightning's suggestion
NumClasses = Annotated[
    Literal[1], Note("segpets segments one class, pet: one logit a pixel, sigmoid > 0.5")
]
TTA = Literal["hflip"] | None


def describe(tp: Any) -> str:
    """What a type allows, in words: ``Annotated[int, Ge(0)] | Literal["auto"]`` → ``an
    integer >= 0 or 'auto'``; ``Sequence[float]`` with ``Len(3, 3)`` → ``a list of 3
    numbers``; ``Optional[...]`` adds ``or null``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is None or tp is type(None):
        return "null"
    if origin is Annotated:
        return _annotated(args[0], args[1:])
    if origin in (Union, types.UnionType):
        return _union(args)
    if origin is Literal:
        names = [_literal(a) for a in args]
        return " or ".join(names) if len(names) < 3 else f"one of {', '.join(names)}"
    if _is_a(origin, Mapping):
        return "a mapping"
    if _is_a(origin, Sequence):
        return _sequence(origin, args)
    return _NAMES.get(tp, _class_name(tp))


_NAMES = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Any: "any value",
    dict: "a mapping",
    list: "a list",
    Path: "a path",
}
_PLURALS = {"an integer": "integers", "a number": "numbers", "a string": "strings"}


def _annotated(base: Any, metadata: tuple) -> str:
    origin = get_origin(base)
    length = next((m for m in metadata if isinstance(m, Len)), None)
    if _is_a(origin, Sequence) and length and length.min_length == length.max_length:
        item = describe(get_args(base)[0]) if get_args(base) else "value"
        return f"a list of {length.min_length} {_plural(item)}"
    bounds = [
        f"{sign} {getattr(mark, attr)}"
        for mark in metadata
        for cls, sign, attr in (
            (Ge, ">=", "ge"),
            (Gt, ">", "gt"),
            (Le, "<=", "le"),
            (Lt, "<", "lt"),
        )
        if isinstance(mark, cls)
    ]
    text = " ".join([describe(base), " and ".join(bounds)]) if bounds else describe(base)
    notes = [mark.text for mark in metadata if isinstance(mark, Note)]
    return text + "".join(f" ({note})" for note in notes)


def _plural(item: str) -> str:
    """``an integer >= 0`` → ``integers >= 0``; ``a Callback`` → ``Callbacks``."""
    for one, many in _PLURALS.items():
        if item.startswith(one):
            return many + item[len(one) :]
    if item.startswith(("a ", "an ")) and " " not in item.split(" ", 1)[1]:
        return item.split(" ", 1)[1] + "s"
    return item


def _is_a(origin: Any, abc: type) -> bool:
    return isinstance(origin, type) and issubclass(origin, abc)


def _union(args: tuple) -> str:
    literals = [v for a in args if get_origin(a) is Literal for v in get_args(a)]
    others = [a for a in args if get_origin(a) is not Literal and a is not type(None)]
    parts = list(dict.fromkeys(describe(a) for a in others))
    if "a number" in parts and "an integer" in parts:  # int | float: any number
        parts.remove("an integer")
    if literals:
        parts.append(("one of " if len(literals) > 2 else "") + ", ".join(map(_literal, literals)))
    if type(None) in args:
        parts.append("null")
    return " or ".join(parts)


def _sequence(origin: type, args: tuple) -> str:
    if origin is tuple and args and args[-1] is not Ellipsis:
        items = {describe(a) for a in args}
        item = items.pop() if len(items) == 1 else "values"
        return f"a list of {len(args)} {_plural(item)}"
    return f"a list of {_plural(describe(args[0])) if args else 'values'}"


def _literal(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    return (
        repr(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _class_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
