"""From class and mask logits to semantic and panoptic label maps (MaskFormer inference).

All work stays on the logits' device. Semantic maps follow one of two rules
(SEMANTIC_RULES): "authors" is Mask2Former's `semantic_inference` (which PEM
uses): every query's mask logits resized to the output, then sigmoid, class
scores summed over queries, argmax. "fast" forms the class scores at mask
resolution (K maps instead of Q) and resizes those; sigmoid is not linear, so
its maps differ from the authors' at some boundary pixels. For panoptic,
queries are selected first. Results are those of bilinearly resizing the valid
(unpadded) region of the 1/4-resolution maps to the output size — mask logits
for the authors' semantic rule and for panoptic, class scores for the fast
semantic rule — but no full-resolution map per class or query is ever built:
most pixels are decided from the low-resolution cells and only those near
boundaries are interpolated. On the CPU this runs as compiled loops
(`cpu_label_kernels`); elsewhere as batched tensor operations
(`cell_upsampling`). Both give the same maps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.postprocess import cpu_label_kernels
from ros_seg.models.postprocess.cell_upsampling import (
    CellGrid,
    CellLabels,
    argmax_first,
    cat_or_empty,
    cell_grid,
    chunks,
    corner_range,
    group_blocks,
    pair_groups,
    undecided_pairs,
    upsampled_argmax,
    upsampled_mask_argmax,
)


@dataclass
class PanopticOutput:
    """Panoptic map (H, W) int32 (0 = unlabeled) and per-segment tensors, ids 1..S in order."""

    panoptic: torch.Tensor
    classes: torch.Tensor  # (S,) int64 class ids
    scores: torch.Tensor  # (S,) float
    # segment_statistics of the map, when the merge already computed them
    statistics: dict[str, torch.Tensor] | None = None


SEMANTIC_RULES = ("authors", "fast")


def resize_valid_region(
    maps: torch.Tensor,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
) -> torch.Tensor:
    """Bilinearly resample the valid part of prediction maps to `out_size`.

    maps: (C, h, w) predictions covering an input of `padded_size` (H', W');
    the image occupied the top-left `valid_size` (H, W) of it. Returns (C, *out_size).
    """
    c, h, w = maps.shape
    oh, ow = out_size
    device = maps.device
    # Output pixel centre -> input pixel -> map pixel (align_corners=False convention).
    sy = valid_size[0] / oh * h / padded_size[0]
    sx = valid_size[1] / ow * w / padded_size[1]
    ys = (torch.arange(oh, device=device, dtype=torch.float32) + 0.5) * sy
    xs = (torch.arange(ow, device=device, dtype=torch.float32) + 0.5) * sx
    gy = ys / h * 2 - 1  # normalized, align_corners=False
    gx = xs / w * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)  # (oh, ow, 2) as (x, y)
    out = F.grid_sample(
        maps[None].float(), grid[None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0]  # (C, oh, ow)


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class score maps: sum over queries of softmax(class) x sigmoid(mask).

    class_logits (Q, K+1), mask_logits (Q, h, w) -> (K, h, w).
    """
    probs = class_logits.float().softmax(-1)[:, :-1]  # (Q, K)
    q, h, w = mask_logits.shape
    return torch.mm(probs.t(), mask_logits.float().sigmoid().reshape(q, h * w)).view(-1, h, w)


def semantic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    rule: str = "authors",
) -> torch.Tensor:
    """(Q, K+1), (Q, h, w) -> (H, W) class ids by `rule` (see SEMANTIC_RULES); uint8 when K <= 255,
    else int64."""
    if rule not in SEMANTIC_RULES:
        raise ValueError(f"semantic rule must be one of {SEMANTIC_RULES}, got {rule!r}")
    if rule == "authors":
        return _semantic_from_upsampled_masks(class_logits, mask_logits, valid_size, padded_size, out_size)
    scores = semantic_scores(class_logits, mask_logits)
    grid = cell_grid(tuple(scores.shape[-2:]), valid_size, padded_size, out_size, scores.device)
    if compiled_kernels(scores.device):
        dtype = torch.uint8 if scores.shape[0] <= 255 else torch.int64
        return cpu_label_kernels.upsampled_argmax_map(scores, grid, dtype)
    labels = upsampled_argmax(scores, grid)
    return labels.render(labels.cell.dtype)


def _semantic_from_upsampled_masks(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
) -> torch.Tensor:
    """The authors' rule: argmax over classes of sum_q softmax(class_q) x sigmoid(mask logits_q resized to
    the output), decided per low-resolution cell where the bounds allow (see upsampled_mask_argmax)."""
    probs = class_logits.float().softmax(-1)[:, :-1].t().contiguous()  # (K, Q)
    logits = mask_logits.float()
    grid = cell_grid(tuple(logits.shape[-2:]), valid_size, padded_size, out_size, logits.device)
    labels = upsampled_mask_argmax(probs, logits, grid)
    return labels.render(labels.cell.dtype)


def compiled_kernels(device: torch.device) -> bool:
    """Whether label maps on `device` come from the compiled CPU kernels (else tensor operations)."""
    return device.type == "cpu"


def prepare(device: torch.device) -> None:
    """Compile (or load from cache) what post-processing on `device` needs, so the first frame does not wait."""
    if compiled_kernels(device):
        cpu_label_kernels.warm_up()


def _panoptic_labels(
    logits: torch.Tensor, scores: torch.Tensor, grid: CellGrid
) -> tuple[CellLabels, torch.Tensor, torch.Tensor]:
    """Per output pixel: 1 + the query winning it, where that query's own mask (logit >= 0) covers it,
    else 0; each query's own mask area; and the pixels each query wins.

    logits (N, h, w) kept queries' low-res mask logits, scores (N,). A pixel's value for
    query q is scores[q] * sigmoid(logit_q), monotone in the logit, so each
    query's value in a cell lies between its values at the cell's lowest and
    highest corner logits: queries whose best cannot reach another's worst drop
    out, and a cell with one query left whose logit has one sign at all corners
    is decided whole.
    """
    n = logits.shape[0]
    corners = grid.low_corners(logits)
    low, high = corner_range(corners)  # (N, h, w)
    weight = scores[:, None, None]
    floor, best = (weight * low.sigmoid()).max(0)  # (h, w)
    candidates = weight * high.sigmoid() >= floor[None]
    best_lowest = low.gather(0, best[None])[0]
    best_highest = high.gather(0, best[None])[0]
    one_sign = (best_lowest >= 0) | (best_highest < 0)
    decided = grid.expand((candidates.sum(0) == 1) & one_sign)
    cell_label = grid.expand(torch.where(best_lowest >= 0, best + 1, torch.zeros_like(best)).to(torch.int32))

    cell_winner = grid.expand((best + 1).to(torch.int32))
    cell_i, cell_j, owner, query = undecided_pairs(grid, candidates, ~decided)
    indices, values, winners = [], [], []
    for cells, pairs in pair_groups(owner, cell_i.numel(), grid):
        q, ci, cj = query[pairs], cell_i[cells], cell_j[cells]
        block = group_blocks(grid, corners, q, ci, cj)  # (G, c, R, C) logits
        best = argmax_first(scores[q][:, :, None, None] * block.sigmoid())  # (G, R, C)
        winner = q.gather(1, best.flatten(1)).view_as(best)
        inside = block.gather(1, best[:, None])[:, 0] >= 0
        index, valid = grid.block_pixels(ci, cj)
        indices.append(index[valid])
        values.append(torch.where(inside, winner + 1, torch.zeros_like(winner))[valid].to(torch.int32))
        winners.append((winner + 1)[valid].to(torch.int32))
    index = cat_or_empty(indices, torch.long, logits.device)
    labels = CellLabels(grid, cell_label, decided, index, cat_or_empty(values, torch.int32, logits.device))
    won = CellLabels(grid, cell_winner, decided, index, cat_or_empty(winners, torch.int32, logits.device))

    # Each query's own mask area (logit >= 0): whole cells whose corners are all >= 0, plus the
    # counted pixels of cells whose corners have both signs.
    area = torch.einsum("nhw,hw->n", (low >= 0).double(), grid.low_pixels.double()).round().long()
    q, ci, cj = torch.nonzero(grid.expand((low < 0) & (high >= 0)), as_tuple=True)
    for part in chunks(q.numel(), grid.pairs_per_chunk()):
        block = grid.block_values(grid.pair_corners(corners, q[part], ci[part], cj[part]), ci[part], cj[part])
        _, valid = grid.block_pixels(ci[part], cj[part])
        area += torch.bincount(q[part], weights=((block >= 0) & valid).flatten(1).sum(1).double(),
                               minlength=n).long()
    return labels, area, won.counts(n + 1)[1:]


def panoptic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    metadata: ClassMetadata,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    score_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticOutput:
    """MaskFormer panoptic merging.

    Keep queries whose best class is not "no object" and whose score exceeds
    `score_threshold`; each pixel goes to the kept query with the highest
    score x sigmoid(mask); a query's segment is the pixels it wins where its own
    sigmoid >= 0.5. As in the authors' code (Mask2Former's `panoptic_inference`, which PEM
    uses), a query is dropped when all the pixels it wins are fewer than `overlap_threshold` of
    its whole mask (sigmoid >= 0.5), or when it wins nothing, has no mask or no segment;
    segments of one stuff class merge into one.
    The segments' statistics come with the map.
    """
    device = mask_logits.device
    num_classes = class_logits.shape[-1] - 1
    scores, labels = class_logits.float().softmax(-1).max(-1)  # (Q,), (Q,)
    keep = (labels != num_classes) & (scores > score_threshold)
    if not bool(keep.any()):
        return _empty_panoptic(out_size, device)
    scores, labels = scores[keep], labels[keep]
    logits = mask_logits[keep].float()  # (N, h, w)
    grid = cell_grid(tuple(logits.shape[-2:]), valid_size, padded_size, out_size, device)
    n = scores.shape[0]
    if compiled_kernels(device):
        query_map, query_counts, original_area, won_area = cpu_label_kernels.query_label_map(logits, scores, grid)
        segment_area = query_counts[1:]
    else:
        pixel_labels, original_area, won_area = _panoptic_labels(logits, scores, grid)
        segment_area = pixel_labels.counts(n + 1)[1:]  # (N,)

    # Small per-query decisions: on the host, a few hundred scalars at most.
    won_h, original_area_h, segment_area_h = won_area.tolist(), original_area.tolist(), segment_area.tolist()
    labels_h, scores_h = labels.tolist(), scores.tolist()
    query_to_segment = [0] * n
    stuff_segment: dict[int, int] = {}
    seg_classes: list[int] = []
    seg_scores: list[float] = []
    for q in range(n):
        if won_h[q] == 0 or original_area_h[q] == 0 or segment_area_h[q] == 0:
            continue
        if won_h[q] / original_area_h[q] < overlap_threshold:
            continue
        cls = labels_h[q]
        if not metadata.is_thing[cls] and cls in stuff_segment:
            query_to_segment[q] = stuff_segment[cls]
            continue
        seg_classes.append(cls)
        seg_scores.append(scores_h[q])
        query_to_segment[q] = len(seg_classes)
        if not metadata.is_thing[cls]:
            stuff_segment[cls] = len(seg_classes)
    if not seg_classes:
        return _empty_panoptic(out_size, device)
    lut = torch.tensor([0] + query_to_segment, dtype=torch.int32, device=device)
    if compiled_kernels(device):
        panoptic, stats = cpu_label_kernels.relabel_with_statistics(query_map, lut, len(seg_classes) + 1)
    else:
        segments = pixel_labels.map(lut)
        stats = segments.statistics(len(seg_classes) + 1)
        panoptic = segments.render(torch.int32)
    return PanopticOutput(
        panoptic=panoptic,
        classes=torch.tensor(seg_classes, dtype=torch.int64, device=device),
        scores=torch.tensor(seg_scores, dtype=torch.float32, device=device),
        statistics={k: v[1:] for k, v in stats.items()},
    )


def _empty_panoptic(out_size: tuple[int, int], device: torch.device) -> PanopticOutput:
    return PanopticOutput(
        panoptic=torch.zeros(out_size, dtype=torch.int32, device=device),
        classes=torch.zeros(0, dtype=torch.int64, device=device),
        scores=torch.zeros(0, device=device),
    )


def segment_statistics(panoptic: torch.Tensor, num_segments: int) -> dict[str, torch.Tensor]:
    """Area, bounding box and centroid of segments 1..num_segments of a (H, W) id map (ids 0..num_segments).

    Returns tensors of shape (S,): area, x0, y0, x1, y1 (inclusive), cx, cy.
    Segments without pixels get area 0 and a zero box. Two histograms — pixels
    of each id per row and per column — give everything, without per-pixel
    coordinate maps.
    """
    h, w = panoptic.shape
    device = panoptic.device
    size = num_segments + 1
    ids = panoptic.long()
    rows = torch.bincount((ids + (torch.arange(h, device=device) * size)[:, None]).flatten(), minlength=h * size)
    cols = torch.bincount((ids + (torch.arange(w, device=device) * size)[None, :]).flatten(), minlength=w * size)
    rows, cols = rows.view(h, size), cols.view(w, size)
    area = rows.sum(0)
    sum_y = (rows.double() * torch.arange(h, device=device, dtype=torch.float64)[:, None]).sum(0)
    sum_x = (cols.double() * torch.arange(w, device=device, dtype=torch.float64)[:, None]).sum(0)
    in_rows, in_cols = (rows > 0).to(torch.uint8), (cols > 0).to(torch.uint8)
    present = area > 0
    zero = torch.zeros_like(area)
    safe = area.clamp(min=1).double()
    return {
        "area": area[1:],
        "x0": torch.where(present, in_cols.argmax(0), zero)[1:],
        "y0": torch.where(present, in_rows.argmax(0), zero)[1:],
        "x1": torch.where(present, w - 1 - in_cols.flip(0).argmax(0), zero)[1:],
        "y1": torch.where(present, h - 1 - in_rows.flip(0).argmax(0), zero)[1:],
        "cx": (sum_x / safe)[1:],
        "cy": (sum_y / safe)[1:],
    }
