"""Training loss of Panoptic SegFormer (paper Sec. 3.5 with the authors' code's weights).

Targets split into things and stuff. Thing queries are matched one-to-one to
thing targets (:class:`ThingMatcher`) separately for every prediction that has
thing queries; stuff query j stands for stuff class j and its target is that
class's mask when the class is in the image. Terms, each divided by the number
of thing (or present stuff) targets in the batch (averaged over processes):

- loss_cls_things: class_weight * sigmoid focal loss (alpha 0.25, gamma 2) of all
  thing queries over the thing classes, the matched class as the target;
- loss_cls_stuff:  class_weight * focal loss of each stuff query's own logit, the
  target being whether its class is present;
- loss_dice_things / loss_dice_stuff: dice_weight * the authors' dice loss
  (1 - 2|m t| / (|m|^2 + |t|^2), no sigmoid: the masks are non-negative scores) of
  matched thing masks / present stuff masks, predictions upsampled x2 (to 1/4)
  and targets area-averaged to that size, as the authors' code;
- loss_l1 / loss_giou: l1_weight * L1 and giou_weight * (1 - GIoU) of matched
  thing boxes (targets: the tight boxes of their masks), where boxes are predicted.

The final prediction gives the unsuffixed terms, aux output i the terms with
suffix _i. (The authors weight the thing mask blocks' class and box terms by 0;
here they count like the others.) Weights: focal 2, L1 5, GIoU 2, dice 2 (authors' configuration; the
paper's arXiv v1 text gives lambda_cls 1, lambda_seg 1, lambda_loc 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ros_seg.models.criteria.box_ops import cxcywh_to_xyxy, generalized_box_iou, mask_boxes
from ros_seg.models.criteria.panoptic_segformer_matcher import (
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    ThingMatcher,
    resize_targets,
    squared_dice,
)
from ros_seg.models.criteria.process_group_mean import all_reduce_mean


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over elements of the sigmoid focal loss (alpha 0.25, gamma 2): same-shape logits and 0/1 targets."""
    logits = logits.float()
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).sum()


class PanopticSegFormerCriterion(nn.Module):
    """Matching + focal, dice, L1 and GIoU losses with deep supervision.

    Args:
        is_thing: per class, thing or stuff (the model's label set).
        matcher: assigns thing queries to thing targets.
        class_weight: weight of the focal terms.
        dice_weight: weight of the dice terms.
        l1_weight: weight of the L1 box term.
        giou_weight: weight of the GIoU box term.
    """

    def __init__(
        self,
        is_thing: tuple[bool, ...],
        matcher: ThingMatcher,
        class_weight: float = 2.0,
        dice_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.class_weight = class_weight
        self.dice_weight = dice_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        thing_classes = [k for k, thing in enumerate(is_thing) if thing]
        stuff_classes = [k for k, thing in enumerate(is_thing) if not thing]
        slot = torch.full((len(is_thing),), -1, dtype=torch.long)
        slot[thing_classes] = torch.arange(len(thing_classes))
        slot[stuff_classes] = torch.arange(len(stuff_classes))
        self.register_buffer("slot", slot, persistent=False)  # (K,) class -> thing or stuff index
        self.register_buffer("is_thing", torch.tensor(is_thing), persistent=False)
        self.register_buffer("thing_classes", torch.tensor(thing_classes), persistent=False)
        self.register_buffer("stuff_classes", torch.tensor(stuff_classes), persistent=False)

    def split_targets(self, targets: list[dict]) -> tuple[list[dict], list[dict]]:
        """Per image: things {"labels": thing slots, "boxes", "masks"}, stuff {"present": (S,), "masks": (S, H, W)}."""
        things, stuff = [], []
        num_stuff = self.stuff_classes.numel()
        for target in targets:
            labels, masks = target["labels"], target["masks"].bool()
            thing = self.is_thing[labels]
            things.append(
                {"labels": self.slot[labels[thing]], "boxes": mask_boxes(masks[thing]), "masks": masks[thing]}
            )
            owner = F.one_hot(self.slot[labels[~thing]], num_stuff).T.float()  # (S, T_stuff)
            stuff_masks = (owner @ masks[~thing].flatten(1).float()).view(num_stuff, *masks.shape[1:]) > 0
            present = owner.sum(1) > 0  # (S,)
            stuff.append({"present": present, "masks": stuff_masks})
        return things, stuff

    def dice(self, masks: torch.Tensor, targets: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Dice of (M, h, w) masks upsampled x2 against (M, H, W) binary targets, summed / count."""
        if masks.shape[0] == 0:
            return masks.sum() * 0.0  # keeps the mask parameters in the graph
        masks = F.interpolate(masks[:, None].float(), scale_factor=2.0, mode="bilinear", align_corners=False)[:, 0]
        coverage = resize_targets(targets, masks.shape[-2:])
        return squared_dice(masks.flatten(1), coverage.flatten(1)).sum() / count

    def thing_losses(self, output: dict, things: list[dict], num_queries: int, count: torch.Tensor) -> dict:
        """Losses of the first `num_queries` (thing) queries of `output`."""
        logits = output["pred_logits"][:, :num_queries][..., self.thing_classes]  # (B, Qt, K_things)
        boxes = output.get("pred_boxes")
        masks = output["pred_masks"][:, :num_queries] if "pred_masks" in output else None
        matches = self.matcher(logits, boxes, masks, things)
        target_classes = torch.zeros_like(logits, dtype=torch.float32)
        for b, (query_idx, target_idx) in enumerate(matches):
            target_classes[b, query_idx, things[b]["labels"][target_idx]] = 1.0
        losses = {"loss_cls_things": self.class_weight * sigmoid_focal_loss(logits, target_classes) / count}
        if masks is not None:
            pred = torch.cat([masks[b, q] for b, (q, _) in enumerate(matches)])  # (M, h, w)
            target = torch.cat([t["masks"][i] for t, (_, i) in zip(things, matches)])  # (M, H, W)
            losses["loss_dice_things"] = self.dice_weight * self.dice(pred, target, count)
        if boxes is not None:
            pred = torch.cat([boxes[b, q] for b, (q, _) in enumerate(matches)]).float()  # (M, 4)
            target = torch.cat([t["boxes"][i] for t, (_, i) in zip(things, matches)])  # (M, 4)
            giou = torch.diagonal(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)))
            losses["loss_l1"] = self.l1_weight * (pred - target).abs().sum() / count
            losses["loss_giou"] = self.giou_weight * (1 - giou).sum() / count
        return losses

    def stuff_losses(self, output: dict, stuff: list[dict], count: torch.Tensor) -> dict:
        """Losses of the last S (stuff) queries of `output`."""
        num_stuff = self.stuff_classes.numel()
        logits = output["pred_logits"][:, -num_stuff:]  # (B, S, K)
        own = logits.gather(2, self.stuff_classes.view(1, -1, 1).expand(logits.shape[0], -1, 1))[..., 0]  # (B, S)
        present = torch.stack([s["present"] for s in stuff])  # (B, S)
        masks = output["pred_masks"][:, -num_stuff:]  # (B, S, h, w)
        target = torch.cat([s["masks"][s["present"]] for s in stuff])  # (M, H, W)
        return {
            "loss_cls_stuff": self.class_weight * sigmoid_focal_loss(own, present.float()) / count,
            "loss_dice_stuff": self.dice_weight * self.dice(masks[present], target, count),
        }

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: a PanopticSegFormer's predictions; targets per image {"labels": (T,), "masks": (T, H, W)}
        covering the padded input. Returns the weighted terms (their sum is the training loss)."""
        things, stuff = self.split_targets(targets)
        device = outputs["pred_logits"].device
        counts = torch.tensor(
            [float(sum(len(t["labels"]) for t in things)), float(sum(int(s["present"].sum()) for s in stuff))],
            device=device,
        )
        thing_count, stuff_count = all_reduce_mean(counts).clamp(min=1.0).unbind()
        num_thing_queries = outputs["pred_boxes"].shape[1]
        losses = {
            **self.thing_losses(outputs, things, num_thing_queries, thing_count),
            **self.stuff_losses(outputs, stuff, stuff_count),
        }
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            if aux["queries"] == "things":
                terms = self.thing_losses(aux, things, aux["pred_logits"].shape[1], thing_count)
            else:
                terms = self.stuff_losses(aux, stuff, stuff_count)
            losses.update({f"{name}_{i}": value for name, value in terms.items()})
        return losses
