"""Import the published Panoptic SegFormer checkpoints (mmcv .pth, MMDetection names) into
panoptic_segformer_r50* models.

The official `PanSeg` holds `backbone.*` (MMDetection's ResNet, torchvision
names), `neck.*` (the ChannelMapper: `convs.i` and `extra_convs.0`, each a conv
and a GroupNorm `gn`) and `bbox_head.*`: the Deformable-DETR transformer
(`transformer.encoder`, `transformer.decoder`, `level_embeds`,
`reference_points`), the location decoder's heads (`cls_branches`,
`reg_branches`, `query_embedding`), the stuff queries (`stuff_query`) and the two
mask decoders with their heads. The published files predate a rename that the
authors' loader undoes: `mask_head` / `mask_head2` / `cls_branches2` are today's
`things_mask_head` / `stuff_mask_head` / `cls_thing_branches`; both spellings are
read. Every tensor of the file has a place in the model (the mask decoders' box
heads `reg_branches2` and the per-block class heads serve training only but are
part of the model, as in the official one), so nothing is dropped.
"""
from __future__ import annotations

import numpy as np
import torch

from ros_seg.models.key_renaming import RenamedWeights, RenameRules, rename_weights

_BLOCK_PARTS = [
    (r"conv([123])\.", r"conv\1."),
    (r"bn([123])\.", r"conv\1.norm."),
    (r"downsample\.0\.", "shortcut."),
    (r"downsample\.1\.", "shortcut.norm."),
]
_BACKBONE: RenameRules = [
    (r"^backbone\.conv1\.", "backbone.stem.conv1."),
    (r"^backbone\.bn1\.", "backbone.stem.conv1.norm."),
] + [
    (rf"^backbone\.layer{stage}\.(\d+)\.{part}", rf"backbone.res{stage + 1}.\1.{target}")
    for stage in range(1, 5)
    for part, target in [(p, t.replace(r"\1", r"\2")) for p, t in _BLOCK_PARTS]
]

_HEAD = r"^bbox_head\."
_ENC = _HEAD + r"transformer\.encoder\.layers\.(\d+)\."
_DEC = _HEAD + r"transformer\.decoder\.layers\.(\d+)\."
_THINGS = _HEAD + r"(?:mask_head|things_mask_head)\."
_STUFF = _HEAD + r"(?:mask_head2|stuff_mask_head)\."


def _mask_decoder_rules(prefix: str, target: str) -> RenameRules:
    """Rules of one official MaskHead (blocks + `attnen`) under `prefix` -> our MaskDecoder `target`."""
    block = prefix + r"blocks\.(\d+)\."
    out = target + r"blocks.\1."
    mask = [(r"linear_l1\.0\.", "to_mask.level_mix.0."), (r"linear_l2\.0\.", "to_mask.level_mix.1."),
            (r"linear_l3\.0\.", "to_mask.level_mix.2."), (r"linear\.0\.", "to_mask.fuse.")]
    return [
        *[(block + r"attn\." + p, out + "cross_attn." + t) for p, t in mask],
        (block + r"attn\.(q|k|v)\.", out + r"cross_attn.\2_proj."),
        (block + r"attn\.proj\.", out + "cross_attn.out_proj."),
        (block + r"self_attention\.", out + "self_attn."),
        (block + r"head_norm1\.", out + "norm_cross."),
        (block + r"head_norm2\.", out + "norm_ffn."),
        (block + r"norm3\.", out + "norm_self."),
        (block + r"mlp\.fc1\.", out + "ffn.0."),
        (block + r"mlp\.fc2\.", out + "ffn.2."),
        *[(prefix + r"attnen\." + p, target + "tail." + t) for p, t in mask],
        (prefix + r"attnen\.(q|k)\.", target + r"tail.\1_proj."),
    ]


PANOPTIC_SEGFORMER_RULES: RenameRules = [
    *_BACKBONE,
    (r"^neck\.convs\.(\d+)\.conv\.", r"channel_mapper.projections.\1.0."),
    (r"^neck\.convs\.(\d+)\.gn\.", r"channel_mapper.projections.\1.1."),
    (r"^neck\.extra_convs\.0\.conv\.", "channel_mapper.extra.0."),
    (r"^neck\.extra_convs\.0\.gn\.", "channel_mapper.extra.1."),
    (_HEAD + r"transformer\.level_embeds$", "encoder.level_embed"),
    (_ENC + r"attentions\.0\.", r"encoder.layers.\1.self_attn."),
    (_ENC + r"ffns\.0\.layers\.0\.0\.", r"encoder.layers.\1.linear1."),
    (_ENC + r"ffns\.0\.layers\.1\.", r"encoder.layers.\1.linear2."),
    (_ENC + r"norms\.0\.", r"encoder.layers.\1.norm1."),
    (_ENC + r"norms\.1\.", r"encoder.layers.\1.norm2."),
    (_DEC + r"attentions\.0\.attn\.", r"location_decoder.layers.\1.self_attn."),
    (_DEC + r"attentions\.1\.", r"location_decoder.layers.\1.cross_attn."),
    (_DEC + r"ffns\.0\.layers\.0\.0\.", r"location_decoder.layers.\1.linear1."),
    (_DEC + r"ffns\.0\.layers\.1\.", r"location_decoder.layers.\1.linear2."),
    (_DEC + r"norms\.0\.", r"location_decoder.layers.\1.norm1."),
    (_DEC + r"norms\.1\.", r"location_decoder.layers.\1.norm2."),
    (_DEC + r"norms\.2\.", r"location_decoder.layers.\1.norm3."),
    (_HEAD + r"transformer\.reference_points\.", "location_decoder.reference_points."),
    (_HEAD + r"query_embedding\.", "location_decoder.query_embedding."),
    (_HEAD + r"cls_branches\.(\d+)\.", r"location_decoder.class_heads.\1."),
    (_HEAD + r"reg_branches\.(\d+)\.", r"location_decoder.box_heads.\1.layers."),
    (_HEAD + r"(?:cls_branches2|cls_thing_branches)\.(\d+)\.", r"thing_mask_decoder.class_heads.\1."),
    (_HEAD + r"reg_branches2\.(\d+)\.", r"thing_mask_decoder.box_heads.\1.layers."),
    (_HEAD + r"cls_stuff_branches\.(\d+)\.", r"stuff_mask_decoder.class_heads.\1."),
    (_HEAD + r"stuff_query\.weight$", "stuff_queries.weight"),
    *_mask_decoder_rules(_THINGS, "thing_mask_decoder."),
    *_mask_decoder_rules(_STUFF, "stuff_mask_decoder."),
]


def convert_panoptic_segformer_state_dict(
    weights: dict[str, torch.Tensor | np.ndarray], expected: dict[str, torch.Tensor], source: str
) -> RenamedWeights:
    """Official Panoptic SegFormer weights (published or current names) under ros_seg names; `expected` is
    the target model's state dict."""
    return rename_weights(weights, PANOPTIC_SEGFORMER_RULES, expected, source)
