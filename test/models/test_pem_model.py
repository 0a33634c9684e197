"""PEM models: parameter counts, outputs, PEM cross-attention semantics, masked attention."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ros_seg.models.registry import build_model, load_model_config
from ros_seg.models.transformer_decoders.masked_cross_attention import MaskedCrossAttention
from ros_seg.models.transformer_decoders.pem_cross_attention import PEMCrossAttention, visible_tokens

# Counts of the authors' code (19 Cityscapes classes), see MODELS.md.
AUTHORS_PARAMS = {"pem_r50": 35.53e6, "pem_stdc2": 20.99e6, "pem_stdc1": 16.96e6}


@pytest.mark.parametrize("name", sorted(AUTHORS_PARAMS))
def test_parameter_count_matches_authors_code(name: str) -> None:
    model, _ = build_model(load_model_config(name))
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - AUTHORS_PARAMS[name]) / AUTHORS_PARAMS[name] < 0.005
    # Exact counts of our build, so an accidental architecture change is caught.
    assert params == {"pem_r50": 35_532_581, "pem_stdc2": 20_988_293, "pem_stdc1": 16_957_829}[name]


def test_forward_shapes_and_deep_supervision() -> None:
    model, meta = build_model(load_model_config("pem_stdc1"))
    model.train()
    images = torch.rand(2, 3, 100, 150) * 255  # padded to 128x160 inside
    out = model(images)
    assert out["pred_logits"].shape == (2, 100, meta.num_classes + 1)
    assert out["pred_masks"].shape == (2, 100, 32, 40)
    assert len(out["aux_outputs"]) == 6  # initial queries + 5 layers before the last
    for aux in out["aux_outputs"]:
        assert aux["pred_masks"].shape == (2, 100, 32, 40)
    loss = out["pred_masks"].mean() + sum(a["pred_logits"].mean() for a in out["aux_outputs"])
    loss.backward()
    assert model.transformer_decoder.query_feat.weight.grad is not None


def test_inference_path_equals_full_prediction_path() -> None:
    """Attention masks predicted at level resolution equal predicting at 1/4 and resizing."""
    model, _ = build_model(load_model_config("pem_stdc1"))
    model.eval()
    images = torch.rand(1, 3, 96, 160) * 255
    with torch.no_grad():
        full = model(images, all_predictions=True)
        fast = model(images, all_predictions=False)
    assert fast["aux_outputs"] == []
    torch.testing.assert_close(fast["pred_masks"], full["pred_masks"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast["pred_logits"], full["pred_logits"], atol=1e-4, rtol=1e-4)


def test_visible_tokens_lifts_only_fully_hidden_images() -> None:
    logits = torch.full((2, 3, 2, 2), -1.0)
    logits[1, 0, 0, 0] = 1.0  # image 1: one query sees one token
    visible = visible_tokens(logits)
    assert visible[0].all()  # every query of image 0 fully hidden -> lifted
    assert visible[1, 0].tolist() == [True, False, False, False]
    assert not visible[1, 1:].any()


def _naive_pem_ca(layer: PEMCrossAttention, query, feats, mask_logits, pos, query_pos):
    """PEM-CA written out per image, head and query with explicit loops."""
    memory = F.normalize(layer.feature_proj(feats + pos), dim=-1)[0]  # (N, C)
    key = F.normalize(layer.query_proj(query + query_pos), dim=-1)[0]  # (Q, C)
    visible = visible_tokens(mask_logits)[0]  # (Q, N)
    heads, d = layer.num_heads, key.shape[1] // layer.num_heads
    protos = torch.zeros_like(key)
    for q in range(key.shape[0]):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            best, best_n = -float("inf"), 0
            for n in range(memory.shape[0]):
                if not visible[q, n]:
                    continue
                s = float(memory[n, sl] @ key[q, sl])
                if s > best:
                    best, best_n = s, n
            protos[q, sl] = memory[best_n, sl]
    a = layer.proj(protos * key)  # (Q, C)
    a = a / a.norm(dim=0, keepdim=True).clamp_min(1e-12)  # normalize over the query axis
    out = layer.final(a * layer.alpha + protos)
    return (out + query[0])[None]


def test_pem_cross_attention_matches_naive_formula() -> None:
    layer = PEMCrossAttention(dim=32, num_heads=4).eval()
    with torch.no_grad():
        layer.alpha.uniform_(0.5, 1.5)
    query, query_pos = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    feats, pos = torch.randn(1, 32, 3, 4), torch.randn(1, 32, 3, 4)
    mask_logits = torch.randn(1, 5, 3, 4)
    with torch.no_grad():
        ours = layer(query, feats, mask_logits, pos, query_pos)
        ref = _naive_pem_ca(layer, query, feats, mask_logits, pos, query_pos)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_prototype_is_the_only_visible_token() -> None:
    """With one visible token per query, each head's prototype is that token, whatever the similarity."""
    layer = PEMCrossAttention(dim=8, num_heads=2)
    memory = F.normalize(torch.randn(1, 6, 8), dim=-1)  # the layer normalizes both before this step
    query = F.normalize(torch.randn(1, 3, 8), dim=-1)
    visible = torch.zeros(1, 3, 6, dtype=torch.bool)
    chosen = [4, 0, 2]
    for q, n in enumerate(chosen):
        visible[0, q, n] = True
    protos = layer.prototypes(memory, query, visible)
    for q, n in enumerate(chosen):
        torch.testing.assert_close(protos[0, q], memory[0, n])
    visible[0, 1] = False  # a query that sees nothing takes token 0, as argmax over all -inf does
    torch.testing.assert_close(layer.prototypes(memory, query, visible)[0, 1], memory[0, 0])


def _manual_masked_attention(layer: MaskedCrossAttention, query, feats, mask_logits, pos, query_pos):
    attn = layer.attn
    c = query.shape[-1]
    h = layer.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.split(c)
    b_q, b_k, b_v = attn.in_proj_bias.split(c)
    mem = feats.flatten(2).transpose(1, 2)[0]  # (N, C)
    key_in = (feats + pos).flatten(2).transpose(1, 2)[0]
    q = (query[0] + query_pos[0]) @ w_q.T + b_q
    k = key_in @ w_k.T + b_k
    v = mem @ w_v.T + b_v
    hidden = mask_logits.flatten(2)[0] < 0  # (Q, N)
    hidden[hidden.all(1)] = False
    outs = []
    d = c // h
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        scores = q[:, sl] @ k[:, sl].T / d**0.5
        scores = scores.masked_fill(hidden, float("-inf"))
        outs.append(scores.softmax(-1) @ v[:, sl])
    out = torch.cat(outs, 1) @ attn.out_proj.weight.T + attn.out_proj.bias
    return layer.norm(query[0] + out)[None]


def test_masked_cross_attention_matches_manual_attention() -> None:
    layer = MaskedCrossAttention(dim=16, num_heads=2).eval()
    query, query_pos = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    feats, pos = torch.randn(1, 16, 3, 3), torch.randn(1, 16, 3, 3)
    mask_logits = torch.randn(1, 4, 3, 3)
    mask_logits[0, 2] = -1.0  # fully hidden query attends everywhere
    with torch.no_grad():
        ours = layer(query, feats, mask_logits, pos, query_pos)
        ref = _manual_masked_attention(layer, query, feats, mask_logits, pos, query_pos)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_masked_attention_decoder_variant_builds() -> None:
    """The Mask2Former-style decoder (masked attention, post-norm) runs in the same framework."""
    config = load_model_config("pem_stdc1")
    config.transformer_decoder.cross_attention = "masked"
    config.transformer_decoder.pre_norm = False
    model, meta = build_model(config)
    out = model.eval()(torch.rand(1, 3, 64, 64) * 255, all_predictions=False)
    assert out["pred_masks"].shape == (1, 100, 16, 16)
