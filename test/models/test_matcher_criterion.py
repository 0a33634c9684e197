"""Hungarian matcher, point sampling and the set criterion on small hand-made cases."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ros_seg.models.criteria.criterion import SetCriterion
from ros_seg.models.criteria.matcher import HungarianMatcher
from ros_seg.models.criteria.point_sampling import point_sample, uncertain_points

NUM_CLASSES = 5


def block_targets(num_targets: int, low: int = 8, stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint random masks on a (low x low) grid: returns low-res (T, low, low) and full-res (T, H, W) bool."""
    owner = torch.randint(0, num_targets, (low, low))
    owner.view(-1)[:num_targets] = torch.arange(num_targets)  # every target has a pixel
    low_masks = owner[None] == torch.arange(num_targets)[:, None, None]
    full = low_masks.repeat_interleave(stride, 1).repeat_interleave(stride, 2)
    return low_masks, full


def perfect_outputs(low_masks: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, num_queries: int,
                    strength: float = 10.0) -> dict:
    """Predictions where query order[t] is target t (mask logits +-strength, class one-hot), the rest no-object."""
    t, h, w = low_masks.shape
    logits = torch.zeros(1, num_queries, NUM_CLASSES + 1)
    logits[0, :, NUM_CLASSES] = strength
    masks = torch.full((1, num_queries, h, w), -strength)
    for target, query in enumerate(order.tolist()):
        logits[0, query] = 0.0
        logits[0, query, labels[target]] = strength
        masks[0, query] = torch.where(low_masks[target], strength, -strength)
    return {"pred_logits": logits, "pred_masks": masks}


def test_point_sample_reads_pixel_centres_and_interpolates() -> None:
    maps = torch.arange(12.0).view(1, 1, 3, 4)
    centres = torch.tensor([[[(1 + 0.5) / 4, (2 + 0.5) / 3], [(0 + 0.5) / 4, (0 + 0.5) / 3]]])  # (1, 2, 2) (x, y)
    assert torch.allclose(point_sample(maps, centres), torch.tensor([[[9.0, 0.0]]]), atol=1e-5)
    corner = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])  # image corners read the border pixels
    assert torch.allclose(point_sample(maps, corner), torch.tensor([[[0.0, 11.0]]]), atol=1e-5)
    between = torch.tensor([[[1.0 / 4, 0.5 / 3]]])  # halfway between pixels (0, 0) and (0, 1)
    assert torch.allclose(point_sample(maps, between), torch.tensor([[[0.5]]]), atol=1e-5)


def test_uncertain_points_prefer_the_mask_boundary() -> None:
    # Logits grow linearly with |x - 0.5|: the most uncertain quarter of the candidates lies near x = 0.5.
    x = (torch.arange(64.0) + 0.5) / 64
    logits = ((x - 0.5) * 40).expand(1, 1, 64, 64)
    points = uncertain_points(logits, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert points.shape == (1, 400, 2)
    uncertain, uniform = points[0, :300, 0], points[0, 300:, 0]
    assert (uncertain - 0.5).abs().max() < 0.2
    assert (uniform - 0.5).abs().max() > 0.3


def test_matcher_finds_the_permutation_of_perfect_predictions() -> None:
    low, full = block_targets(4)
    labels = torch.tensor([3, 0, 4, 3])
    order = torch.tensor([5, 1, 7, 2])  # target t is predicted by query order[t]
    outputs = perfect_outputs(low, labels, order, num_queries=8)
    matcher = HungarianMatcher(num_points=400)
    (queries, targets), = matcher(outputs, [{"labels": labels, "masks": full}])
    assert dict(zip(targets.tolist(), queries.tolist())) == dict(enumerate(order.tolist()))


def test_matcher_cost_terms_match_hand_computation() -> None:
    # Constant masks make every sampled point equal, so the costs have closed forms.
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])  # (Q=2, K+1=3)
    masks = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 2.0)])  # (Q, h, w) logits 0 and 2
    labels = torch.tensor([1])
    target = torch.ones(1, 16, 16)
    points = 50
    matcher = HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=points)
    cost = matcher.cost_matrix(logits, masks, labels, target)
    expected = []
    for q, x in enumerate((0.0, 2.0)):
        prob_class = logits[q].softmax(-1)[1].item()
        bce = math.log(1 + math.exp(-x))  # target 1 at every point
        p = 1 / (1 + math.exp(-x))
        dice = 1 - (2 * p * points + 1) / (p * points + points + 1)
        expected.append(2 * -prob_class + 5 * bce + 5 * dice)
    assert torch.allclose(cost[:, 0], torch.tensor(expected), atol=1e-5)


def test_matcher_uses_the_same_points_for_predictions_and_targets() -> None:
    masks = torch.randn(3, 6, 6)
    target = torch.rand(2, 24, 24) > 0.5
    logits = torch.randn(3, NUM_CLASSES + 1)
    labels = torch.tensor([0, 2])
    matcher = HungarianMatcher(num_points=64)
    torch.manual_seed(7)
    cost = matcher.cost_matrix(logits, masks, labels, target)
    torch.manual_seed(7)
    pts = torch.rand(1, 64, 2)
    pred = point_sample(masks[:, None], pts.expand(3, -1, -1))[:, 0]  # (Q, P)
    tgt = point_sample(target[:, None].float(), pts.expand(2, -1, -1))[:, 0]  # (T, P)
    bce = torch.stack([F.binary_cross_entropy_with_logits(pred, t.expand_as(pred), reduction="none").mean(1)
                       for t in tgt], dim=1)
    p = pred.sigmoid()
    dice = 1 - (2 * p @ tgt.T + 1) / (p.sum(1)[:, None] + tgt.sum(1)[None] + 1)
    expected = 2 * -logits.softmax(-1)[:, labels] + 5 * bce + 5 * dice
    assert torch.allclose(cost, expected, atol=1e-5)


def test_matcher_handles_images_without_targets() -> None:
    outputs = {"pred_logits": torch.randn(2, 4, NUM_CLASSES + 1), "pred_masks": torch.randn(2, 4, 4, 4)}
    low, full = block_targets(2, low=4)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)},
               {"labels": torch.tensor([1, 2]), "masks": full}]
    matches = HungarianMatcher(num_points=32)(outputs, targets)
    assert matches[0][0].numel() == 0 and matches[1][0].numel() == 2


def make_criterion(no_object_weight: float = 0.1, points: int = 256) -> SetCriterion:
    return SetCriterion(NUM_CLASSES, HungarianMatcher(num_points=points), no_object_weight=no_object_weight,
                        num_points=points)


def test_criterion_decreases_as_predictions_approach_targets() -> None:
    low, full = block_targets(3)
    labels = torch.tensor([1, 2, 0])
    order = torch.tensor([0, 3, 5])
    targets = [{"labels": labels, "masks": full}]
    criterion = make_criterion()
    totals = []
    for strength in (0.25, 1.0, 4.0, 12.0):
        losses = criterion(perfect_outputs(low, labels, order, 6, strength), targets)
        assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
        totals.append(sum(v.item() for v in losses.values()))
    assert all(a > b for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < 0.5 * totals[0]


def test_no_object_weight_enters_the_class_loss() -> None:
    low, full = block_targets(1)
    labels = torch.tensor([2])
    outputs = perfect_outputs(low, labels, torch.tensor([0]), num_queries=4, strength=10.0)
    outputs["pred_logits"] = torch.randn(1, 4, NUM_CLASSES + 1)  # random classes, query 0 still matched by masks
    targets = [{"labels": labels, "masks": full}]
    for weight in (0.1, 1.0):
        losses = make_criterion(no_object_weight=weight)(outputs, targets)
        ce = F.cross_entropy(outputs["pred_logits"][0], torch.tensor([2, NUM_CLASSES, NUM_CLASSES, NUM_CLASSES]),
                             reduction="none")
        w = torch.tensor([1.0, weight, weight, weight])
        assert losses["loss_ce"].item() == pytest.approx(2.0 * (w * ce).sum().item() / w.sum().item(), rel=1e-5)


def test_deep_supervision_sums_every_aux_output() -> None:
    low, full = block_targets(2)
    labels = torch.tensor([1, 4])
    targets = [{"labels": labels, "masks": full}]
    final = perfect_outputs(low, labels, torch.tensor([0, 1]), 5, 3.0)
    aux = [perfect_outputs(low, labels, torch.tensor([2, 3]), 5, s) for s in (0.5, 1.5)]
    criterion = make_criterion()
    torch.manual_seed(3)
    losses = criterion({**final, "aux_outputs": aux}, targets)
    assert set(losses) == {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    torch.manual_seed(3)  # the same random draws, one output at a time
    separate = [criterion(o, targets) for o in (final, *aux)]
    for suffix, expected in zip(("", "_0", "_1"), separate):
        for name in ("loss_ce", "loss_mask", "loss_dice"):
            assert losses[name + suffix].item() == pytest.approx(expected[name].item(), rel=1e-6)


def test_criterion_normalizes_by_mask_count_and_backpropagates_without_targets() -> None:
    pred_masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    pred_logits = torch.randn(2, 4, NUM_CLASSES + 1, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}
    losses = make_criterion()({"pred_logits": pred_logits, "pred_masks": pred_masks}, [empty, empty])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    sum(losses.values()).backward()
    assert pred_masks.grad is not None and pred_logits.grad is not None
