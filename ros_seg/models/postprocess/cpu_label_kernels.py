"""Compiled CPU kernels for the label maps of bilinearly upsampled predictions.

The same decisions as :mod:`ros_seg.models.postprocess.cell_upsampling` (read its
docstring for the geometry and why a cell can be decided from its corners),
written as loops compiled by Numba: one pass over the cells of a `CellGrid`
prunes the channels that cannot win, fills decided cells whole and
interpolates the others pixel by pixel, straight into the full-resolution map.
On a CPU this replaces hundreds of small tensor operations per frame (each a
Python round trip holding the GIL) by a few calls that release the GIL.

Work is split into bands of cell rows (`row_bands`); the kernels compile on
first use and are cached on disk by Numba.

Arithmetic matches `CellGrid.block_values` in float32 (same operations, same
order); the per-pixel panoptic sigmoid is computed here (that of the corner
ranges by torch), so values equal torch's up to rounding, and only exact ties
between queries can resolve differently.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from ros_seg.models.postprocess.cell_upsampling import CellGrid
from ros_seg.models.postprocess.row_bands import run_in_bands

_F1 = np.float32(1.0)


def _tables(grid: CellGrid) -> tuple[np.ndarray, ...]:
    """The grid's per-axis tables as contiguous NumPy arrays (cell's low index, first output index,
    count, per-offset upper-corner weights)."""
    return tuple(
        np.ascontiguousarray(t.cpu().numpy())
        for t in (grid.row_low, grid.row_start, grid.row_count, grid.row_weight,
                  grid.col_low, grid.col_start, grid.col_count, grid.col_weight)
    )


@numba.njit(cache=True, nogil=True)
def _lerp(u, v, t):
    return u * (_F1 - t) + v * t


@numba.njit(cache=True, nogil=True)
def _cell_columns(v00, v10, v01, v11, col_weight, cj, nx, top, bottom, t):
    """top[t, s], bottom[t, s]: a cell's upper and lower corner values interpolated to each of its
    nx output columns. The bilinear value at row weight wy is then _lerp(top, bottom, wy): the
    operations of `CellGrid.block_values`, in its order, with the horizontal step shared by all rows."""
    for s in range(nx):
        wx = col_weight[cj, s]
        top[t, s] = _lerp(v00, v01, wx)
        bottom[t, s] = _lerp(v10, v11, wx)


@numba.njit(cache=True, nogil=True)
def _sigmoid(x):
    return _F1 / (_F1 + np.exp(-x))


@numba.njit(cache=True, nogil=True)
def _cell_span(cell, low, start, count, size):
    """Along one axis: a cell's low-res index, the next one (clamped at the border), its first output
    index and its number of output indices."""
    i = low[cell]
    return i, min(i + 1, size - 1), start[cell], count[cell]


@numba.njit(cache=True, nogil=True)
def _argmax_rows(scores, best, out, first, end, row_low, row_start, row_count, row_weight,
                 col_low, col_start, col_count, col_weight):
    """Semantic labels of cell rows [first, end): out[y, x] = argmax_k of the bilinear scores[k].
    best: argmax over k of scores at each low-res pixel (first on ties). Where the four corners of
    a cell agree, every pixel of it does (each of its values is the same weighted mean of the
    corners'); elsewhere classes whose highest corner is below some class's lowest corner drop out
    and the rest are interpolated."""
    k_total, h, w = scores.shape
    high = np.empty(k_total, np.float32)
    candidates = np.empty(k_total, np.int64)
    top = np.empty((k_total, col_count.max()), np.float32)
    bottom = np.empty_like(top)
    for ci in range(first, end):
        i, i1, y0, ny = _cell_span(ci, row_low, row_start, row_count, h)
        for cj in range(col_low.shape[0]):
            j, j1, x0, nx = _cell_span(cj, col_low, col_start, col_count, w)
            label = best[i, j]
            if best[i1, j] == label and best[i, j1] == label and best[i1, j1] == label:
                out[y0:y0 + ny, x0:x0 + nx] = label
                continue
            floor = -np.inf
            for k in range(k_total):
                a, b, c, d = scores[k, i, j], scores[k, i1, j], scores[k, i, j1], scores[k, i1, j1]
                high[k] = max(max(a, b), max(c, d))
                floor = max(floor, min(min(a, b), min(c, d)))
            n = 0
            for k in range(k_total):
                if high[k] >= floor:
                    candidates[n] = k
                    n += 1
            if n == 1:
                out[y0:y0 + ny, x0:x0 + nx] = candidates[0]
                continue
            for t in range(n):
                k = candidates[t]
                _cell_columns(scores[k, i, j], scores[k, i1, j], scores[k, i, j1], scores[k, i1, j1],
                              col_weight, cj, nx, top, bottom, t)
            for r in range(ny):
                wy = row_weight[ci, r]
                for s in range(nx):
                    winner = candidates[0]
                    best_value = -np.inf
                    for t in range(n):
                        v = _lerp(top[t, s], bottom[t, s], wy)
                        if v > best_value:
                            best_value, winner = v, candidates[t]
                    out[y0 + r, x0 + s] = winner


@numba.njit(cache=True, nogil=True)
def _pixel_argmax(scores, best):
    """best[i, j] = argmax over k of scores[k, i, j], the first on ties."""
    k_total, h, w = scores.shape
    top = scores[0].copy()
    best[:] = 0
    for k in range(1, k_total):
        for i in range(h):
            for j in range(w):
                if scores[k, i, j] > top[i, j]:
                    top[i, j] = scores[k, i, j]
                    best[i, j] = k


def upsampled_argmax_map(scores: torch.Tensor, grid: CellGrid, dtype: torch.dtype) -> torch.Tensor:
    """(out_h, out_w) argmax over C of bilinearly upsampled (C, h, w) CPU scores (first index on ties)."""
    scores = scores.float().contiguous()
    values = scores.numpy()
    best = np.empty(values.shape[1:], np.int32)
    _pixel_argmax(values, best)
    out = np.empty(grid.out_size, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    tables = _tables(grid)
    run_in_bands(lambda a, b: _argmax_rows(values, best, out, a, b, *tables), tables[0].shape[0])
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True)
def _query_rows(logits, probs, scores, out, counts, own_area, won_area, first, end,
                row_low, row_start, row_count, row_weight, col_low, col_start, col_count, col_weight):
    """Panoptic pixels of cell rows [first, end): out[y, x] = 1 + the query maximising
    scores[q] * sigmoid(bilinear logit q) where that logit is >= 0, else 0; counts[label] += pixels;
    own_area[q] += pixels where q's bilinear logit is >= 0; won_area[q] += pixels q maximises
    (whether or not its own mask covers them). probs: sigmoid of the logits (N, h, w);
    sigmoid is monotone, so a query's range of values over a cell is scores[q] x the lowest and
    highest corner probability."""
    n_total, h, w = logits.shape
    candidates = np.empty(n_total, np.int64)
    pixel_logit = np.empty(n_total, np.float32)
    low = np.empty(n_total, np.float32)
    high = np.empty(n_total, np.float32)
    high_value = np.empty(n_total, np.float32)
    top = np.empty((n_total, col_count.max()), np.float32)
    bottom = np.empty_like(top)
    for ci in range(first, end):
        i, i1, y0, ny = _cell_span(ci, row_low, row_start, row_count, h)
        for cj in range(col_low.shape[0]):
            j, j1, x0, nx = _cell_span(cj, col_low, col_start, col_count, w)
            floor = -np.inf
            best = 0
            for q in range(n_total):
                a, b, c, d = logits[q, i, j], logits[q, i1, j], logits[q, i, j1], logits[q, i1, j1]
                lo, hi = min(min(a, b), min(c, d)), max(max(a, b), max(c, d))
                pa, pb, pc, pd = probs[q, i, j], probs[q, i1, j], probs[q, i, j1], probs[q, i1, j1]
                lo_p, hi_p = min(min(pa, pb), min(pc, pd)), max(max(pa, pb), max(pc, pd))
                low[q], high[q] = lo, hi
                high_value[q] = scores[q] * hi_p
                low_value = scores[q] * lo_p
                if low_value > floor:
                    floor, best = low_value, q
                if lo >= 0:
                    own_area[q] += ny * nx
                elif hi >= 0:
                    _cell_columns(a, b, c, d, col_weight, cj, nx, top, bottom, 0)
                    covered = 0
                    for r in range(ny):
                        wy = row_weight[ci, r]
                        for s in range(nx):
                            covered += _lerp(top[0, s], bottom[0, s], wy) >= 0
                    own_area[q] += covered
            n = 0
            for q in range(n_total):
                if high_value[q] >= floor:
                    candidates[n] = q
                    n += 1
            if n == 1 and (low[best] >= 0 or high[best] < 0):
                label = best + 1 if low[best] >= 0 else 0
                out[y0:y0 + ny, x0:x0 + nx] = label
                counts[label] += ny * nx
                won_area[best] += ny * nx
                continue
            if n == 1:  # one query left, whose mask edge crosses the cell: the sign decides
                _cell_columns(logits[best, i, j], logits[best, i1, j], logits[best, i, j1], logits[best, i1, j1],
                              col_weight, cj, nx, top, bottom, 0)
                inside = 0
                for r in range(ny):
                    wy = row_weight[ci, r]
                    for s in range(nx):
                        label = best + 1 if _lerp(top[0, s], bottom[0, s], wy) >= 0 else 0
                        out[y0 + r, x0 + s] = label
                        inside += label != 0
                counts[best + 1] += inside
                counts[0] += ny * nx - inside
                won_area[best] += ny * nx
                continue
            for t in range(n):
                q = candidates[t]
                _cell_columns(logits[q, i, j], logits[q, i1, j], logits[q, i, j1], logits[q, i1, j1],
                              col_weight, cj, nx, top, bottom, t)
            for r in range(ny):
                wy = row_weight[ci, r]
                for s in range(nx):
                    winner_value = -np.inf
                    winner = 0
                    for t in range(n):
                        pixel_logit[t] = _lerp(top[t, s], bottom[t, s], wy)
                        v = scores[candidates[t]] * _sigmoid(pixel_logit[t])
                        if v > winner_value:
                            winner_value, winner = v, t
                    label = candidates[winner] + 1 if pixel_logit[winner] >= 0 else 0
                    out[y0 + r, x0 + s] = label
                    counts[label] += 1
                    won_area[candidates[winner]] += 1


def query_label_map(logits: torch.Tensor, scores: torch.Tensor, grid: CellGrid
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Panoptic merge of N kept queries on the CPU: logits (N, h, w), scores (N,) ->
    (out_h, out_w) map of 1 + winning query (0 where the winner's own mask does not cover the
    pixel; uint8 for N < 255, else int32), (N + 1,) pixel count of each label, (N,) each query's
    own mask area (logit >= 0), (N,) the pixels each query wins."""
    logits, scores = logits.float().contiguous(), scores.float().contiguous()
    values, probs, weights = logits.numpy(), logits.sigmoid().numpy(), scores.numpy()
    n = values.shape[0]
    out = np.empty(grid.out_size, dtype=np.uint8 if n < 255 else np.int32)
    tables = _tables(grid)

    def work(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts, own, won = np.zeros(n + 1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        _query_rows(values, probs, weights, out, counts, own, won, a, b, *tables)
        return counts, own, won

    parts = run_in_bands(work, tables[0].shape[0])
    counts, own, won = (sum(p[i] for p in parts) for i in range(3))
    return torch.from_numpy(out), torch.from_numpy(counts), torch.from_numpy(own), torch.from_numpy(won)


@numba.njit(cache=True, nogil=True)
def _relabel_rows(labels, table, out, first, end, area, sum_x, x_min, x_max):
    """out[y] = table[labels[y]] for rows [first, end), with per-row area, sum of x and x extent
    of every new label, accumulated per run of equal labels."""
    width = labels.shape[1]
    for y in range(first, end):
        x = 0
        while x < width:
            old = labels[y, x]
            v = table[old]
            start = x
            while x < width and labels[y, x] == old:
                out[y, x] = v
                x += 1
            area[y, v] += x - start
            sum_x[y, v] += (start + x - 1) * (x - start) // 2
            x_min[y, v] = min(x_min[y, v], start)
            x_max[y, v] = max(x_max[y, v], x - 1)


def relabel_with_statistics(labels: torch.Tensor, table: torch.Tensor, size: int
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Map a CPU (H, W) integer label map through `table` (new labels 0..size-1) into a new int32
    map, and return it with the area, inclusive bounding box (x0, y0, x1, y1; zeros where absent)
    and centroid (cx, cy) of every new label, as (size,) tensors — one pass over the map."""
    source = labels.numpy()
    lut = np.ascontiguousarray(table.numpy().astype(np.int32))
    h, w = source.shape
    mapped = np.empty((h, w), np.int32)
    area = np.zeros((h, size), np.int64)
    sum_x = np.zeros((h, size), np.int64)
    x_min = np.full((h, size), w, np.int64)
    x_max = np.full((h, size), -1, np.int64)
    run_in_bands(lambda a, b: _relabel_rows(source, lut, mapped, a, b, area, sum_x, x_min, x_max), h)
    total = area.sum(0)
    present = total > 0
    rows = np.arange(h)
    has = area > 0
    safe = np.maximum(total, 1).astype(np.float64)
    y0 = np.where(present, has.argmax(0), 0)
    y1 = np.where(present, h - 1 - has[::-1].argmax(0), 0)
    stats = {
        "area": total,
        "x0": np.where(present, x_min.min(0), 0),
        "y0": y0,
        "x1": np.where(present, x_max.max(0), 0),
        "y1": y1,
        "cx": sum_x.sum(0) / safe,
        "cy": (area * rows[:, None]).sum(0) / safe,
    }
    return torch.from_numpy(mapped), {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in stats.items()}


def warm_up() -> None:
    """Compile (or load from Numba's cache) every kernel, in each label width it is used with
    (byte-wide maps for up to 254 classes or kept queries, wider beyond), on a tiny input."""
    grid = CellGrid.create((2, 2), (8, 8), (8, 8), (8, 8), torch.device("cpu"))
    for channels, semantic_dtype in ((2, torch.uint8), (255, torch.int64)):
        maps = torch.zeros(channels, 2, 2)
        upsampled_argmax_map(maps, grid, semantic_dtype)
        labels, _, _, _ = query_label_map(maps, torch.ones(channels), grid)
        relabel_with_statistics(labels, torch.arange(channels + 1, dtype=torch.int32), channels + 1)

