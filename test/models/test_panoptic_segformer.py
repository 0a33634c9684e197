"""Panoptic SegFormer: parameter counts, forward contract, masks from attention maps,
mask-wise merging (Algorithm 1), criterion, training through the real trainer, Segmenter."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.inference.segmenter import Segmenter
from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata
from ros_seg.models.complexity import count_gmacs, count_parameters
from ros_seg.models.criteria.panoptic_segformer_criterion import PanopticSegFormerCriterion
from ros_seg.models.criteria.panoptic_segformer_matcher import ThingMatcher
from ros_seg.models.panoptic_segformer import PanopticSegFormer
from ros_seg.models.panoptic_segformer.attention_to_mask import AttentionToMask
from ros_seg.models.panoptic_segformer.panoptic_segformer import ABSENT_LOGIT
from ros_seg.models.postprocess.maskwise_merge import maskwise_merge
from ros_seg.models.registry import build_model, load_model_config
from ros_seg.train.run_files import LOG_FILE
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.trainer import train

PAPER_PARAMS = 47.0e6  # R50, COCO (arXiv v1 Table 1 / Table 4)


PAPER_GMACS = 246.0  # R50, COCO, at 1200x800 (arXiv v1 Table 4; FLOPs counted as multiply-adds)


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        model, _ = build_model(load_model_config(name))
    return model


def test_parameter_counts_and_gmacs() -> None:
    coco = meta_model("panoptic_segformer_r50_coco")
    assert count_parameters(coco) == 51_271_900  # the official R50 COCO model's parameters, to the one
    assert count_parameters(meta_model("panoptic_segformer_r50")) == 50_962_956
    # The authors' decoupled thing/stuff mask decoders (4 + 6 blocks, each with a tail) and the
    # training-only heads cost more than the paper's 47.0M model: +9.1%.
    assert abs(count_parameters(coco) / PAPER_PARAMS - 1) < 0.10
    gmacs = count_gmacs(coco, (800, 1200), all_predictions=False)
    assert round(gmacs["total"], 1) == 224.3  # deformable sampling not counted (ros_seg.models.complexity)
    assert abs(gmacs["total"] / PAPER_GMACS - 1) < 0.10


class TinyBackbone(nn.Module):
    """Strided convolutions giving res3..res5 (1/8, 1/16, 1/32) with few channels."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels = {"res3": 16, "res4": 24, "res5": 32}
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.down4 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.down5 = nn.Conv2d(24, 32, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res3 = torch.relu(self.stem(x))
        res4 = torch.relu(self.down4(res3))
        return {"res3": res3, "res4": res4, "res5": torch.relu(self.down5(res4))}


def tiny_model(queries: int = 6, max_detections: int = 10) -> PanopticSegFormer:
    torch.manual_seed(0)
    return PanopticSegFormer(
        TinyBackbone(), (16, 24, 32), CITYSCAPES.is_thing, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375],
        num_thing_queries=queries, dim=32, num_heads=4, num_points=2, encoder_layers=1, location_layers=2,
        thing_mask_layers=2, stuff_mask_layers=2, ffn_dim=64, max_detections=max_detections,
    )


def test_training_forward_contract() -> None:
    model = tiny_model().train()
    images = torch.rand(2, 3, 70, 100) * 255  # padded to 96 x 128
    out = model(images)
    queries = 6 + len(CITYSCAPES.stuff_ids)
    assert out["pred_logits"].shape == (2, queries, 19)
    assert out["pred_masks"].shape == (2, queries, 12, 16) and (out["pred_masks"] >= 0).all()
    assert out["pred_boxes"].shape == (2, 6, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    # Thing queries only score thing classes; stuff query j only its own class.
    logits = out["pred_logits"]
    thing_cols = torch.tensor(CITYSCAPES.is_thing)
    assert (logits[:, :6][..., ~thing_cols] == ABSENT_LOGIT).all()
    assert (logits[:, :6][..., thing_cols] != ABSENT_LOGIT).all()
    for j, cls in enumerate(CITYSCAPES.stuff_ids):
        row = logits[:, 6 + j]
        assert (row[:, cls] != ABSENT_LOGIT).all() and (row.ne(ABSENT_LOGIT).sum(-1) == 1).all()
    # Location layer 1; thing mask blocks 1-2 (class, box, mask); stuff mask blocks 1-2.
    kinds = [sorted(k for k in a if k != "queries") for a in out["aux_outputs"]]
    assert [a["queries"] for a in out["aux_outputs"]] == ["things"] * 3 + ["stuff"] * 2
    assert kinds == [["pred_boxes", "pred_logits"]] + [["pred_boxes", "pred_logits", "pred_masks"]] * 2 + [
        ["pred_logits", "pred_masks"]
    ] * 2
    # Every parameter takes part in the training outputs (no unused parameters under DDP).
    total = out["pred_logits"].clamp(min=-10).sum() + out["pred_masks"].sum() + out["pred_boxes"].sum()
    total = total + sum(v.clamp(min=-10).sum() for a in out["aux_outputs"] for k, v in a.items() if k != "queries")
    total.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_inference_keeps_the_best_query_class_pairs() -> None:
    model = tiny_model().eval()
    images = torch.rand(2, 3, 70, 100) * 255
    with torch.no_grad():
        out = model(images, all_predictions=True)
    stuff = len(CITYSCAPES.stuff_ids)
    assert out["pred_logits"].shape == (2, 10 + stuff, 19) and out["pred_masks"].shape == (2, 10 + stuff, 12, 16)
    # The 10 best sigmoid scores over (query, thing class) of the last location layer, in order.
    location = out["location_logits"][-1]  # (B, 6, 8)
    best = location.sigmoid().flatten(1).topk(10).values
    detections = out["pred_logits"][:, :10]
    torch.testing.assert_close(detections.sigmoid().max(-1).values, best)
    assert (detections.ne(ABSENT_LOGIT).sum(-1) == 1).all()
    thing_slot = torch.full((19,), -1)
    thing_slot[list(CITYSCAPES.thing_ids)] = torch.arange(8)
    slot = thing_slot[detections.argmax(-1)]  # (B, 10) thing class of each detection
    assert (slot >= 0).all()
    chosen = location.gather(1, out["thing_query_index"][..., None].expand(-1, -1, 8))  # (B, 10, 8)
    torch.testing.assert_close(chosen.gather(2, slot[..., None])[..., 0], detections.max(-1).values)
    torch.testing.assert_close(out["pred_boxes"], out["location_boxes"][-1].gather(
        1, out["thing_query_index"][..., None].expand(-1, -1, 4)))
    assert (out["pred_masks"] >= 0).all() and "aux_outputs" not in model(images, all_predictions=False)


def test_masks_come_from_attention_maps_of_every_level() -> None:
    torch.manual_seed(0)
    heads, shapes = 4, [(8, 12), (4, 6), (2, 3)]
    to_mask = AttentionToMask(heads, 3)
    nn.init.uniform_(to_mask.fuse.weight, 0.0, 1.0)
    logits = torch.randn(2, heads, 5, sum(h * w for h, w in shapes))
    mask = to_mask(logits, shapes)
    assert mask.shape == (2, 5, 8, 12) and (mask >= 0).all() and (mask > 0).any()
    # The authors' order: per level a Linear(M, M) + ReLU over the heads of each pixel, the coarse
    # levels' maps upsampled to the finest, concatenated level-major, Linear(3M, 1) + ReLU.
    maps = []
    for mix, chunk, (h, w) in zip(to_mask.level_mix, logits.split([h * w for h, w in shapes], -1), shapes):
        level = torch.relu(mix(chunk.permute(0, 2, 3, 1)))  # (B, Q, h*w, M)
        level = level.permute(0, 1, 3, 2).reshape(10, heads, h, w)
        maps.append(F.interpolate(level, size=(8, 12), mode="bilinear", align_corners=False))
    naive = torch.relu(to_mask.fuse(torch.cat(maps, 1).permute(0, 2, 3, 1))).view(2, 5, 8, 12)
    torch.testing.assert_close(mask, naive, rtol=1e-5, atol=1e-5)
    # Changing the attention logits of any one level (for one query) changes that query's mask only.
    starts = [0, 96, 120]
    for level, start in enumerate(starts):
        changed = logits.clone()
        changed[:, :, 2, start] += 5.0
        diff = (to_mask(changed, shapes) - mask).abs().sum((0, 2, 3))
        assert diff[2] > 0 and diff[[0, 1, 3, 4]].max() == 0, level


# Hand-made merging inputs: 3 classes, class 0 and 1 things, class 2 stuff.
MERGE_META = ClassMetadata(
    names=("a", "b", "s"), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3)), is_thing=(True, True, False), label_ids=(1, 2, 3)
)


def query(cls: int, score: float, mask: np.ndarray, value: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A candidate: its focal logits and its non-negative mask (`value` inside, 0 outside)."""
    logits = torch.full((3,), ABSENT_LOGIT)
    logits[cls] = float(np.log(score / (1 - score)))
    return logits, torch.from_numpy(mask).float() * value


def merge(queries: list, score_threshold: float = 0.3, overlap_threshold: float = 0.6):
    logits = torch.stack([q[0] for q in queries])
    masks = torch.stack([q[1] for q in queries])
    size = masks.shape[-2:]
    return maskwise_merge(logits, masks, MERGE_META, tuple(size), tuple(size), tuple(size),
                          score_threshold, overlap_threshold)


def region(rows: slice, cols: slice, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def quality(area: int, value: float = 1.0) -> float:
    """The authors' mask quality of a mask of `value` on `area` pixels: sum / (area + 1)."""
    return value * area / (area + 1)


def test_maskwise_merge_order_painting_and_thresholds() -> None:
    left = region(slice(None), slice(0, 4))  # 32 px
    right = region(slice(None), slice(4, 8))
    wide = region(slice(None), slice(0, 6))  # 48 px, 32 of them under `left`
    q_low = query(0, 0.2, right)  # below the score threshold
    q_first = query(1, 0.9, left)
    q_second = query(0, 0.8, wide)  # 2/3 of it already taken (> 0.4): skipped at 0.6
    q_stuff_a = query(2, 0.7, region(slice(0, 4), slice(4, 8)))
    q_stuff_b = query(2, 0.6, region(slice(4, 8), slice(4, 8)))
    semantic, pan = merge([q_low, q_second, q_stuff_b, q_first, q_stuff_a])
    # Sorted by confidence: first -> a thing segment; second skipped; stuff a and b merge.
    assert pan.classes.tolist() == [1, 2]
    np.testing.assert_allclose(pan.scores.tolist(), [0.9 * quality(32) ** 2, 0.7 * quality(16) ** 2], rtol=1e-4)
    panoptic = pan.panoptic.numpy()
    assert (panoptic[left] == 1).all() and (panoptic[right] == 2).all()
    assert (semantic.numpy()[left] == 1).all() and (semantic.numpy()[right] == 2).all()
    # A lower overlap threshold keeps the second thing, painting only unassigned pixels.
    semantic, pan = merge([q_first, q_second], overlap_threshold=0.3)
    assert pan.classes.tolist() == [1, 0]
    panoptic = pan.panoptic.numpy()
    assert (panoptic[left] == 1).all()
    assert (panoptic[region(slice(None), slice(4, 6))] == 2).all()
    assert (panoptic[region(slice(None), slice(6, 8))] == 0).all()
    assert (semantic.numpy()[panoptic == 0] == MERGE_META.ignore_id).all()
    # Two instances of one thing class get their own ids.
    _, pan = merge([query(0, 0.9, left), query(0, 0.8, right)])
    assert pan.classes.tolist() == [0, 0] and set(np.unique(pan.panoptic.numpy())) == {1, 2}
    # Nothing above the score threshold: everything unlabeled.
    semantic, pan = merge([q_low], score_threshold=0.5)
    assert pan.classes.numel() == 0 and (pan.panoptic == 0).all() and (semantic == MERGE_META.ignore_id).all()


def test_maskwise_merge_stuff_may_overlap_less_than_things() -> None:
    # A third of the candidate's mask is taken: a thing may overlap 0.4 (kept), stuff only 0.2 (skipped).
    first = query(1, 0.9, region(slice(None), slice(0, 4)))
    cols = region(slice(None), slice(2, 8))  # 48 px, 16 of them taken
    _, pan = merge([first, query(0, 0.8, cols)])
    assert pan.classes.tolist() == [1, 0]
    _, pan = merge([first, query(2, 0.8, cols)])
    assert pan.classes.tolist() == [1]
    # With only 8 of 40 px taken (0.2, not above it) the stuff candidate is kept.
    _, pan = merge([first, query(2, 0.8, region(slice(None), slice(3, 8)))])
    assert pan.classes.tolist() == [1, 2] and int((pan.panoptic == 2).sum()) == 32


def test_maskwise_confidence_uses_mask_quality() -> None:
    # Same class score; mask scores of 0.6 (still above the 0.5 threshold) lower the confidence by 0.6^2.
    logits = torch.full((2, 3), ABSENT_LOGIT)
    logits[:, 0] = 2.0
    sharp = torch.from_numpy(region(slice(0, 4), slice(None))).float()
    soft = torch.from_numpy(region(slice(4, 8), slice(None))).float() * 0.6
    _, pan = maskwise_merge(logits, torch.stack([soft, sharp]), MERGE_META, (8, 8), (8, 8), (8, 8), 0.0, 0.5)
    score = torch.sigmoid(torch.tensor(2.0)).item()
    np.testing.assert_allclose(pan.scores.tolist(), [score * quality(32) ** 2, score * quality(32, 0.6) ** 2],
                               rtol=1e-4)
    assert (pan.panoptic[:4] == 1).all() and (pan.panoptic[4:] == 2).all()
    # Masks are scores, not logits: 0.4 everywhere is below the threshold, so nothing is painted.
    _, pan = maskwise_merge(logits[:1], torch.full((1, 8, 8), 0.4), MERGE_META, (8, 8), (8, 8), (8, 8), 0.0, 0.5)
    assert pan.classes.numel() == 0


def synthetic_targets() -> list[dict[str, torch.Tensor]]:
    masks = torch.zeros(3, 64, 96, dtype=torch.bool)
    masks[0, 8:30, 10:40] = True  # car (thing 13)
    masks[1, 30:60, 50:90] = True  # person (thing 11)
    masks[2] = ~(masks[0] | masks[1])  # road (stuff 0)
    return [{"labels": torch.tensor([13, 11, 0]), "masks": masks}]


def test_criterion_terms_and_overfit() -> None:
    model = tiny_model().train()
    criterion = PanopticSegFormerCriterion(CITYSCAPES.is_thing, ThingMatcher())
    images = torch.rand(1, 3, 64, 96) * 255
    targets = synthetic_targets()
    losses = criterion(model(images), targets)
    expected = {"loss_cls_things", "loss_dice_things", "loss_l1", "loss_giou", "loss_cls_stuff", "loss_dice_stuff"}
    # aux 0: location layer 1; 1-2: thing mask blocks (class, box, mask); 3-4: stuff mask blocks.
    aux_terms = {"loss_l1_0", "loss_dice_things_1", "loss_l1_2", "loss_dice_stuff_3", "loss_cls_stuff_4"}
    assert expected <= set(losses) and aux_terms <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(15):
        total = sum(criterion(model(images), targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.6 * history[0], history


TINY_CONFIG = {
    "name": "panoptic_segformer_tiny",
    "meta_architecture": "panoptic_segformer",
    "backbone": {"name": "stdc1"},
    "panoptic_segformer": {"hidden_dim": 32, "num_heads": 4, "num_points": 2, "num_thing_queries": 6,
                           "encoder_layers": 1, "location_layers": 2, "thing_mask_layers": 1,
                           "stuff_mask_layers": 1, "ffn_dim": 64},
    "inference": {"score_threshold": 0.0, "overlap_threshold": 0.5},
}


def test_training_smoke_through_the_trainer(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", 4, "train", size=(64, 128), seed=0)
    write_dataset(tmp_path / "data", 1, "val", size=(64, 128), seed=0)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    config = TrainConfig.from_dict({
        "model": str(tmp_path / "tiny.yaml"), "seed": 0, "eval_period": 0, "checkpoint_period": 0, "log_period": 1,
        "data": {"root": str(tmp_path / "data"), "crop_size": [64, 128], "scale_range": [1.0, 1.0],
                 "num_workers": 0, "val_split": "val"},
        "solver": {"batch_size": 2, "max_iters": 3, "base_lr": 0.0005, "amp": False},
    })
    result = train(config, tmp_path / "out", device="cpu")
    records = [json.loads(line) for line in (tmp_path / "out" / LOG_FILE).read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(r["loss"]) for r in losses)
    assert {"loss_cls_things", "loss_dice_stuff", "loss_giou", "loss_l1_0"} <= set(losses[0])
    assert 0 <= result["eval"]["miou"] <= 100 and 0 <= result["eval"]["pq"] <= 100
    assert (tmp_path / "out" / "model_final.pt").is_file()


def test_segmenter_end_to_end_consistent() -> None:
    segmenter = Segmenter("panoptic_segformer_r50", device="cpu", score_threshold=0.0, overlap_threshold=0.5)
    image = (np.random.default_rng(0).random((70, 100, 3)) * 255).astype(np.uint8)
    result = segmenter.segment(image, "rgb8")
    assert result.semantic.shape == (70, 100) and result.panoptic.shape == (70, 100)
    ids = set(np.unique(result.panoptic).tolist()) - {0}
    assert ids == {s.id for s in result.segments} and ids
    for segment in result.segments:
        inside = result.panoptic == segment.id
        assert segment.area == int(inside.sum())
        assert (result.semantic[inside] == segment.class_id).all()
        assert segment.is_thing == CITYSCAPES.is_thing[segment.class_id]
    assert (result.semantic[result.panoptic == 0] == CITYSCAPES.ignore_id).all()
    stuff = [s.class_id for s in result.segments if not s.is_thing]
    assert len(stuff) == len(set(stuff))  # one segment per stuff class
