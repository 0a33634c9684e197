"""Model families: one per meta_architecture, answering build, criterion, post-processing and export;
the renamed threshold key still read from older configs and checkpoints; the padded-size helper."""
from __future__ import annotations

import pytest
import torch

from ros_seg.models.checkpoint import read_checkpoint
from ros_seg.models.criteria.criterion import SetCriterion
from ros_seg.models.criteria.panoptic_segformer_criterion import PanopticSegFormerCriterion
from ros_seg.models.families import FAMILIES, model_family
from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.meta_architecture import PostprocessOptions
from ros_seg.models.model_config import META_ARCHITECTURES, ModelConfig
from ros_seg.models.registry import load_model_config
from ros_seg.models.size_divisibility import padded_size
from ros_seg.models.strict_config import ConfigError
from ros_seg.train.train_config import LossConfig

from repo_paths import REPO_ROOT

DEMO_CHECKPOINT = REPO_ROOT / "models" / "pem_stdc1_synth.pt"


def test_every_meta_architecture_has_a_family() -> None:
    assert tuple(FAMILIES) == META_ARCHITECTURES


@pytest.mark.parametrize(
    ("model", "any_size", "criterion"),
    [("pem_stdc1", True, SetCriterion), ("m2f_r50", False, SetCriterion),
     ("panoptic_segformer_r50", False, PanopticSegFormerCriterion)],
)
def test_family_answers_for_its_models(model: str, any_size: bool, criterion: type) -> None:
    family = model_family(load_model_config(model))
    assert family.exports_any_input_size is any_size
    assert isinstance(family.criterion(LossConfig()), criterion)
    assert family.default_options() == PostprocessOptions(
        family.config.inference.score_threshold, family.config.inference.overlap_threshold
    )


def test_mask_former_postprocess_skips_panoptic_when_not_asked() -> None:
    family = model_family(load_model_config("pem_stdc1"))
    torch.manual_seed(0)
    logits, masks = torch.randn(5, family.metadata.num_classes + 1), torch.randn(5, 8, 8)
    options = PostprocessOptions(0.0, 0.0)
    semantic, panoptic = family.postprocess(logits, masks, (30, 32), (32, 32), (30, 32), options, panoptic=False)
    assert semantic.shape == (30, 32) and panoptic is None
    semantic_too, panoptic = family.postprocess(logits, masks, (30, 32), (32, 32), (30, 32), options)
    assert torch.equal(semantic, semantic_too) and panoptic.panoptic.shape == (30, 32)


def test_old_threshold_key_is_read_as_score_threshold() -> None:
    config = ModelConfig.from_dict({"inference": {"object_mask_threshold": 0.3}})
    assert config.inference.score_threshold == 0.3
    with pytest.raises(ConfigError, match="keep only 'score_threshold'"):
        ModelConfig.from_dict({"inference": {"object_mask_threshold": 0.3, "score_threshold": 0.4}})


def test_demo_checkpoint_written_with_the_old_key_loads() -> None:
    checkpoint = read_checkpoint(DEMO_CHECKPOINT)
    assert "object_mask_threshold" in torch.load(DEMO_CHECKPOINT, weights_only=True)["model_config"]["inference"]
    assert checkpoint.config.inference.score_threshold == 0.8
    model = model_family(checkpoint.config, checkpoint.metadata).build()
    assert isinstance(model, MaskFormer)


@pytest.mark.parametrize(("size", "padded"), [((256, 512), (256, 512)), ((257, 1), (288, 32)), ((70, 90), (96, 96))])
def test_padded_size(size: tuple[int, int], padded: tuple[int, int]) -> None:
    assert padded_size(size, 32) == padded
