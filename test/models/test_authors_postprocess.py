"""MaskFormer post-processing equals the authors' (Mask2Former's `semantic_inference` and
`panoptic_inference`, which PEM uses unchanged) on the same logits: the official code's outputs on the
reference fixtures (../shared/fixtures/official), and the overlap rule on a case built to tell it apart."""
from __future__ import annotations

import pytest
import torch

from ros_seg.models.class_metadata import CITYSCAPES
from ros_seg.models.families import model_family
from ros_seg.models.meta_architecture import PostprocessOptions
from ros_seg.models.postprocess.label_maps import panoptic_inference
from ros_seg.models.registry import load_model_config

from official_reference import M2F, PROSCALE, reference

SIZE = (256, 512)  # the fixtures' image: no padding, output at the input size
CASES = ("", "_thr0", "_thr0_overlap0")  # reference keys: the config's thresholds, score 0, both 0


@pytest.mark.parametrize("model, fixture", [("pem_r50", M2F), ("m2f_r50", M2F), ("proscale_r50_333_coco", PROSCALE)])
def test_label_maps_equal_the_official_code_on_its_logits(model: str, fixture: str) -> None:
    ref = reference(fixture)
    family = model_family(load_model_config(model))
    class_logits, mask_logits = ref["pred_logits"][0], ref["pred_masks"][0]
    for suffix in CASES:
        score = ref["object_mask_threshold"] if suffix == "" else 0.0
        overlap = 0.0 if suffix == "_thr0_overlap0" else ref["overlap_threshold"]
        semantic, panoptic = family.postprocess(class_logits, mask_logits, SIZE, SIZE, SIZE,
                                                PostprocessOptions(score, overlap))
        assert torch.equal(semantic.long(), ref["sem_seg_argmax"])
        assert torch.equal(panoptic.panoptic, ref[f"panoptic_seg{suffix}"])
        assert panoptic.classes.tolist() == [s["category_id"] for s in ref[f"segments_info{suffix}"]]


def test_fast_semantic_rule_is_an_explicit_option_that_differs_at_boundaries() -> None:
    ref = reference(M2F)
    family = model_family(load_model_config("m2f_r50"))
    semantic, _ = family.postprocess(ref["pred_logits"][0], ref["pred_masks"][0], SIZE, SIZE, SIZE,
                                     PostprocessOptions(0.8, 0.8, "fast"), panoptic=False)
    agreement = (semantic.long() == ref["sem_seg_argmax"]).float().mean()
    assert 0.95 < agreement < 1.0  # 98.8 % on this image


def test_overlap_counts_every_pixel_a_query_wins() -> None:
    # Query A (car) owns columns 0-3 and wins columns 0-1 and 4-7 (B takes 2-3, nobody else has a mask
    # at 4-7): it wins 6 columns for a mask of 4 (ratio 1.5), though only 2 of them are inside its
    # mask (0.5). The authors' rule keeps it; counting only the pixels inside its mask would drop it.
    car, person = CITYSCAPES.names.index("car"), CITYSCAPES.names.index("person")
    class_logits = torch.full((2, CITYSCAPES.num_classes + 1), -10.0)
    class_logits[0, car], class_logits[1, person] = 10.0, 10.0
    class_logits[0, -1] = 10.0 + torch.log(torch.tensor(0.15 / 0.85))  # A's score 0.85, B's about 1
    masks = torch.full((2, 8, 8), -4.0)
    masks[0, :, :4], masks[0, :, 4:] = 4.0, -0.5
    masks[1, :, 2:4] = 4.0
    out = panoptic_inference(class_logits, masks, CITYSCAPES, (8, 8), (8, 8), (8, 8), 0.8, 0.8)
    assert out.classes.tolist() == [car, person]
    assert (out.panoptic == 1).sum() == 16 and (out.panoptic[:, :2] == 1).all()
    assert (out.panoptic[:, 2:4] == 2).all() and (out.panoptic[:, 4:] == 0).all()
