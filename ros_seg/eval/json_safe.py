"""Metric results made valid JSON: NaN, an average over nothing, becomes null.

Python's json module writes NaN as a bare `NaN`, which strict JSON readers
(jq, JavaScript, most languages' parsers) refuse.
"""
from __future__ import annotations

import math
from typing import Any


def nan_to_none(value: Any) -> Any:
    """Copy of `value` with every float NaN, at any depth of dicts, lists and tuples, replaced by None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value
