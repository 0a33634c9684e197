"""Initial bias of focal-loss classifiers (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)."""
from __future__ import annotations

import math


def focal_prior_bias(prior: float = 0.01) -> float:
    """Bias that makes a sigmoid classifier start at probability `prior`: -log((1 - p) / p)."""
    return -math.log((1 - prior) / prior)
