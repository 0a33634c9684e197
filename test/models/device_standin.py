"""A stand-in for a GPU on machines without one: tensors that live on "another device" but hold real data.

PyTorch's CPU build cannot create CUDA tensors, not even fake ones that are
sliced. What the CUDA path of our code must get right, though, is that every
tensor an op meets is on the same device as the others (CUDA refuses a CPU
tensor next to a CUDA one, except 0-dim scalars and a few ops), and that a
tensor meant for the GPU is created there (``device=x.device``), not on the CPU
by default. Both can be checked with any second device.

:class:`OnStandIn` tensors report device ``meta`` and carry a real CPU tensor;
:func:`standin_device` activates two modes: a function-level one that creates
the tensors of factory calls aimed at the stand-in device (``torch.tensor(...,
device=d)`` and friends) with real data, and a dispatch-level one that runs
every ATen op on the carried CPU tensors, keeps results on the stand-in
device, moves tensors on ``.to(device)``/``.cpu()`` as CUDA would, and raises
:class:`DeviceMismatch`, naming the op and shapes, where CUDA would refuse
the mix. ``.numpy()`` of a stand-in tensor fails, as it does for a CUDA tensor;
``.item()`` and ``.tolist()`` copy to the host, as they do for one.

Not emulated: CUDA-only APIs (streams, events, pinned memory, autocast on the
device: autocast keys follow the device type, and meta has none), and kernel
numerics.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

STANDIN = torch.device("meta")
"""The device the stand-in tensors report (any device type other than cpu would do; meta exists everywhere)."""

CROSS_DEVICE_OPS = {
    torch.ops.aten.copy_.default,  # host <-> device copies
    torch.ops.aten._to_copy.default,
    torch.ops.aten.index.Tensor,  # CUDA tensors accept CPU index tensors
}
FACTORIES = {"tensor", "as_tensor", "asarray", "scalar_tensor"}
"""Factories that copy given data (the dispatch level sees them only as data-less tensors on the device)."""


class DeviceMismatch(RuntimeError):
    """An op met tensors of the device and of the host where CUDA would refuse them."""


class OnStandIn(torch.Tensor):
    """A tensor on the stand-in device, holding its values in ``self.elem`` (a CPU tensor)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnStandIn:
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                   storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                   device=STANDIN, requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    def tolist(self) -> list:  # CUDA tensors copy to the host here; PyTorch refuses tolist on subclasses
        return self.elem.tolist()

    def __repr__(self) -> str:
        return f"OnStandIn({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        raise RuntimeError(f"{func} on a stand-in tensor outside standin_device()")


def _on_standin(device: object) -> bool:
    return device is not None and torch.device(device).type == STANDIN.type


def _index_lists_as_tensors(index: object) -> object:
    """Python lists in an index as CPU index tensors (PyTorch itself would make them on the indexed tensor's
    device, out of this module's sight, as tensors without data; CUDA takes either)."""
    if isinstance(index, list):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(_index_lists_as_tensors(part) for part in index)
    return index


class _Factories(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], OnStandIn):
            args = (args[0], _index_lists_as_tensors(args[1]), *args[2:])
        if getattr(func, "__name__", "") in FACTORIES and _on_standin(kwargs.get("device")) \
                and not isinstance(getattr(func, "__self__", None), torch.Tensor):
            return OnStandIn(func(*args, **dict(kwargs, device="cpu")))
        return func(*args, **kwargs)


class _Dispatch(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        self.ops += 1
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = any(isinstance(t, OnStandIn) for t in tensors)
        for t in tensors:
            if not isinstance(t, OnStandIn) and t.device.type == STANDIN.type:
                raise DeviceMismatch(f"{func}: a tensor made on the device by a path without data (shape "
                                     f"{tuple(t.shape)})")
        if on_device and func not in CROSS_DEVICE_OPS:
            host = [tuple(t.shape) for t in tensors if not isinstance(t, OnStandIn) and t.dim() > 0]
            if host:
                raise DeviceMismatch(f"{func}: CPU tensor(s) of shape {host} met tensors on the GPU")
        target = kwargs.get("device")
        to_device = _on_standin(target)
        if to_device:
            kwargs = dict(kwargs, device="cpu")
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        stays = on_device and not (target is not None and torch.device(target).type == "cpu")
        if to_device or stays:
            return tree_map(lambda x: OnStandIn(x) if isinstance(x, torch.Tensor) else x, out)
        return out


def _unwrap(value: object) -> object:
    return value.elem if isinstance(value, OnStandIn) else value


@contextmanager
def standin_device() -> Iterator[_Dispatch]:
    """Within: tensors created on :data:`STANDIN` hold data and every op checks its devices as CUDA does.
    Yields the dispatch mode (its ``ops`` counts the ATen ops run)."""
    dispatch = _Dispatch()
    with _Factories(), dispatch:
        yield dispatch


def module_to_standin(module: nn.Module) -> nn.Module:
    """What ``module.to(device)`` does, onto the stand-in device: every parameter and buffer moves, nothing
    else does (tensors kept in plain attributes stay where they are, as they would). Call within
    :func:`standin_device`."""
    for sub in module.modules():
        for name, parameter in list(sub._parameters.items()):
            if parameter is not None:
                sub._parameters[name] = nn.Parameter(OnStandIn(parameter.detach().clone()),
                                                     requires_grad=parameter.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = OnStandIn(buffer.clone())
    return module
