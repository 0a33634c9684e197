"""Read pickles of numpy arrays (detectron2 model-zoo .pkl files) without running code from them.

A pickle names the callables that rebuild its objects; an ordinary unpickler
imports and calls whatever it names, so a crafted file runs any command. This
reader resolves only the names that plain containers, numpy arrays, numpy
scalars and protocol-2 bytes need, and refuses every other name, quoting it.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

ALLOWED_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 writes bytes as encode(str, "latin1")
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),  # numpy 1 names
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),  # numpy 2 names
    ("numpy._core.multiarray", "scalar"),
})
"""(module, name) of every object a pickle may refer to."""


class UnsafePickleError(ValueError):
    """A pickle names an object outside the plain data this reader accepts."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: only numpy arrays, plain containers and scalars are read"
            )
        if module.startswith("numpy."):
            multiarray = (getattr(np, "_core", None) or np.core).multiarray  # numpy 2 or numpy 1
            return getattr(multiarray, name)
        return super().find_class(module, name)


def load_numpy_pickle(path: str | Path) -> Any:
    """The object pickled in `path`, if it consists of plain containers, scalars and numpy arrays only.

    Raises UnsafePickleError naming the first other object the pickle refers to,
    before anything of it is constructed or called.
    """
    data = Path(path).read_bytes()
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
