"""Import the published Mask2Former and PRO-SCALE checkpoints (detectron2 names) into m2f_r50 / proscale_r50_*.

The official `MaskFormer` holds `backbone.*` (the detectron2 ResNet, named as
ours), `sem_seg_head.pixel_decoder.*` (input projections, the deformable
encoder under `transformer.`, the FPN step as `adapter_1` / `layer_1`, the
mask-feature conv) and `sem_seg_head.predictor.*` (the masked-attention
decoder). PRO-SCALE numbers its encoder layers 0..p1+p2+p3-1 in one list and
names its token re-calibration `token_excite.ops`; its LPE (`layer_1`) keeps
only the GroupNorm. `criterion.empty_weight` (the loss' no-object weight) is
training-only and dropped.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ros_seg.models.key_renaming import RenamedWeights, RenameRules, rename_weights

_PD = r"^sem_seg_head\.pixel_decoder\."
_TD = r"^sem_seg_head\.predictor\."
_TD_OUT = "transformer_decoder."

MASK2FORMER_RULES: RenameRules = [
    (r"^criterion\.empty_weight$", None),
    (r"^pixel_(mean|std)$", None),
    (r"^backbone\.(.+)$", r"backbone.\1"),
    (_PD + r"input_proj\.(\d+)\.([01])\.", r"pixel_decoder.input_proj.\1.\2."),
    (_PD + r"transformer\.level_embed$", "pixel_decoder.encoder.level_embed"),
    (_PD + r"transformer\.encoder\.layers\.(\d+)\.", r"pixel_decoder.encoder.layers.\1."),
    (_PD + r"transformer\.encoder\.token_excite\.ops\.", "pixel_decoder.encoder.recalibration.phi."),
    (_PD + r"adapter_1\.weight$", "pixel_decoder.lateral_conv.0.weight"),
    (_PD + r"adapter_1\.norm\.", "pixel_decoder.lateral_conv.1."),
    (_PD + r"layer_1\.weight$", "pixel_decoder.output_conv.0.weight"),
    (_PD + r"layer_1\.norm\.", "pixel_decoder.output_conv.1."),
    (_PD + r"mask_features\.", "pixel_decoder.mask_features."),
    (_TD + r"transformer_self_attention_layers\.(\d+)\.self_attn\.", _TD_OUT + r"self_attention_layers.\1.attn."),
    (_TD + r"transformer_self_attention_layers\.(\d+)\.norm\.", _TD_OUT + r"self_attention_layers.\1.norm."),
    (
        _TD + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.",
        _TD_OUT + r"cross_attention_layers.\1.attn.",
    ),
    (_TD + r"transformer_cross_attention_layers\.(\d+)\.norm\.", _TD_OUT + r"cross_attention_layers.\1.norm."),
    (_TD + r"transformer_ffn_layers\.(\d+)\.", _TD_OUT + r"ffn_layers.\1."),
    (
        _TD + r"(decoder_norm|query_feat|query_embed|level_embed|input_proj|class_embed|mask_embed)\.",
        _TD_OUT + r"\1.",
    ),
]

_FLAT_ENCODER_LAYER = re.compile(r"^pixel_decoder\.encoder\.layers\.(\d+)\.")
_STAGE_LAYER = re.compile(r"^(pixel_decoder\.encoder\.stages\.(\d+)\.(\d+)\.)")


def convert_mask2former_state_dict(
    weights: dict[str, torch.Tensor | np.ndarray], expected: dict[str, torch.Tensor], source: str
) -> RenamedWeights:
    """Official Mask2Former / PRO-SCALE weights under ros_seg names; `expected` is the target model's state dict.

    For a PRO-SCALE model (encoder layers held per stage) the official flat layer
    index i becomes the i-th layer of the stages taken in order.
    """
    renamed = rename_weights(weights, MASK2FORMER_RULES, expected, source)
    stage_layers = sorted(
        {m.group(1): (int(m.group(2)), int(m.group(3))) for k in expected if (m := _STAGE_LAYER.match(k))}.items(),
        key=lambda item: item[1],
    )
    if stage_layers:
        prefixes = [prefix for prefix, _ in stage_layers]
        tensors = {}
        for key, value in renamed.tensors.items():
            m = _FLAT_ENCODER_LAYER.match(key)
            if m and int(m.group(1)) < len(prefixes):
                key = prefixes[int(m.group(1))] + key[m.end():]
            tensors[key] = value
        renamed.tensors = tensors
    return renamed
