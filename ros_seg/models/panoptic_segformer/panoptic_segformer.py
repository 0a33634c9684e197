"""Panoptic SegFormer meta-architecture (Li et al., "Panoptic SegFormer", arXiv 2109.03814 / CVPR 2022).

ResNet -> channel mapper (1/8, 1/16, 1/32 + an extra 1/64 level, width 256)
-> Deformable-DETR encoder (6 post-norm layers, 8 heads, 4 levels, 4 points,
FFN 1024) -> location decoder (thing queries and their boxes) -> mask decoder:
thing queries (4 layers of cross-attention) and stuff queries, one per stuff
class (6 layers with self-attention, the authors' configuration), whose
attention maps over the 1/8..1/32 tokens are the masks.

Output contract (as MaskFormer's where it can be): images (B, 3, H, W) RGB
0..255 in, normalized and zero-padded to a multiple of 32 inside; out

- "pred_logits" (B, Q_things + Q_stuff, K): focal-style (sigmoid) logits over
  the K classes, no "no object" column. A thing query has logits in the thing
  classes' columns, a stuff query only in its own class's column; every other
  entry is ABSENT_LOGIT, so a query's score and class are the max and argmax of
  the sigmoid over K.
- "pred_masks" (B, Q, H'/8, W'/8): mask logits of the last mask-decoder layers.
- "pred_boxes" (B, Q_things, 4): the location decoder's last boxes, sigmoid
  (cx, cy, w, h) relative to the padded image.
- "aux_outputs" (training, or when all_predictions): earlier predictions, each
  a dict with "queries" ("things" or "stuff") and "pred_logits" plus
  "pred_boxes" (location-decoder layers but the last) or "pred_masks" (mask-
  decoder layers but the last). Post-processing: ros_seg.models.postprocess.maskwise_merge.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.panoptic_segformer.channel_mapper import ChannelMapper
from ros_seg.models.panoptic_segformer.location_decoder import LocationDecoder
from ros_seg.models.panoptic_segformer.mask_decoder import MaskDecoder
from ros_seg.models.panoptic_segformer.token_encoder import TokenEncoder

ABSENT_LOGIT = -1e4
"""Logit of the classes a query cannot predict (sigmoid 0; finite in fp16)."""

MASK_LEVELS = 3
"""The mask decoder attends to the first three levels (1/8, 1/16, 1/32), not the extra 1/64 one."""


class PanopticSegFormer(nn.Module):
    """Panoptic SegFormer with thing queries and one query per stuff class.

    Args:
        backbone: image -> dict with res3..res5.
        in_channels: channels of res3, res4, res5.
        is_thing: per class, whether it is a thing (thing queries) or stuff (one query each).
        pixel_mean: RGB mean subtracted from the 0..255 input.
        pixel_std: RGB std dividing the input.
        num_thing_queries: thing queries of the location decoder.
        dim: model width.
        num_heads: attention heads everywhere.
        num_points: deformable sampling points per head and level.
        encoder_layers: deformable encoder layers.
        location_layers: location decoder layers.
        thing_mask_layers: mask decoder layers of the thing queries.
        stuff_mask_layers: mask decoder layers (with self-attention) of the stuff queries.
        ffn_dim: FFN hidden width of the encoder and decoders.
        size_divisibility: input padded to a multiple of this.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: tuple[int, int, int],
        is_thing: tuple[bool, ...],
        pixel_mean: list[float],
        pixel_std: list[float],
        num_thing_queries: int = 100,
        dim: int = 256,
        num_heads: int = 8,
        num_points: int = 4,
        encoder_layers: int = 6,
        location_layers: int = 6,
        thing_mask_layers: int = 4,
        stuff_mask_layers: int = 6,
        ffn_dim: int = 1024,
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        thing_classes = [k for k, thing in enumerate(is_thing) if thing]
        stuff_classes = [k for k, thing in enumerate(is_thing) if not thing]
        if not thing_classes or not stuff_classes:
            raise ValueError("PanopticSegFormer needs at least one thing and one stuff class")
        self.backbone = backbone
        self.channel_mapper = ChannelMapper(in_channels, dim)
        levels = len(in_channels) + 1
        self.encoder = TokenEncoder(dim, levels, encoder_layers, num_heads, num_points, ffn_dim)
        self.location_decoder = LocationDecoder(
            num_thing_queries, len(thing_classes), dim, levels, location_layers, num_heads, num_points, ffn_dim
        )
        self.thing_mask_decoder = MaskDecoder(
            len(thing_classes), dim, thing_mask_layers, num_heads, ffn_dim, MASK_LEVELS
        )
        self.stuff_queries = nn.Embedding(len(stuff_classes), 2 * dim)  # position | content
        self.stuff_mask_decoder = MaskDecoder(
            1, dim, stuff_mask_layers, num_heads, ffn_dim, MASK_LEVELS, self_attention=True
        )
        num_classes = len(is_thing)
        slot = torch.zeros(num_classes, dtype=torch.long)
        slot[thing_classes] = torch.arange(len(thing_classes))
        self.register_buffer("thing_slot", slot, persistent=False)  # (K,) column -> thing logit index
        self.register_buffer("thing_column", torch.tensor(is_thing), persistent=False)  # (K,)
        own = torch.zeros(len(stuff_classes), num_classes, dtype=torch.bool)
        own[torch.arange(len(stuff_classes)), stuff_classes] = True
        self.register_buffer("stuff_column", own, persistent=False)  # (S, K) stuff query -> its class
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility
        self.dim = dim

    # The same normalization and padding as the MaskFormer family (one function serves both).
    normalize_and_pad = MaskFormer.normalize_and_pad

    def thing_logits(self, logits: Tensor) -> Tensor:
        """(B, Q_things, K_things) -> (B, Q_things, K), ABSENT_LOGIT in the stuff columns."""
        return torch.where(self.thing_column, logits[..., self.thing_slot], ABSENT_LOGIT)

    def stuff_logits(self, logits: Tensor) -> Tensor:
        """(B, Q_stuff, 1) -> (B, Q_stuff, K), each query's logit in its own class's column."""
        return torch.where(self.stuff_column, logits, ABSENT_LOGIT)

    def forward(self, images: Tensor, all_predictions: bool | None = None) -> dict:
        """images (B, 3, H, W) RGB 0..255 -> predictions (see the module docstring)."""
        if all_predictions is None:
            all_predictions = self.training
        x = self.normalize_and_pad(images)
        maps = self.channel_mapper(self.backbone(x))  # 4 x (B, C, h_l, w_l), fine first
        memory = self.encoder(maps)  # tokens (B, S, C)
        location = self.location_decoder(memory)
        mask_memory = memory.prefix(MASK_LEVELS)
        things = self.thing_mask_decoder(
            location.queries, location.query_pos, mask_memory.tokens, mask_memory.spatial_shapes
        )
        batch = images.shape[0]
        stuff_pos, stuff_query = self.stuff_queries.weight.split(self.dim, dim=-1)  # (S, C) each
        stuff = self.stuff_mask_decoder(
            stuff_query[None].expand(batch, -1, -1),
            stuff_pos[None].expand(batch, -1, -1),
            mask_memory.tokens,
            mask_memory.spatial_shapes,
        )
        (thing_logits, thing_masks), (stuff_logits, stuff_masks) = things[-1], stuff[-1]
        outputs = {
            "pred_logits": torch.cat((self.thing_logits(thing_logits), self.stuff_logits(stuff_logits)), dim=1),
            "pred_masks": torch.cat((thing_masks, stuff_masks), dim=1),
            "pred_boxes": location.boxes[-1],
        }
        if all_predictions:
            aux = [
                {"queries": "things", "pred_logits": self.thing_logits(logits), "pred_boxes": boxes}
                for logits, boxes in zip(location.logits, location.boxes[:-1])
            ]
            aux += [
                {"queries": "things", "pred_logits": self.thing_logits(logits), "pred_masks": masks}
                for logits, masks in things[:-1]
            ]
            aux += [
                {"queries": "stuff", "pred_logits": self.stuff_logits(logits), "pred_masks": masks}
                for logits, masks in stuff[:-1]
            ]
            outputs["aux_outputs"] = aux
        return outputs
