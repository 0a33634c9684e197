"""ros_seg checkpoints: model config + class metadata + weights in one file.

A checkpoint alone rebuilds its model. Files are read with
`torch.load(weights_only=True)` (plain containers and tensors only) and written
atomically (temporary file in the same directory, then rename), so an
interrupted save never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.model_config import ModelConfig

FORMAT = "ros_seg.checkpoint"
VERSION = 1
STORAGES = ("fp32", "fp16", "int8")


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


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file next to `path`, fsync, then rename over it."""
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            "extra": extra or {},
        },
        path,
    )


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
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this ros_seg reads {VERSION}")
    state = dict(data["state_dict"])
    for key, scale in data.get("int8_scales", {}).items():
        values = state[key]
        state[key] = (values.float().flatten(1) * scale[:, None]).view(values.shape)
    return Checkpoint(
        config=ModelConfig.from_dict(data["model_config"], source=f"{path} (model_config)"),
        metadata=ClassMetadata.from_dict(data["class_metadata"]),
        state_dict=state,
        extra=data.get("extra", {}),
    )


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
