"""Panoptic SegFormer meta-architecture (Li et al., "Panoptic SegFormer", arXiv 2109.03814 / CVPR 2022),
as the authors' code (zhiqi-li/Panoptic-SegFormer, PanformerHead) builds and runs it.

ResNet -> channel mapper (1/8, 1/16, 1/32 + an extra 1/64 level, width 256)
-> Deformable-DETR encoder (6 post-norm layers, 8 heads, 4 levels, 4 points,
FFN 1024) -> location decoder (thing queries, their boxes and class logits) ->
mask decoders over the 1/8..1/32 tokens: the thing decoder (4 blocks, no query
positions) on thing queries, the stuff decoder (6 blocks with self-attention)
on one learned query per stuff class (content | position, the authors' order);
masks are non-negative attention-map scores (threshold 0.5, no sigmoid).

Training runs the thing decoder on every location query. Inference follows the
authors' test path: the sigmoid class scores of the location decoder's last
layer (queries x thing classes) give the `max_detections` best (query, class)
pairs; the thing decoder runs on those queries only.

Output contract: images (B, 3, H, W) RGB 0..255 in, normalized and zero-padded
to a multiple of 32 inside; out

- "pred_logits" (B, Q_t + Q_stuff, K): focal-style (sigmoid) logits over the K
  classes, no "no object" column; every class a query cannot predict holds
  ABSENT_LOGIT, so a query's score and class are the max and argmax of the
  sigmoid over K. Training: Q_t = all thing queries, the location decoder's last
  class logits in the thing columns. Inference: Q_t = the detections, each with
  its one (query, class) logit in its class's column. Stuff query j: the last
  stuff class head's logit in its class's column.
- "pred_masks" (B, Q_t + Q_stuff, H'/8, W'/8): the final (tail) masks, >= 0.
- "pred_boxes" (B, Q_t, 4): the location decoder's last boxes of those thing
  queries, sigmoid (cx, cy, w, h) relative to the padded image.
- "thing_query_index" (inference): (B, Q_t) location query of each detection.
- "aux_outputs" (training, or when all_predictions): earlier predictions, each
  a dict with "queries" ("things" or "stuff") and "pred_logits" plus
  "pred_boxes" (location-decoder layers but the last; thing mask blocks) and/or
  "pred_masks" (mask-decoder blocks). With all_predictions at inference also
  "encoder_memory" (B, S, C) and "location_logits" / "location_boxes" (one per
  location layer, all queries). Post-processing: ros_seg.models.postprocess.maskwise_merge.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.panoptic_segformer.channel_mapper import ChannelMapper
from ros_seg.models.panoptic_segformer.location_decoder import LocationDecoder, LocationOutput, refine_box
from ros_seg.models.panoptic_segformer.mask_decoder import MaskDecoder, MaskDecoderOutput
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
        max_detections: (query, thing class) pairs kept at inference (the authors' max_per_img).
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
        max_detections: int = 100,
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
            len(thing_classes), dim, thing_mask_layers, num_heads, ffn_dim, MASK_LEVELS, box_heads=True
        )
        self.stuff_queries = nn.Embedding(len(stuff_classes), 2 * dim)  # content | position
        self.stuff_mask_decoder = MaskDecoder(
            1, dim, stuff_mask_layers, num_heads, ffn_dim, MASK_LEVELS, self_attention=True
        )
        num_classes = len(is_thing)
        slot = torch.zeros(num_classes, dtype=torch.long)
        slot[thing_classes] = torch.arange(len(thing_classes))
        self.register_buffer("thing_slot", slot, persistent=False)  # (K,) column -> thing logit index
        self.register_buffer("thing_column", torch.tensor(is_thing), persistent=False)  # (K,)
        self.register_buffer("thing_classes", torch.tensor(thing_classes), persistent=False)  # (K_things,)
        own = torch.zeros(len(stuff_classes), num_classes, dtype=torch.bool)
        own[torch.arange(len(stuff_classes)), stuff_classes] = True
        self.register_buffer("stuff_column", own, persistent=False)  # (S, K) stuff query -> its class
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility
        self.max_detections = max_detections
        self.dim = dim

    # The same normalization and padding as the MaskFormer family (one function serves both).
    normalize_and_pad = MaskFormer.normalize_and_pad

    def thing_logits(self, logits: Tensor) -> Tensor:
        """(B, Q_things, K_things) -> (B, Q_things, K), ABSENT_LOGIT in the stuff columns."""
        return torch.where(self.thing_column, logits[..., self.thing_slot], ABSENT_LOGIT)

    def stuff_logits(self, logits: Tensor) -> Tensor:
        """(B, Q_stuff, 1) -> (B, Q_stuff, K), each query's logit in its own class's column."""
        return torch.where(self.stuff_column, logits, ABSENT_LOGIT)

    def detections(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The authors' test-time ranking: (B, Q, K_things) location logits -> the `max_detections` best
        (query, class) pairs by sigmoid score: query index (B, N), thing slot (B, N), logit (B, N)."""
        num_classes = logits.shape[-1]
        flat = logits.flatten(1)  # (B, Q * K_things)
        _, index = flat.sigmoid().topk(min(self.max_detections, flat.shape[1]), dim=1)
        query = torch.div(index, num_classes, rounding_mode="floor")
        return query, index - query * num_classes, flat.gather(1, index)

    def detection_logits(self, slot: Tensor, logit: Tensor) -> Tensor:
        """Thing slots (B, N) and their logits (B, N) -> (B, N, K), ABSENT_LOGIT but in each one's class column."""
        columns = torch.arange(self.thing_column.shape[0], device=slot.device)
        own = columns == self.thing_classes[slot][..., None]  # (B, N, K)
        return torch.where(own, logit[..., None], ABSENT_LOGIT)

    def forward(self, images: Tensor, all_predictions: bool | None = None) -> dict:
        """images (B, 3, H, W) RGB 0..255 -> predictions (see the module docstring)."""
        if all_predictions is None:
            all_predictions = self.training
        x = self.normalize_and_pad(images)
        maps = self.channel_mapper(self.backbone(x))  # 4 x (B, C, h_l, w_l), fine first
        memory = self.encoder(maps)  # tokens (B, S, C)
        location = self.location_decoder(memory)
        mask_memory = memory.prefix(MASK_LEVELS)
        shapes = [(int(h), int(w)) for h, w in mask_memory.spatial_shapes.tolist()]
        batch = images.shape[0]
        stuff_query, stuff_pos = self.stuff_queries.weight.split(self.dim, dim=-1)  # (S, C) each
        stuff = self.stuff_mask_decoder(
            stuff_query[None].expand(batch, -1, -1), stuff_pos[None].expand(batch, -1, -1), mask_memory.tokens, shapes
        )
        stuff_logits = self.stuff_logits(self.stuff_mask_decoder.class_heads[-1](stuff.queries[-1]))
        if self.training:
            query_index = None
            thing_queries, thing_boxes = location.queries, location.boxes[-1]
            thing_logits = self.thing_logits(location.logits[-1])
            reference = location.last_reference
        else:
            query_index, slot, logit = self.detections(location.logits[-1])
            thing_queries = location.queries.gather(1, query_index[..., None].expand(-1, -1, self.dim))
            thing_boxes = location.boxes[-1].gather(1, query_index[..., None].expand(-1, -1, 4))
            thing_logits = self.detection_logits(slot, logit)
            ref = location.last_reference
            reference = ref.gather(1, query_index[..., None].expand(-1, -1, ref.shape[-1]))
        things = self.thing_mask_decoder(thing_queries, None, mask_memory.tokens, shapes)
        outputs = {
            "pred_logits": torch.cat((thing_logits, stuff_logits), dim=1),
            "pred_masks": torch.cat((things.final_masks, stuff.final_masks), dim=1),
            "pred_boxes": thing_boxes,
        }
        if query_index is not None:
            outputs["thing_query_index"] = query_index
        if all_predictions:
            outputs["aux_outputs"] = self.aux_outputs(location, things, stuff, reference)
            if not self.training:
                outputs["encoder_memory"] = memory.tokens
                outputs["location_logits"] = location.logits
                outputs["location_boxes"] = location.boxes
        return outputs

    def aux_outputs(
        self, location: LocationOutput, things: MaskDecoderOutput, stuff: MaskDecoderOutput, reference: Tensor
    ) -> list[dict]:
        """Deep-supervision predictions: location layers but the last, thing mask blocks (class, box and
        mask per block; boxes refine the last location layer's reference), stuff mask blocks."""
        aux = [
            {"queries": "things", "pred_logits": self.thing_logits(logits), "pred_boxes": boxes}
            for logits, boxes in zip(location.logits[:-1], location.boxes[:-1])
        ]
        decoder = self.thing_mask_decoder
        aux += [
            {
                "queries": "things",
                "pred_logits": self.thing_logits(class_head(query)),
                "pred_boxes": refine_box(box_head(query), reference),
                "pred_masks": masks,
            }
            for query, masks, class_head, box_head in zip(
                things.queries, things.masks, decoder.class_heads, decoder.box_heads
            )
        ]
        aux += [
            {"queries": "stuff", "pred_logits": self.stuff_logits(class_head(query)), "pred_masks": masks}
            for query, masks, class_head in zip(stuff.queries, stuff.masks, self.stuff_mask_decoder.class_heads)
        ]
        return aux
