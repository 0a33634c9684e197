"""Import checkpoints written by the PEM authors' detectron2 training code.

A detectron2 `model_final.pth` is a dict whose "model" entry holds the weights
under `backbone.`, `sem_seg_head.pixel_decoder.` and `sem_seg_head.predictor.`.
The rules below rename them to ros_seg's modules. Two quirks of the authors'
files are handled: STDC backbones store every tensor twice (`features.N` and the
`x2/x4/x8/x16/x32` aliases; the aliases are dropped), and earlier releases named
the PEM cross-attention branches `to_query` (features) and `to_key` (queries).
"""
from __future__ import annotations

import torch

from ros_seg.models.key_renaming import RenamedWeights, RenameRules, rename_weights

# (pattern on the detectron2 key, replacement) -- first match wins; None drops the key.
PEM_RULES: RenameRules = [
    (r"^criterion\.empty_weight$", None),
    (r"^pixel_(mean|std)$", None),
    (r"^backbone\.x(2|4|8|16|32)\.", None),
    (r"^backbone\.(.+)$", r"backbone.\1"),
    # pixel decoder
    (r"^sem_seg_head\.pixel_decoder\.in_projections\.(\d+)\.conv\.", r"pixel_decoder.in_projections.\1.conv."),
    (r"^sem_seg_head\.pixel_decoder\.in_projections\.(\d+)\.bn\.", r"pixel_decoder.in_projections.\1.norm."),
    (r"^sem_seg_head\.pixel_decoder\.conv_avg\.conv\.", r"pixel_decoder.global_context.conv."),
    (r"^sem_seg_head\.pixel_decoder\.conv_avg\.bn\.", r"pixel_decoder.global_context.norm."),
    (r"^sem_seg_head\.pixel_decoder\.csm\.(\d+)\.mlp\.0\.mlp\.0\.", r"pixel_decoder.csm.\1.reduce."),
    (r"^sem_seg_head\.pixel_decoder\.csm\.(\d+)\.mlp\.0\.mlp\.1\.", r"pixel_decoder.csm.\1.norm."),
    (r"^sem_seg_head\.pixel_decoder\.csm\.(\d+)\.mlp\.0\.mlp\.3\.", r"pixel_decoder.csm.\1.expand."),
    (r"^sem_seg_head\.pixel_decoder\.dcn\.(\d+)\.dcn_offset\.", r"pixel_decoder.deformable.\1.offset."),
    (r"^sem_seg_head\.pixel_decoder\.dcn\.(\d+)\.dcn\.", r"pixel_decoder.deformable.\1.deform."),
    (r"^sem_seg_head\.pixel_decoder\.dcn\.(\d+)\.dcn_bn\.", r"pixel_decoder.deformable.\1.deform_norm."),
    (r"^sem_seg_head\.pixel_decoder\.dcn\.(\d+)\.up_sample\.", r"pixel_decoder.deformable.\1.upsample."),
    (r"^sem_seg_head\.pixel_decoder\.dcn\.(\d+)\.up_bn\.", r"pixel_decoder.deformable.\1.upsample_norm."),
    (r"^sem_seg_head\.pixel_decoder\.out\.conv\.", r"pixel_decoder.mask_features.conv."),
    (r"^sem_seg_head\.pixel_decoder\.out\.bn\.", r"pixel_decoder.mask_features.norm."),
    # transformer decoder: PEM cross-attention (current and earlier names)
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.(?:feature_proj|to_query)\.bn\.",
        r"transformer_decoder.cross_attention_layers.\1.feature_proj.norm.",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.(?:feature_proj|to_query)\.to_query_3x3\.",
        r"transformer_decoder.cross_attention_layers.\1.feature_proj.local.",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.(?:feature_proj|to_query)\.out\.",
        r"transformer_decoder.cross_attention_layers.\1.feature_proj.linear.",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.(?:query_proj|to_key)\.",
        r"transformer_decoder.cross_attention_layers.\1.query_proj.",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.(proj|final|alpha)",
        r"transformer_decoder.cross_attention_layers.\1.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.",
        r"transformer_decoder.self_attention_layers.\1.attn.",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.",
        r"transformer_decoder.self_attention_layers.\1.norm.",
    ),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.", r"transformer_decoder.ffn_layers.\1."),
    (
        r"^sem_seg_head\.predictor\.(decoder_norm|query_feat|query_embed|level_embed|input_proj|class_embed|mask_embed)\.",
        r"transformer_decoder.\1.",
    ),
]


def convert_detectron2_state_dict(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str = "the detectron2 checkpoint"
) -> RenamedWeights:
    """A detectron2 PEM state dict under ros_seg names; `expected` is the target model's state dict.

    Keys that no rule knows are an error listing them; missing and mis-shaped
    tensors are reported by the strict load that follows.
    """
    return rename_weights(weights, PEM_RULES, expected, source)

