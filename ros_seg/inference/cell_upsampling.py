"""Exact decisions on bilinearly upsampled maps, computed mostly at low resolution.

Bilinear upsampling makes every output pixel a convex combination of the four
corners of one low-resolution *cell*. A decision that is the same at all four
corners in a way that survives convex combination (e.g. the argmax of linear
scores, or the sign of a logit) is therefore the decision at every output
pixel of that cell. Only pixels in undecided cells — near boundaries, a few
percent of the image — need their values interpolated. This turns a full
resolution pass over every class or query map into a couple of index gathers.

Geometry: output pixel centres map onto the valid (unpadded) region of the
low-resolution map exactly as in `postprocess.resize_valid_region`
(align_corners=False, coordinates clamped to the border).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _axis(valid: int, padded: int, low: int, out: int, device: torch.device):
    """Per output index along one axis: corner indices i0, i1, weight of i1; and the cell partition."""
    scale = valid / out * low / padded
    src = ((torch.arange(out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(0, low - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=low - 1)
    weight = (src - i0).float()
    count = torch.bincount(i0, minlength=low)  # output pixels whose cell starts at each low-res index
    start = torch.cumsum(count, 0) - count
    return i0, i1, weight, start, count


@dataclass
class CellGrid:
    """How output pixels (out_h, out_w) sample a (h, w) map: cell (i, j) has corners
    (i, j), (i1, j), (i, j1), (i1, j1) with i1 = min(i + 1, h - 1)."""

    y0: torch.Tensor
    y1: torch.Tensor
    wy: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    wx: torch.Tensor
    row_start: torch.Tensor
    row_count: torch.Tensor
    col_start: torch.Tensor
    col_count: torch.Tensor
    low_size: tuple[int, int]

    @classmethod
    def create(
        cls,
        low_size: tuple[int, int],
        valid_size: tuple[int, int],
        padded_size: tuple[int, int],
        out_size: tuple[int, int],
        device: torch.device,
    ) -> "CellGrid":
        y0, y1, wy, rs, rc = _axis(valid_size[0], padded_size[0], low_size[0], out_size[0], device)
        x0, x1, wx, cs, cc = _axis(valid_size[1], padded_size[1], low_size[1], out_size[1], device)
        return cls(y0, y1, wy, x0, x1, wx, rs, rc, cs, cc, low_size)

    def corners(self, maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four corner values of every cell: (C, h, w) -> 4 x (C, h, w)."""
        h, w = self.low_size
        down = (torch.arange(h, device=maps.device) + 1).clamp(max=h - 1)
        right = (torch.arange(w, device=maps.device) + 1).clamp(max=w - 1)
        below = maps.index_select(-2, down)
        return maps, below, maps.index_select(-1, right), below.index_select(-1, right)

    def to_pixels(self, cell_map: torch.Tensor) -> torch.Tensor:
        """Value of each output pixel's cell: (..., h, w) -> (..., out_h, out_w)."""
        return cell_map.index_select(-2, self.y0).index_select(-1, self.x0)

    def pixels_in_cells(self, cell_i: torch.Tensor, cell_j: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every output pixel of the given cells: (py, px, owner) with owner indexing the cell list."""
        rows, cols = self.row_count[cell_i], self.col_count[cell_j]
        sizes = rows * cols
        owner = torch.repeat_interleave(torch.arange(len(cell_i), device=cell_i.device), sizes)
        first = torch.cumsum(sizes, 0) - sizes
        k = torch.arange(int(sizes.sum()), device=cell_i.device) - first[owner]  # index inside the cell
        py = self.row_start[cell_i][owner] + k // cols[owner]
        px = self.col_start[cell_j][owner] + k % cols[owner]
        return py, px, owner

    def sample(self, maps: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """Bilinear values of (C, h, w) maps at output pixels (py, px): (C, M)."""
        w = self.low_size[1]
        rows = maps.flatten(1).t()  # (h*w, C): one contiguous row of channels per low-res pixel
        y0, y1, wy = self.y0[py] * w, self.y1[py] * w, self.wy[py][:, None]
        x0, x1, wx = self.x0[px], self.x1[px], self.wx[px][:, None]
        top = rows.index_select(0, y0 + x0) * (1 - wx) + rows.index_select(0, y0 + x1) * wx
        bottom = rows.index_select(0, y1 + x0) * (1 - wx) + rows.index_select(0, y1 + x1) * wx
        return (top * (1 - wy) + bottom * wy).t()  # (C, M)


def upsampled_argmax(scores: torch.Tensor, grid: CellGrid) -> torch.Tensor:
    """argmax over C of bilinearly upsampled (C, h, w) scores -> (out_h, out_w) int64.

    Where a cell's four corners share their argmax, so does every convex
    combination of them; the other pixels are interpolated and compared.
    """
    labels = scores.argmax(0)  # (h, w)
    if scores.shape[0] <= 255:
        labels = labels.to(torch.uint8)  # 8x less memory traffic in the full-resolution gathers
    corner_labels = grid.corners(labels)
    agree = (corner_labels[0] == corner_labels[1]) & (corner_labels[0] == corner_labels[2])
    agree &= corner_labels[0] == corner_labels[3]
    out = grid.to_pixels(labels).long()
    py, px = torch.nonzero(~grid.to_pixels(agree), as_tuple=True)
    if py.numel():
        out[py, px] = grid.sample(scores.float(), py, px).argmax(0)
    return out


def sample_channels(
    maps: torch.Tensor, grid: CellGrid, channel: torch.Tensor, py: torch.Tensor, px: torch.Tensor
) -> torch.Tensor:
    """Bilinear value of maps[channel[k]] at output pixel (py[k], px[k]): (M,)."""
    h, w = grid.low_size
    flat = maps.reshape(-1)
    base = channel * (h * w)
    y0, y1, wy = base + grid.y0[py] * w, base + grid.y1[py] * w, grid.wy[py]
    x0, x1, wx = grid.x0[px], grid.x1[px], grid.wx[px]
    top = flat.index_select(0, y0 + x0) * (1 - wx) + flat.index_select(0, y0 + x1) * wx
    bottom = flat.index_select(0, y1 + x0) * (1 - wx) + flat.index_select(0, y1 + x1) * wx
    return top * (1 - wy) + bottom * wy


def chunks(total: int, size: int) -> list[slice]:
    """Slices covering range(total) in pieces of at most `size` (at least 1)."""
    size = max(1, size)
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]
