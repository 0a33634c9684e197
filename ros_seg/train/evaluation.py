"""Training's periodic validation: accuracy of the model being trained on a Cityscapes-layout split.

A light path without the Segmenter: each image, optionally resized (bilinear)
to an evaluation size, goes through the model in eval mode, and the model
family's post-processing — the code the Segmenter runs — turns its logits into
label maps at the ground truth's resolution, which ros_seg.eval.split_scoring
scores. `ros-seg eval` scores through the Segmenter instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ros_seg.eval.split_scoring import Prediction, score_split
from ros_seg.models.meta_architecture import MetaArchitecture
from ros_seg.models.size_divisibility import padded_size


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    family: MetaArchitecture,
    device: torch.device,
    size: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score `model` (of `family`) on every sample of `dataset` (a CityscapesDataset without transform),
    merging with the thresholds of the model config; the model is left in eval mode.

    size: (H, W) the images are resized to before the model (None: as stored);
    predictions are scored at the ground truth's resolution either way.
    Returns the report of ros_seg.eval.split_scoring.score_split.
    """
    model.eval()
    options = family.default_options()
    panoptic = dataset.task == "panoptic"
    divisibility = family.config.input.size_divisibility

    def predict(image: np.ndarray) -> Prediction:
        out_size = image.shape[:2]
        x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        if size is not None and tuple(size) != tuple(out_size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        valid = tuple(x.shape[-2:])
        outputs = model(x)
        logits, masks = outputs["pred_logits"][0], outputs["pred_masks"][0]  # (Q, K+1), (Q, h, w)
        semantic, segments = family.postprocess(
            logits, masks, valid, padded_size(valid, divisibility), out_size, options, panoptic
        )
        if segments is None:
            return Prediction(semantic.cpu().numpy())
        classes = {i + 1: int(c) for i, c in enumerate(segments.classes.tolist())}
        return Prediction(semantic.cpu().numpy(), segments.panoptic.cpu().numpy(), classes)

    return score_split(dataset, family.metadata, predict, progress)
