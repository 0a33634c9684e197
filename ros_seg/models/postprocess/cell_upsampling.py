"""Exact decisions on bilinearly upsampled maps, computed mostly at low resolution.

Bilinear upsampling makes every output pixel a convex combination of the four
corners of one low-resolution *cell*, so each channel's value inside a cell
lies between the smallest and the largest of its corners. A channel whose
largest corner is below another channel's smallest corner can never win an
argmax anywhere in the cell; when only one channel is left (and, where it
matters, the sign of its value is the same at all four corners) the decision
holds for every output pixel of the cell. Only the cells left undecided — near
boundaries, a few percent of a trained model's cells — are interpolated, one
block of pixels per (cell, remaining channel) pair.

The result is a `CellLabels`: one label per decided cell plus explicit labels
for the pixels of undecided cells. Pixel counts, bounding boxes and centroids
come from it without a full-resolution pass, and `render` writes the
full-resolution map with one gather and one scatter.

Geometry: output pixel centres map onto the valid (unpadded) region of the
low-resolution map exactly as in `postprocess.resize_valid_region`
(align_corners=False, coordinates clamped to the border); block values use the
same arithmetic, in the same order, as a per-pixel bilinear lookup.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

# Bound on interpolated values held at once (memory of the boundary work).
MAX_BLOCK_VALUES = 1 << 22


def _axis(valid: int, padded: int, low: int, out: int, device: torch.device):
    """One axis of a CellGrid: per output index its cell; per cell its low-res index, first output
    index and count; and (cells, piece) tables of each cell's output indices, upper-corner weights and
    validity. The output indices sampling from one low-res index are split into cells of at most the
    typical run length, so that blocks stay small where border clamping lengthens a run."""
    scale = valid / out * low / padded
    src = ((torch.arange(out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(0, low - 1)
    low_index = src.floor().long()
    weight = (src - low_index).float()
    runs = torch.bincount(low_index, minlength=low)
    piece = max(1, int(runs[runs > 0].median()))
    run_start = torch.cumsum(runs, 0) - runs
    pieces = (runs + piece - 1) // piece  # cells per low-res index (0 where no output index samples it)
    first_cell = torch.cumsum(pieces, 0) - pieces
    cell = first_cell[low_index] + (torch.arange(out, device=device) - run_start[low_index]) // piece
    cells = int(pieces.sum())
    cell_low = torch.repeat_interleave(torch.arange(low, device=device), pieces)
    count = torch.bincount(cell, minlength=cells)
    start = torch.cumsum(count, 0) - count
    offset = torch.arange(piece, device=device)
    valid_tab = offset[None, :] < count[:, None]  # (cells, piece)
    index_tab = (start[:, None] + offset[None, :]).clamp(max=out - 1)
    weight_tab = torch.where(valid_tab, weight[index_tab], torch.zeros((), device=device))
    return cell, cell_low, start, count, index_tab, weight_tab, valid_tab


@dataclass
class CellGrid:
    """How output pixels (out_h, out_w) sample a (h, w) low-resolution map, in cells.

    Every output pixel interpolates between the four low-res values around its
    sampling point; a cell is a rectangle of output pixels sharing the same four:
    along each axis, a run of consecutive output indices with one lower index i
    (upper index min(i + 1, h - 1)). Cell-level maps are (cells_h, cells_w).
    Per axis: each output index's cell, each cell's low-res index, first output
    index and count, and padded (cells, piece) tables of output indices,
    upper-corner weights and validity.
    """

    row_cell: torch.Tensor
    row_low: torch.Tensor
    row_start: torch.Tensor
    row_count: torch.Tensor
    row_index: torch.Tensor
    row_weight: torch.Tensor
    row_valid: torch.Tensor
    col_cell: torch.Tensor
    col_low: torch.Tensor
    col_start: torch.Tensor
    col_count: torch.Tensor
    col_index: torch.Tensor
    col_weight: torch.Tensor
    col_valid: torch.Tensor
    low_size: tuple[int, int]
    out_size: tuple[int, int]

    @classmethod
    def create(
        cls,
        low_size: tuple[int, int],
        valid_size: tuple[int, int],
        padded_size: tuple[int, int],
        out_size: tuple[int, int],
        device: torch.device,
    ) -> CellGrid:
        rows = _axis(valid_size[0], padded_size[0], low_size[0], out_size[0], device)
        cols = _axis(valid_size[1], padded_size[1], low_size[1], out_size[1], device)
        return cls(*rows, *cols, tuple(low_size), tuple(out_size))

    @property
    def cell_pixels(self) -> torch.Tensor:
        """(cells_h, cells_w) number of output pixels in each cell."""
        return self.row_count[:, None] * self.col_count[None, :]

    @property
    def low_pixels(self) -> torch.Tensor:
        """(h, w) number of output pixels sampling from each low-res cell (all its cells together)."""
        h, w = self.low_size
        rows = torch.zeros(h, dtype=torch.long, device=self.row_low.device).index_add_(0, self.row_low, self.row_count)
        cols = torch.zeros(w, dtype=torch.long, device=self.col_low.device).index_add_(0, self.col_low, self.col_count)
        return rows[:, None] * cols[None, :]

    @staticmethod
    def low_corners(maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four corners of every low-res cell, (C, h, w) -> 4 x (C, h, w): the values at
        (i, j), (i1, j), (i, j1), (i1, j1), with indices clamped at the last row and column."""
        below = torch.cat([maps[..., 1:, :], maps[..., -1:, :]], dim=-2)
        right = torch.cat([maps[..., 1:], maps[..., -1:]], -1)
        below_right = torch.cat([below[..., 1:], below[..., -1:]], -1)
        return maps, below, right, below_right

    def pair_corners(self, corners: tuple[torch.Tensor, ...], channel, cell_i, cell_j) -> tuple[torch.Tensor, ...]:
        """Corner values (P,) x 4 of (channel, cell) pairs, from `low_corners` maps."""
        i, j = self.row_low[cell_i], self.col_low[cell_j]
        return tuple(c[channel, i, j] for c in corners)

    def expand(self, maps: torch.Tensor) -> torch.Tensor:
        """Low-res (..., h, w) -> cell level (..., cells_h, cells_w)."""
        return _gather_2d(maps, self.row_low, self.col_low)

    def to_pixels(self, cell_map: torch.Tensor) -> torch.Tensor:
        """Value of each output pixel's cell: (..., cells_h, cells_w) -> (..., out_h, out_w)."""
        return _gather_2d(cell_map, self.row_cell, self.col_cell)

    def block_values(self, corners: tuple[torch.Tensor, ...], cell_i: torch.Tensor, cell_j: torch.Tensor):
        """Bilinear values over whole cells: corner values (P,) x 4 of P (cell, channel) pairs ->
        (P, R, C) over each cell's padded block of output pixels (see `block_pixels` for validity)."""
        v00, v10, v01, v11 = (c[:, None] for c in corners)
        wx = self.col_weight[cell_j]  # (P, C)
        wy = self.row_weight[cell_i][:, :, None]  # (P, R, 1)
        top = (v00 * (1 - wx) + v01 * wx)[:, None, :]
        bottom = (v10 * (1 - wx) + v11 * wx)[:, None, :]
        return top * (1 - wy) + bottom * wy

    def block_pixels(self, cell_i: torch.Tensor, cell_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat output index (P, R, C) of every pixel of the cells' blocks, and which entries are real."""
        width = self.out_size[1]
        index = self.row_index[cell_i][:, :, None] * width + self.col_index[cell_j][:, None, :]
        valid = self.row_valid[cell_i][:, :, None] & self.col_valid[cell_j][:, None, :]
        return index, valid

    @property
    def block_size(self) -> int:
        """Entries of one cell's padded block of output pixels (R x C)."""
        return self.row_index.shape[1] * self.col_index.shape[1]

    def pairs_per_chunk(self) -> int:
        """Pairs whose blocks hold at most about MAX_BLOCK_VALUES values."""
        return max(1, MAX_BLOCK_VALUES // self.block_size)


def cell_grid(
    low_size: tuple[int, int],
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    device: torch.device,
) -> CellGrid:
    """`CellGrid.create`, remembered per geometry: a camera stream asks for the same grid every frame
    (twice: semantic and panoptic). Grids are only read, never changed."""
    sizes = (low_size, valid_size, padded_size, out_size)
    return _remembered_grid(*(tuple(int(v) for v in size) for size in sizes), torch.device(device))


@functools.lru_cache(maxsize=16)
def _remembered_grid(low_size, valid_size, padded_size, out_size, device) -> CellGrid:  # noqa: ANN001
    return CellGrid.create(low_size, valid_size, padded_size, out_size, device)


def _gather_2d(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """maps[..., rows, :][..., cols]; through NumPy on the CPU, whose take is several times faster
    than index_select along the last dimension there."""
    if maps.device.type == "cpu" and maps.dtype != torch.bfloat16:
        taken = np.take(np.take(maps.numpy(), rows.numpy(), axis=-2), cols.numpy(), axis=-1)
        return torch.from_numpy(taken)
    return maps.index_select(-2, rows).index_select(-1, cols)


@dataclass
class CellLabels:
    """An integer label per output pixel, stored as one label per decided cell (`cell`, valid where
    `decided`) and explicit labels `pixel_value` at flat output indices `pixel_index` covering every
    pixel of the undecided cells."""

    grid: CellGrid
    cell: torch.Tensor  # (cells_h, cells_w)
    decided: torch.Tensor  # (cells_h, cells_w) bool
    pixel_index: torch.Tensor  # (M,) int64
    pixel_value: torch.Tensor  # (M,)

    def map(self, table: torch.Tensor) -> CellLabels:
        """Labels replaced by table[label]."""
        return CellLabels(
            self.grid, table[self.cell.long()], self.decided, self.pixel_index, table[self.pixel_value.long()]
        )

    def render(self, dtype: torch.dtype) -> torch.Tensor:
        """The (out_h, out_w) label map."""
        out = self.grid.to_pixels(self.cell.to(dtype))
        out.view(-1)[self.pixel_index] = self.pixel_value.to(dtype)
        return out

    def counts(self, size: int) -> torch.Tensor:
        """(size,) number of output pixels of each label 0..size-1."""
        cells = torch.bincount(
            self.cell[self.decided].long(), weights=self.grid.cell_pixels[self.decided].double(), minlength=size
        )
        return cells.round().long() + torch.bincount(self.pixel_value.long(), minlength=size)

    def statistics(self, size: int) -> dict[str, torch.Tensor]:
        """Area, inclusive bounding box (x0, y0, x1, y1; zeros where absent) and centroid (cx, cy) of
        labels 0..size-1, as (size,) tensors."""
        g = self.grid
        device = self.cell.device
        decided = self.decided
        label = self.cell[decided].long()
        ci, cj = torch.nonzero(decided, as_tuple=True)
        first_y, first_x = g.row_start[ci], g.col_start[cj]
        height, width = g.row_count[ci], g.col_count[cj]
        # Sums of x and y over a cell's pixels, from its first index and extent.
        sum_x_cell = height.double() * (width * first_x + width * (width - 1) / 2).double()
        sum_y_cell = width.double() * (height * first_y + height * (height - 1) / 2).double()

        value = self.pixel_value.long()
        py, px = self.pixel_index // g.out_size[1], self.pixel_index % g.out_size[1]
        area = self.counts(size)
        sum_x = torch.bincount(label, weights=sum_x_cell, minlength=size) + torch.bincount(
            value, weights=px.double(), minlength=size
        )
        sum_y = torch.bincount(label, weights=sum_y_cell, minlength=size) + torch.bincount(
            value, weights=py.double(), minlength=size
        )
        big = max(g.out_size)

        def extreme(cell_values: torch.Tensor, pixel_values: torch.Tensor, init: int, how: str) -> torch.Tensor:
            out = torch.full((size,), init, dtype=torch.long, device=device)
            out.scatter_reduce_(0, label, cell_values, how)
            return out.scatter_reduce_(0, value, pixel_values, how)

        x0 = extreme(first_x, px, big, "amin")
        y0 = extreme(first_y, py, big, "amin")
        x1 = extreme(first_x + width - 1, px, -1, "amax")
        y1 = extreme(first_y + height - 1, py, -1, "amax")
        present = area > 0
        zero = torch.zeros_like(x0)
        safe = area.clamp(min=1).double()
        return {
            "area": area,
            "x0": torch.where(present, x0, zero),
            "y0": torch.where(present, y0, zero),
            "x1": torch.where(present, x1, zero),
            "y1": torch.where(present, y1, zero),
            "cx": sum_x / safe,
            "cy": sum_y / safe,
        }


def corner_range(corners: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest of the four `low_corners` maps: the range of every bilinear value in each cell."""
    low = torch.minimum(torch.minimum(corners[0], corners[1]), torch.minimum(corners[2], corners[3]))
    high = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))
    return low, high


def undecided_pairs(grid: CellGrid, candidates: torch.Tensor, undecided: torch.Tensor):
    """Undecided cells and their remaining channels: candidates (C, h, w) bool at low resolution,
    undecided (cells_h, cells_w) bool -> cell_i, cell_j (U,), and pairs (owner (P,) index into the U
    cells, channel (P,)), sorted by cell then channel (so the first maximum among a cell's pairs is
    argmax's choice)."""
    cell_i, cell_j = torch.nonzero(undecided, as_tuple=True)
    owner, channel = torch.nonzero(candidates[:, grid.row_low[cell_i], grid.col_low[cell_j]].t(), as_tuple=True)
    return cell_i, cell_j, owner, channel


def pair_groups(owner: torch.Tensor, cells: int, grid: CellGrid):
    """Undecided cells grouped by their number of pairs rounded up to a power of two c (pairs sorted
    by cell), in chunks of at most about MAX_BLOCK_VALUES block values: yields (cells (G,), pair
    indices (G, c)). A cell with fewer than c pairs repeats its first pair: a repeat never beats the
    original in a first-maximum argmax, so results are unchanged while the groups stay few."""
    if cells == 0:
        return
    counts = torch.bincount(owner, minlength=cells)
    first = torch.cumsum(counts, 0) - counts
    width = torch.pow(2, torch.ceil(torch.log2(counts.double()))).long()
    for c in torch.unique(width).tolist():
        members = torch.nonzero(width == c)[:, 0]
        for part in chunks(members.numel(), MAX_BLOCK_VALUES // (grid.block_size * c)):
            group = members[part]
            offset = torch.arange(c, device=owner.device)[None, :]
            yield group, first[group][:, None] + torch.where(offset < counts[group][:, None], offset, 0)


def argmax_first(values: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 of (G, c, ...) values, first index on ties (like torch.argmax), computed as
    c - 1 elementwise steps: c is small and a strided reduction over dim 1 is slow on CPUs."""
    best_value = values[:, 0]
    best = torch.zeros(best_value.shape, dtype=torch.long, device=values.device)
    for k in range(1, values.shape[1]):
        better = values[:, k] > best_value
        best_value = torch.where(better, values[:, k], best_value)
        best.masked_fill_(better, k)
    return best


def group_blocks(grid: CellGrid, corners: tuple[torch.Tensor, ...], channel: torch.Tensor, cell_i: torch.Tensor,
                 cell_j: torch.Tensor) -> torch.Tensor:
    """Block values of a group: low-res corner maps, channel (G, c), cells (G,) -> (G, c, R, C)."""
    g, c = channel.shape
    ci, cj = cell_i[:, None].expand(g, c).reshape(-1), cell_j[:, None].expand(g, c).reshape(-1)
    values = grid.block_values(grid.pair_corners(corners, channel.reshape(-1), ci, cj), ci, cj)
    return values.view(g, c, *values.shape[1:])


def upsampled_argmax(scores: torch.Tensor, grid: CellGrid) -> CellLabels:
    """argmax over C of bilinearly upsampled (C, h, w) scores."""
    low_labels = argmax_first(scores[None])[0]  # (h, w)
    if scores.shape[0] <= 255:
        low_labels = low_labels.to(torch.uint8)  # less memory traffic in the full-resolution gather
    corners = grid.low_corners(scores)
    low, high = corner_range(corners)
    candidates = high >= low.amax(0)[None]  # (C, h, w): channels that can win somewhere in the cell
    corner_labels = grid.low_corners(low_labels)
    agree = (corner_labels[0] == corner_labels[1]) & (corner_labels[0] == corner_labels[2])
    agree &= corner_labels[0] == corner_labels[3]
    decided = grid.expand(agree | (candidates.sum(0) == 1))
    cell_i, cell_j, owner, channel = undecided_pairs(grid, candidates, ~decided)
    indices, values = [], []
    for cells, pairs in pair_groups(owner, cell_i.numel(), grid):
        ch, ci, cj = channel[pairs], cell_i[cells], cell_j[cells]
        best = argmax_first(group_blocks(grid, corners, ch, ci, cj))  # (G, R, C)
        winner = ch.gather(1, best.flatten(1)).view_as(best)
        index, valid = grid.block_pixels(ci, cj)
        indices.append(index[valid])
        values.append(winner[valid].to(low_labels.dtype))
    return CellLabels(
        grid,
        grid.expand(low_labels),
        decided,
        cat_or_empty(indices, torch.long, scores.device),
        cat_or_empty(values, low_labels.dtype, scores.device),
    )


def upsampled_mask_argmax(class_probs: torch.Tensor, mask_logits: torch.Tensor, grid: CellGrid) -> CellLabels:
    """argmax over K of sum_q class_probs[k, q] * sigmoid(bilinearly upsampled mask_logits[q]).

    class_probs (K, Q) non-negative, mask_logits (Q, h, w). Sigmoid is monotone and the weights are
    non-negative, so in a cell each class's score lies between its sums over the queries' lowest and
    highest corner sigmoids: a cell where one class's lowest exceeds every other class's highest is
    decided whole; the pixels of the other cells get all Q masks interpolated and summed.
    """
    queries = mask_logits.shape[0]
    corners = grid.low_corners(mask_logits)
    low, high = corner_range(corners)  # (Q, h, w)
    lower = torch.einsum("kq,qhw->khw", class_probs, low.sigmoid())
    upper = torch.einsum("kq,qhw->khw", class_probs, high.sigmoid())
    best = argmax_first(lower[None])[0]  # (h, w)
    others = upper.scatter(0, best[None], float("-inf")).amax(0)
    low_labels = best.to(torch.uint8) if class_probs.shape[0] <= 255 else best
    decided = grid.expand(lower.gather(0, best[None])[0] > others)
    cell_i, cell_j = torch.nonzero(~decided, as_tuple=True)
    indices, values = [], []
    query = torch.arange(queries, device=mask_logits.device)
    for part in chunks(cell_i.numel(), MAX_BLOCK_VALUES // (grid.block_size * queries)):
        ci, cj = cell_i[part], cell_j[part]
        q = query[:, None].expand(-1, ci.numel()).reshape(-1)  # (Q * U,): every query of every cell
        cells_i, cells_j = ci.repeat(queries), cj.repeat(queries)
        masks = grid.block_values(grid.pair_corners(corners, q, cells_i, cells_j), cells_i, cells_j)  # (Q*U, R, C)
        scores = torch.mm(class_probs, masks.view(queries, -1).sigmoid())  # (K, U * R * C)
        index, valid = grid.block_pixels(ci, cj)
        indices.append(index[valid])
        values.append(scores.argmax(0).view(valid.shape)[valid].to(low_labels.dtype))
    return CellLabels(
        grid,
        grid.expand(low_labels),
        decided,
        cat_or_empty(indices, torch.long, mask_logits.device),
        cat_or_empty(values, low_labels.dtype, mask_logits.device),
    )


def cat_or_empty(parts: list[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)


def chunks(total: int, size: int) -> list[slice]:
    """Slices covering range(total) in pieces of at most `size` (at least 1)."""
    size = max(1, size)
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]
