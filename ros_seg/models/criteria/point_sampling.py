"""Sampling maps at continuous points, as Mask2Former trains on a few thousand points per mask.

Point coordinates are (x, y) in [0, 1] over the whole map, with the
align_corners=False convention (0 and 1 are the outer edges of the border
pixels), so the same points address a 1/4-resolution prediction and a
full-resolution target that cover the same image area. Points within half a
pixel of the edge take the border pixel's value (Mask2Former pads with zeros
there, which softens every mask along the image edge; we do not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of `maps` (N, C, H, W) at `points` (N, P, 2) (x, y) in [0, 1] -> (N, C, P)."""
    grid = points.to(maps.dtype)[:, :, None, :] * 2 - 1  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]


def uncertain_points(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """Points where mask logits (N, 1, H, W) are most uncertain, mixed with uniform ones -> (N, P, 2).

    Draws `oversample_ratio * num_points` uniform points, keeps the
    `importance_sample_ratio * num_points` of them whose logit is closest to 0
    (uncertainty -|logit|) and fills the rest with fresh uniform points. Uses
    the global torch generator on the logits' device; no gradient.
    """
    n = logits.shape[0]
    device = logits.device
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(num_points * importance_sample_ratio)
    with torch.no_grad():
        candidates = torch.rand(n, num_candidates, 2, device=device)  # (N, S, 2)
        uncertainty = -point_sample(logits.float(), candidates)[:, 0].abs()  # (N, S)
        # Unsorted: the losses are means and sums over points, and topk without sorting takes half the time.
        chosen = uncertainty.topk(num_uncertain, dim=1, sorted=False).indices  # (N, U)
        kept = candidates.gather(1, chosen[..., None].expand(-1, -1, 2))  # (N, U, 2)
        fill = torch.rand(n, num_points - num_uncertain, 2, device=device)
        return torch.cat([kept, fill], dim=1)  # (N, P, 2)
