"""ros_seg checkpoints: model config + class metadata + weights in one file.

A checkpoint alone rebuilds its model. Files are read with
`torch.load(weights_only=True)` (plain containers and tensors only) and written
atomically (temporary file in the same directory, then rename), so an
interrupted save never leaves a truncated checkpoint behind.

Reading checks the file before using it: its structure within CHECKPOINT_LIMITS
(a few KiB of shared references can describe 10^9 values), every key of the
right type, the model config's values, class metadata that fits the model, and
the SHA-256 of the tensors that save_checkpoint stores ("tensor_checksum"), so
flipped bytes in the weights are an error, not a silently different model.
Checkpoints written before the checksum existed load with a note.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ros_seg.models.class_metadata import ClassMetadata, class_metadata
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.nested_data_limits import PLAIN_LEAVES, NestedDataLimits, check_nested_data
from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.models.tensor_checksum import tensor_checksum

log = logging.getLogger(__name__)

FORMAT = "ros_seg.checkpoint"
VERSION = 1
STORAGES = ("fp32", "fp16", "int8")
CHECKSUM_KEY = "tensor_checksum"
CHECKPOINT_LIMITS = NestedDataLimits(max_depth=16, max_items=200_000, leaf_types=(*PLAIN_LEAVES, torch.Tensor))
"""Depth and size of a checkpoint's containers; a training checkpoint of pem_r50 holds about 2000 values."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its model; the message says why."""


@dataclass
class Checkpoint:
    """Contents of a checkpoint file.

    Args:
        config: the model configuration.
        metadata: the label set the model was trained on.
        state_dict: model weights.
        extra: anything else stored with them (training state, provenance).
    """

    config: ModelConfig
    metadata: ClassMetadata
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file next to `path`, fsync, then rename over it.

    A full disk (or quota, or file size limit) is an OSError of one line naming
    `path`, the space the file needs and the space free; the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _write_error(exc)
        if cause is None:
            raise
        error = OSError(_no_room_message(cause.errno, path, _tensor_bytes(obj)))  # its text is the message alone
        error.errno = cause.errno
        raise error from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_error(exc: BaseException) -> OSError | None:
    """The OSError of a full disk, quota or file size limit behind `exc` (torch.save wraps it in a RuntimeError)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _no_room_message(code: int, path: Path, needed: int) -> str:
    mib = 1 << 20
    if code == errno.EFBIG:
        return (f"cannot write checkpoint {path}: it needs about {needed / mib:.1f} MiB, more than this process's "
                "file size limit allows (ulimit -f)")
    free = shutil.disk_usage(path.parent).free
    return (f"no space left to write checkpoint {path}: it needs about {needed / mib:.1f} MiB, "
            f"{free / mib:.1f} MiB are free there; free some space or write to another folder")


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a checkpoint's contents (about the size of the file)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0



def _quantize_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 values, fp32 scale per row of dim 0)."""
    rows = tensor.float().flatten(1)  # (C_out, rest)
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (C_out,)
    values = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return values.view(tensor.shape), scale


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    metadata: ClassMetadata,
    extra: dict[str, Any] | None = None,
    storage: str = "fp32",
) -> None:
    """Write a checkpoint atomically.

    `storage` sets how floating-point weights are stored: "fp32"; "fp16"; or
    "int8" (weight matrices and conv kernels of 4096+ values as per-output-channel
    int8 with an fp32 scale, everything else fp16) for small deployable files.
    Reading always gives fp32 weights back.
    """
    if storage not in STORAGES:
        raise ValueError(f"checkpoint storage must be one of {STORAGES}, got {storage!r}")
    state: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point() and storage != "fp32":
            if storage == "int8" and value.dim() >= 2 and value.numel() >= 4096:
                value, scales[key] = _quantize_int8(value)
            else:
                value = value.half()
        state[key] = value.contiguous()
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model_config": config.to_dict(),
            "class_metadata": metadata.to_dict(),
            "state_dict": state,
            "int8_scales": scales,
            CHECKSUM_KEY: _checksum(state, scales),
            "extra": extra or {},
        },
        path,
    )


def _checksum(state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> str:
    """The checksum stored with weights `state` and their int8 `scales`."""
    return tensor_checksum({**{f"state_dict/{k}": v for k, v in state.items()},
                            **{f"int8_scales/{k}": v for k, v in scales.items()}})


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a ros_seg checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        hint = ""
        if isinstance(data, dict) and "model" in data:
            hint = " (it looks like a detectron2 checkpoint: import it with `ros-seg convert --from-detectron2`)"
        raise CheckpointError(f"{path} is not a ros_seg checkpoint{hint}")
    try:
        check_nested_data(data, f"checkpoint {path}", CHECKPOINT_LIMITS)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    version = data.get("version")
    if not (isinstance(version, int) and version == VERSION):
        raise CheckpointError(f"{path} has checkpoint version {excerpt(version)}, "
                              f"this ros_seg reads {VERSION}")
    state = _tensor_mapping(data, "state_dict", path, required=True)
    scales = _tensor_mapping(data, "int8_scales", path, required=False)
    for key, scale in scales.items():
        values = state.get(key)
        if values is None or values.dim() < 1 or scale.shape != (values.shape[0],):
            raise CheckpointError(f"'int8_scales.{key}' in {path} does not fit a tensor of state_dict")
    _verify_checksum(data, state, scales, path)
    for key in ("model_config", "class_metadata", "extra"):
        if not isinstance(data.get(key, {}), dict):
            raise CheckpointError(f"'{key}' in {path} must be a mapping, got {type(data[key]).__name__}")
    if "model_config" not in data or "class_metadata" not in data:
        raise CheckpointError(f"{path} lacks '{'model_config' if 'model_config' not in data else 'class_metadata'}'"
                              ": it cannot rebuild its model")
    try:
        config = ModelConfig.from_dict(data["model_config"], source=f"{path} (model_config)")
        metadata = ClassMetadata.from_dict(data["class_metadata"], source=str(path))
        classes = class_metadata(config.dataset).num_classes
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if metadata.num_classes != classes:
        raise CheckpointError(f"class metadata in {path} names {metadata.num_classes} classes, but its model "
                              f"(dataset {config.dataset!r}) predicts {classes}")
    for key, scale in scales.items():
        values = state[key]
        state[key] = (values.float().flatten(1) * scale[:, None]).view(values.shape)
    return Checkpoint(config=config, metadata=metadata, state_dict=state, extra=data.get("extra", {}))


def _tensor_mapping(data: dict[str, Any], key: str, path: Path, required: bool) -> dict[str, torch.Tensor]:
    """`data[key]` checked to map names to tensors (a copy); empty when absent and not `required`."""
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        found = "nothing" if value is None else type(value).__name__
        raise CheckpointError(f"'{key}' in {path} must map tensor names to tensors, found {found}")
    bad = next((k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"'{key}' in {path} must map tensor names to tensors, but {excerpt(bad)} holds a "
                              f"{type(value[bad]).__name__}")
    return dict(value)


def _verify_checksum(data: dict[str, Any], state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor],
                     path: Path) -> None:
    """Compare the stored tensor checksum with the tensors read; a note for checkpoints without one."""
    stored = data.get(CHECKSUM_KEY)
    if stored is None:
        log.info("%s has no tensor checksum (written before ros_seg stored one): its weights are not verified", path)
        return
    if not isinstance(stored, str) or stored != _checksum(state, scales):
        raise CheckpointError(f"the tensors of {path} do not match the checksum stored with them: the file is "
                              "corrupt (flipped or changed bytes); use another copy")


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; a missing, unexpected or mis-shaped tensor is an error listing them all."""
    expected = model.state_dict()
    # BatchNorm step counters are absent from checkpoints of frozen or converted norms.
    state_dict = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state_dict}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state_dict[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if expected[k].shape != state_dict[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"mis-shaped tensors: {'; '.join(mis_shaped)}")
    if problems:
        raise CheckpointError(f"weights in {source} do not fit the model: " + " | ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()})


def _listing(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")
