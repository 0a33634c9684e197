"""Mask2Former and PRO-SCALE models: parameter count, shapes, stage slicing, TRC, LPE, fp32 encoder,
multiply-add savings against the papers, config parsing and the encoder benchmark."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ros_seg.bench.encoder_speed import bench_encoders
from ros_seg.models.complexity import count_gmacs, count_parameters
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import DeformableEncoder, MSDeformAttnPixelDecoder
from ros_seg.models.pixel_decoders.proscale_pixel_decoder import (
    LightPixelEmbedding,
    ProScaleEncoder,
    TokenRecalibration,
    proscale_pixel_decoder,
)
from ros_seg.models.registry import build_model, load_model_config
from ros_seg.models.strict_config import ConfigError

WIDTH = 32  # GroupNorm(32) needs a multiple of 32
IN_CHANNELS = (8, 16, 24, 40)


def _features(batch: int = 1, height: int = 64, width: int = 96) -> dict[str, Tensor]:
    """Random res2..res5 maps of a (height, width) image."""
    return {
        name: torch.randn(batch, channels, height // stride, width // stride)
        for name, channels, stride in zip(("res2", "res3", "res4", "res5"), IN_CHANNELS, (4, 8, 16, 32))
    }


def _maps(batch: int = 1) -> list[Tensor]:
    """Projected encoder inputs s4, s3, s2 (1/32, 1/16, 1/8 of a 64x96 image), coarse first."""
    return [torch.randn(batch, WIDTH, h, w) for h, w in ((2, 3), (4, 6), (8, 12))]


def _small_encoder(stage_layers: tuple[int, ...], trc: bool) -> ProScaleEncoder:
    return ProScaleEncoder(WIDTH, stage_layers, num_heads=2, num_points=2, ffn_dim=48, token_recalibration=trc)


def _build_on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        model, _ = build_model(load_model_config(name))
    return model


def test_m2f_r50_parameter_count_near_paper() -> None:
    params = count_parameters(_build_on_meta("m2f_r50"))
    assert abs(params - 44.0e6) / 44.0e6 < 0.01  # Mask2Former R50, Cityscapes: 44.0M
    assert params == 44_007_700  # the official model's count, so an accidental architecture change is caught


def test_proscale_encoder_layers_are_sized_by_their_stage() -> None:
    decoder = _build_on_meta("proscale_r50_333").pixel_decoder
    stages = decoder.encoder.stages
    assert [len(stage) for stage in stages] == [3, 3, 3]
    for levels, stage in enumerate(stages, start=1):
        for layer in stage:
            assert layer.self_attn.num_levels == levels
            assert layer.self_attn.sampling_offsets.out_features == 8 * levels * 4 * 2
            assert layer.self_attn.attention_weights.out_features == 8 * levels * 4


@pytest.mark.parametrize("name", ["m2f_r50", "proscale_r50_111"])
def test_model_forward_shapes(name: str) -> None:
    model, metadata = build_model(load_model_config(name))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96) * 255, all_predictions=True)
    assert out["pred_logits"].shape == (1, 100, metadata.num_classes + 1)
    assert out["pred_masks"].shape == (1, 100, 16, 24)
    assert len(out["aux_outputs"]) == 9  # initial queries + 8 layers before the last


@pytest.mark.parametrize("make", ["msdeformattn", "proscale"])
def test_pixel_decoder_shapes_and_float32_under_autocast(make: str) -> None:
    if make == "msdeformattn":
        encoder = DeformableEncoder(WIDTH, 3, num_layers=1, num_heads=2, num_points=2, ffn_dim=48)
        decoder = MSDeformAttnPixelDecoder(IN_CHANNELS, WIDTH, 16, encoder)
    else:
        decoder = proscale_pixel_decoder(IN_CHANNELS, WIDTH, 16, (1, 1, 1), num_heads=2, num_points=2, ffn_dim=48)
    features = _features(batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask_features, multi_scale = decoder({k: v.bfloat16() for k, v in features.items()})
    assert mask_features.shape == (2, 16, 16, 24) and mask_features.dtype == torch.float32
    assert [tuple(m.shape) for m in multi_scale] == [(2, WIDTH, 2, 3), (2, WIDTH, 4, 6), (2, WIDTH, 8, 12)]
    assert all(m.dtype == torch.float32 for m in multi_scale)


def _stage_outputs(encoder: ProScaleEncoder, maps: list[Tensor]) -> list[Tensor]:
    """Tokens leaving the last layer of every stage, captured by hooks."""
    captured: list[Tensor] = []
    hooks = [stage[-1].register_forward_hook(lambda m, i, o: captured.append(o)) for stage in encoder.stages]
    with torch.no_grad():
        encoder(maps)
    for hook in hooks:
        hook.remove()
    return captured


def test_stage_sees_only_its_levels() -> None:
    encoder = _small_encoder((1, 1, 1), trc=False).eval()
    maps = _maps()
    changed = [maps[0], maps[1], maps[2] + 1.0]  # new s2 (1/8)
    before, after = _stage_outputs(encoder, maps), _stage_outputs(encoder, changed)
    assert [t.shape[1] for t in before] == [6, 6 + 24, 6 + 24 + 96]
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)  # stage 1: s4 only
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)  # stage 2: s4, s3
    assert not torch.allclose(after[2], before[2])  # stage 3 sees s2
    changed_s3 = [maps[0], maps[1] + 1.0, maps[2]]
    assert torch.equal(_stage_outputs(encoder, changed_s3)[0], before[0])


def test_trc_is_how_stage_one_sees_s2() -> None:
    encoder = _small_encoder((1, 1, 1), trc=True).eval()
    maps = _maps()
    changed = [maps[0], maps[1], maps[2] + 1.0]
    assert not torch.allclose(_stage_outputs(encoder, maps)[0], _stage_outputs(encoder, changed)[0])
    with torch.no_grad():  # a constant gate: stage 1 no longer depends on s2
        encoder.recalibration.phi.weight.zero_()
    torch.testing.assert_close(_stage_outputs(encoder, maps)[0], _stage_outputs(encoder, changed)[0], rtol=0, atol=0)


def test_one_full_stage_equals_mask2former_encoder() -> None:
    proscale = _small_encoder((0, 0, 2), trc=False)
    m2f = DeformableEncoder(WIDTH, 3, num_layers=2, num_heads=2, num_points=2, ffn_dim=48)
    state = {key.replace("stages.2.", "layers."): value for key, value in proscale.state_dict().items()}
    m2f.load_state_dict(state)
    maps = _maps(batch=2)
    with torch.no_grad():
        for ours, theirs in zip(proscale(maps), m2f(maps)):
            torch.testing.assert_close(ours, theirs)


def test_trc_formula_against_the_authors_memory_reinterpretation() -> None:
    # The authors' TRC: the guide's (B, L, C) tokens read as a (B, C, H, W) map (.view), resized,
    # read back as (B, l, C) tokens (.reshape); token i of x is gated by phi of the i-th such row.
    trc = TokenRecalibration(WIDTH)
    nn.init.normal_(trc.phi.weight)
    x, guide = torch.randn(2, WIDTH, 2, 3), torch.randn(2, WIDTH, 8, 12)
    guide_tokens = guide.flatten(2).transpose(1, 2).contiguous()  # (B, 96, C), as the authors hold them
    resized = F.interpolate(guide_tokens.view(2, WIDTH, 8, 12), size=(2, 3), mode="bilinear", align_corners=False)
    rows = resized.reshape(2, 6, WIDTH)
    expected = torch.empty_like(x)
    weight, bias = trc.phi.weight[0].detach(), trc.phi.bias[0].detach()
    for b in range(2):
        for y in range(2):
            for xx in range(3):
                gate = torch.sigmoid(0.1 * (weight @ rows[b, y * 3 + xx] + bias))
                expected[b, :, y, xx] = x[b, :, y, xx] * gate
    with torch.no_grad():
        torch.testing.assert_close(trc(x, guide), expected)


def test_trc_applies_to_s4_and_s3_not_s2() -> None:
    encoder = _small_encoder((0, 0, 0), trc=True)  # no layers: the output is the encoder's input tokens
    maps = _maps()
    with torch.no_grad():
        out = encoder(maps)
        torch.testing.assert_close(out[0], encoder.recalibration(maps[0], maps[2]))
        torch.testing.assert_close(out[1], encoder.recalibration(maps[1], maps[2]))
    assert torch.equal(out[2], maps[2])


def test_lpe_replaces_only_the_3x3_output_conv() -> None:
    proscale = proscale_pixel_decoder(IN_CHANNELS, WIDTH, 16, (1, 1, 1), num_heads=2, num_points=2, ffn_dim=48)
    m2f = MSDeformAttnPixelDecoder(IN_CHANNELS, WIDTH, 16)
    lpe = proscale.output_conv
    assert isinstance(lpe, LightPixelEmbedding)
    assert [type(m) for m in lpe] == [nn.MaxPool2d, nn.GroupNorm, nn.ReLU]
    assert (lpe[0].kernel_size, lpe[0].stride, lpe[0].padding) == (3, 1, 1)
    assert not any(isinstance(m, nn.Conv2d) for m in lpe.modules())
    assert isinstance(m2f.output_conv[0], nn.Conv2d) and m2f.output_conv[0].kernel_size == (3, 3)
    for decoder in (proscale, m2f):  # the lateral res2 projection and the mask-feature conv remain
        assert decoder.lateral_conv[0].kernel_size == (1, 1)
        assert decoder.mask_features.kernel_size == (1, 1)
    x = torch.randn(1, WIDTH, 6, 7)
    expected = torch.relu(lpe[1](F.max_pool2d(x, 3, stride=1, padding=1)))
    torch.testing.assert_close(lpe(x), expected)


@pytest.fixture(scope="module")
def gmacs() -> dict[str, dict[str, float]]:
    """Multiply-adds at 1024x2048 as the papers count them (every prediction at mask resolution)."""
    names = ("m2f_r50", "proscale_r50_111", "proscale_r50_333")
    return {name: count_gmacs(_build_on_meta(name), (1024, 2048)) for name in names}


def test_gmacs_show_the_papers_savings(gmacs: dict[str, dict[str, float]]) -> None:
    m2f, p111, p333 = gmacs["m2f_r50"], gmacs["proscale_r50_111"], gmacs["proscale_r50_333"]
    assert m2f["total"] == pytest.approx(524.1, rel=0.01)
    assert m2f["pixel_decoder"] == pytest.approx(291.0, rel=0.01)
    assert p333["pixel_decoder"] <= 0.5 * m2f["pixel_decoder"]
    assert p333["pixel_decoder"] == pytest.approx(145.0, rel=0.01)
    assert p111["pixel_decoder"] == pytest.approx(65.21, rel=0.02)
    assert p333["total"] / m2f["total"] == pytest.approx(378.3 / 524.1, abs=0.05)
    assert p111["total"] / m2f["total"] == pytest.approx(298.1 / 524.1, abs=0.05)
    assert p333["backbone"] == m2f["backbone"] and p333["transformer_decoder"] == m2f["transformer_decoder"]


def test_proscale_layers_config_keeps_integers() -> None:
    assert load_model_config("proscale_r50_222").pixel_decoder.proscale_layers == [2, 2, 2]
    with pytest.raises(ConfigError, match="proscale_layers"):
        ModelConfig.from_dict({"pixel_decoder": {"name": "proscale", "proscale_layers": [2.5, 2, 2]}})


def test_bench_encoders_reports_every_model_against_the_first() -> None:
    result = bench_encoders(size=(64, 128), warmup=0, repeats=1)
    assert result["baseline"] == "m2f_r50"
    assert list(result["models"]) == ["m2f_r50", "proscale_r50_111", "proscale_r50_222", "proscale_r50_333"]
    assert result["models"]["m2f_r50"]["ratio"] == 1.0
    assert all(entry["encoder_ms"]["p50"] > 0 for entry in result["models"].values())
