"""AdamW parameter groups, the warmup + cosine/poly schedule and the strict training config."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from ros_seg.models.registry import build_model, load_model_config
from ros_seg.train.optimizer import (
    WarmupSchedule,
    build_optimizer,
    build_scheduler,
    load_optimizer_state,
    parameter_groups,
)
from ros_seg.train.train_config import SolverConfig


def test_parameter_groups_of_pem() -> None:
    model, _ = build_model(load_model_config("pem_stdc1"))
    solver = SolverConfig(base_lr=1e-3, weight_decay=0.05, backbone_lr_multiplier=0.1)
    groups = {g["name"]: g for g in parameter_groups(model, solver)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.05
    no_decay = {id(p) for p in groups["head_no_decay"]["params"] + groups["backbone_no_decay"]["params"]}
    decoder = model.transformer_decoder
    for p in (decoder.query_feat.weight, decoder.query_embed.weight, decoder.level_embed.weight,
              decoder.decoder_norm.weight, decoder.decoder_norm.bias):
        assert id(p) in no_decay
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert id(module.weight) in no_decay and id(module.bias) in no_decay
    assert id(decoder.class_embed.weight) not in no_decay
    assert id(model.backbone.features[0].conv.weight) in {id(p) for p in groups["backbone"]["params"]}


def test_optimizer_step_is_adamw_with_each_groups_rate_and_decay() -> None:
    """One step of the (fused) optimizer equals AdamW written out, per parameter group."""
    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.head = nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 3))
    solver = SolverConfig(base_lr=1e-2, weight_decay=0.1, backbone_lr_multiplier=0.25)
    optimizer = build_optimizer(model, solver)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    eps = optimizer.defaults["eps"]
    for name, p in model.named_parameters():
        lr = 1e-2 * (0.25 if name.startswith("backbone.") else 1.0)
        decay = 0.0 if name in ("backbone.1.weight", "backbone.1.bias", "head.1.weight") else 0.1
        g = p.grad
        # First step: the bias-corrected moments are g and g^2.
        expected = before[name] * (1 - lr * decay) - lr * g / (g.abs() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_state_of_another_implementation_resumes_with_the_fused_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    solver = SolverConfig(base_lr=1e-2, weight_decay=0.05)
    reference = torch.optim.AdamW(parameter_groups(model, solver), lr=1e-2, weight_decay=0.05, foreach=True)
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(4)]

    def step(optimizer: torch.optim.Optimizer, gradients: list[torch.Tensor]) -> None:
        for p, g in zip(model.parameters(), gradients):
            p.grad = g.clone()
        optimizer.step()

    for gradients in grads[:3]:
        step(reference, gradients)
    saved = copy.deepcopy(reference.state_dict())  # state_dict() shares the live state tensors
    weights = [p.detach().clone() for p in model.parameters()]
    step(reference, grads[3])
    expected = [p.detach().clone() for p in model.parameters()]

    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    resumed = build_optimizer(model, solver)
    load_optimizer_state(resumed, saved)
    assert all(group["fused"] for group in resumed.param_groups)
    assert saved["param_groups"][0]["fused"] is None  # the checkpoint's own state is left as it was
    step(resumed, grads[3])
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)


def test_schedules_and_warmup() -> None:
    cosine = WarmupSchedule("cosine", max_iters=100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    poly = WarmupSchedule("poly", max_iters=100, power=0.9)
    assert poly(50) == pytest.approx(0.5**0.9)
    warm = WarmupSchedule("cosine", max_iters=100, warmup_iters=10, warmup_factor=0.1)
    assert warm(0) == pytest.approx(0.1)
    assert warm(5) == pytest.approx(0.55 * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert warm(10) == pytest.approx(cosine(10))
    with pytest.raises(ValueError, match="schedule"):
        WarmupSchedule("step", 10)


def test_scheduler_state_resumes_through_a_weights_only_checkpoint() -> None:
    solver = SolverConfig(base_lr=0.01, max_iters=20, schedule="cosine", warmup_iters=3, warmup_factor=0.2)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    optimizer = build_optimizer(model, solver)
    scheduler = build_scheduler(optimizer, solver)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_optimizer = build_optimizer(model, solver)
    fresh = build_scheduler(fresh_optimizer, solver)
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh.load_state_dict(state["scheduler"])
    assert fresh.get_last_lr() == scheduler.get_last_lr()
    scheduler.step()
    fresh.step()
    assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr())

