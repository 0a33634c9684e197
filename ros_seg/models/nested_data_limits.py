"""Limits on nested data read from files (checkpoints, YAML configs, ONNX metadata), checked before it is used.

A few kilobytes can describe an enormous structure: pickle memo entries and YAML
aliases let one list appear many times inside another, so a 1.6 KB file can hold
10^9 leaves when walked. `check_nested_data` walks the data as any later code
would (shared objects are counted at every place they appear) and stops as soon
as a limit is passed, so its cost is bounded by the limits, not by the data.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ros_seg.models.quoted_excerpt import excerpt

PLAIN_LEAVES: tuple[type, ...] = (str, int, float, bool, type(None))
"""Leaf types of YAML and JSON documents."""


class NestedDataError(ValueError):
    """Data past a limit or of a type it may not hold; the message names the file and where in it."""


@dataclass(frozen=True)
class NestedDataLimits:
    """How deep and how large nested data may be, and which leaf types it may hold.

    Args:
        max_depth: most containers nested inside each other (the top level is depth 1).
        max_items: most containers and leaves counted over the whole walk.
        leaf_types: types allowed outside dicts, lists and tuples.
    """

    max_depth: int = 16
    max_items: int = 1_000_000
    leaf_types: tuple[type, ...] = PLAIN_LEAVES


def check_nested_data(data: Any, source: str, limits: NestedDataLimits = NestedDataLimits()) -> None:
    """Raise NestedDataError when `data` is deeper, larger or of other types than `limits` allow.

    `source` names the file (and part of it) in the message.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    count = 0
    while stack:
        value, where, depth = stack.pop()
        count += 1
        if isinstance(value, Mapping | list | tuple):
            if count + len(stack) + len(value) > limits.max_items:  # every value on the stack is still to count
                raise NestedDataError(
                    f"{source} holds more than {limits.max_items} values (e.g. a structure that repeats itself "
                    "through shared references or aliases): refused"
                )
            if depth > limits.max_depth:
                raise NestedDataError(f"{source} nests deeper than {limits.max_depth} levels at "
                                      f"{where or 'the top'}: refused")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str | int):
                        raise NestedDataError(f"{source} has a key of type {type(key).__name__} at "
                                              f"{where or 'the top'}: keys must be strings or integers")
                    plain = isinstance(key, int) or (key.isidentifier() and len(key) <= 40)
                    name = str(key) if plain else excerpt(key, 40)
                    stack.append((item, f"{where}.{name}" if where else name, depth + 1))
            else:
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif not isinstance(value, limits.leaf_types):
            raise NestedDataError(f"{source} holds a value of type {type(value).__name__} at {where or 'the top'}, "
                                  f"where only {', '.join(t.__name__ for t in limits.leaf_types)} are expected")
