"""The official-code reference fixtures (../shared/fixtures/official): their checkpoints rebuilt from
keys.json by the fixture README's weight rule, written in the published containers, and their outputs."""
from __future__ import annotations

import json
import math
import pickle
import re
import zlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"
M2F = "m2f_r50_cityscapes_panoptic"
PROSCALE = "proscale_r50_333_coco_panoptic"
PANOPTIC_SEGFORMER = "panoptic_segformer_r50_coco"

_EMBEDDING = re.compile(
    r"(^|\.)(query_feat|query_embed|query_embedding|stuff_query|level_embed|level_embeds)(\.weight)?$"
)
_NON_NEGATIVE = re.compile(r"^bbox_head\.(mask_head|mask_head2)\.(blocks\.\d+\.attn|attnen)\.linear\.0\.weight$")
_SCALED = re.compile(
    r"^sem_seg_head\.predictor\..*\.(out_proj|linear2)\.weight$|"
    r"^bbox_head\.transformer\.decoder\.layers\.\d+\.(attentions\.0\.attn\.out_proj|attentions\.1\.output_proj|"
    r"ffns\.0\.layers\.1)\.weight$"
)


def fixture_dir(name: str) -> Path:
    """A fixture's folder; skips the test where ../shared is not checked out beside the repository."""
    path = FIXTURES / name
    if not (path / "keys.json").is_file():
        pytest.skip(f"official reference fixture {path} is not available")
    return path


def rule_tensor(name: str, shape: list[int]) -> torch.Tensor:
    """The fixture README's value for the official tensor `name` of `shape` (one seeded draw)."""
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("running_var"):
        return 1 + 0.2 * torch.rand(shape, generator=g)
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 2 and _EMBEDDING.search(name):
        return 0.5 * torch.randn(shape, generator=g)
    if len(shape) >= 2:
        w = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        if _NON_NEGATIVE.search(name):
            w = w.abs()
        if _SCALED.search(name):
            w = 0.1 * w
        return w
    if len(shape) == 1 and name.endswith(".weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def rule_weights(name: str) -> OrderedDict[str, torch.Tensor]:
    """Every tensor of fixture `name`'s official checkpoint, in file order."""
    keys = json.loads((fixture_dir(name) / "keys.json").read_text())
    return OrderedDict((t["name"], rule_tensor(t["name"], t["shape"])) for t in keys["tensors"])


def write_model_zoo_pickle(weights: dict[str, torch.Tensor], path: Path) -> None:
    """`weights` as a Mask2Former model-zoo .pkl: pickle protocol 2 of {"model": numpy arrays, "__author__"}."""
    arrays = OrderedDict((k, v.numpy()) for k, v in weights.items())
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "reference fixture"}, f, protocol=2)


def write_detectron2_checkpoint(weights: dict[str, torch.Tensor], path: Path) -> None:
    """`weights` as a detectron2 checkpointer file (PRO-SCALE's model_final.pth)."""
    torch.save({"model": weights, "iteration": 368749}, path)


def write_mmcv_checkpoint(weights: dict[str, torch.Tensor], path: Path) -> None:
    """`weights` as an mmcv checkpoint file (Panoptic SegFormer's published .pth)."""
    meta = {"mmcv_version": "1.3.4", "time": "reference fixture", "epoch": 24, "iter": 0}
    torch.save({"meta": meta, "state_dict": weights}, path)


def reference(name: str) -> dict:
    """The official outputs of fixture `name` (reference.pt)."""
    return torch.load(fixture_dir(name) / "reference.pt", weights_only=True)
