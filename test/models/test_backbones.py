"""Tests for the ResNet-50 and STDC backbones and their ImageNet weight loading."""

import logging
import re

import pytest
import torch

from ros_seg.models.backbones import build_backbone
from ros_seg.models.backbones.imagenet_weights import load_imagenet_weights

NAMES = ("resnet50", "stdc1", "stdc2")
EXPECTED_CHANNELS = {
    "resnet50": {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048},
    "stdc1": {"res2": 64, "res3": 256, "res4": 512, "res5": 1024},
    "stdc2": {"res2": 64, "res3": 256, "res4": 512, "res5": 1024},
}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

# STDC parameter counts by hand (k x k conv: in * out * k^2; BatchNorm: 2 * channels).
# Stem: ConvX(3, 32, 3) = 864 + 64 = 928; ConvX(32, 64, 3) = 18,432 + 128 = 18,560.
# CatBottleneck(in, C): 1x1 in -> C/2, 3x3 C/2 -> C/4, 3x3 C/4 -> C/8, 3x3 C/8 -> C/8,
# plus for stride 2 the depthwise 3x3 on C/2 with its BatchNorm:
#   (64, 256, s2)    =   8,448 +    73,856 +  18,496 +   9,280 + 1,408 =   111,488
#   (256, 256)       =  33,024 +    73,856 +  18,496 +   9,280         =   134,656
#   (256, 512, s2)   =  66,048 +   295,168 +  73,856 +  36,992 + 2,816 =   474,880
#   (512, 512)       = 131,584 +   295,168 +  73,856 +  36,992         =   537,600
#   (512, 1024, s2)  = 263,168 + 1,180,160 + 295,168 + 147,712 + 5,632 = 1,891,840
#   (1024, 1024)     = 525,312 + 1,180,160 + 295,168 + 147,712         = 2,148,352
# STDC1 [2, 2, 2]: 19,488 + 111,488 + 134,656 + 474,880 + 537,600 + 1,891,840 + 2,148,352
#   = 5,318,304.
# STDC2 [4, 5, 3]: STDC1 + 2 * 134,656 + 3 * 537,600 + 2,148,352 = 9,348,768
#   (the 4.03M that separates the authors' PEM-STDC2 20.99M from PEM-STDC1 16.96M).
# ResNet-50: torchvision's 25,557,032 minus its fc (2048 * 1000 + 1000) = 23,508,032.
PARAMETER_COUNTS = {"resnet50": 23_508_032, "stdc1": 5_318_304, "stdc2": 9_348_768}


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Fills every float tensor of the state dict with noise (running_var kept positive)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def _to_torchvision_key(key: str) -> str:
    """Our detectron2-layout ResNet key written the torchvision way."""
    key = re.sub(r"^stem\.conv1\.norm\.", "bn1.", key)
    key = re.sub(r"^stem\.conv1\.", "conv1.", key)
    key = re.sub(r"^res(\d)\.", lambda match: f"layer{int(match.group(1)) - 1}.", key)
    key = re.sub(r"\.shortcut\.norm\.", ".downsample.1.", key)
    key = re.sub(r"\.shortcut\.", ".downsample.0.", key)
    return re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", key)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    model = build_backbone(name)
    assert sum(parameter.numel() for parameter in model.parameters()) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_outputs_have_announced_channels_and_strides(name):
    model = build_backbone(name).eval()
    assert model.out_channels == EXPECTED_CHANNELS[name]
    assert model.out_strides == STRIDES
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 128))
    assert list(features) == list(STRIDES)
    for level, stride in STRIDES.items():
        assert features[level].shape == (1, EXPECTED_CHANNELS[name][level], 64 // stride, 128 // stride)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name):
    model = _randomize(build_backbone(name)).eval()
    image = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        first, second = model(image), model(image)
    for level in STRIDES:
        assert torch.equal(first[level], second[level])


def test_resnet50_has_detectron2_layout():
    model = build_backbone("resnet50")
    state = model.state_dict()
    assert state["stem.conv1.weight"].shape == (64, 3, 7, 7)
    assert "stem.conv1.norm.running_var" in state
    assert state["res2.0.shortcut.weight"].shape == (256, 64, 1, 1)
    assert state["res3.0.shortcut.norm.bias"].shape == (512,)
    assert state["res5.2.conv3.norm.weight"].shape == (2048,)
    assert not any(key.startswith("res2.1.shortcut") for key in state)
    assert [len(getattr(model, stage)) for stage in STRIDES] == [3, 4, 6, 3]
    assert model.stem.conv1.stride == (2, 2) and model.stem.conv1.padding == (3, 3)
    assert model.res2[0].shortcut.stride == (1, 1)
    for stage in ("res3", "res4", "res5"):
        block = getattr(model, stage)[0]
        assert block.conv1.stride == (1, 1)
        assert block.conv2.stride == (2, 2)
        assert block.shortcut.stride == (2, 2)
    assert all(bias is None for bias in (model.stem.conv1.bias, model.res4[3].conv2.bias))


@pytest.mark.parametrize(("name", "length"), [("stdc1", 2 + 6), ("stdc2", 2 + 12)])
def test_stdc_has_authors_layout(name, length):
    model = build_backbone(name)
    state = model.state_dict()
    assert len(model.features) == length
    assert state["features.0.conv.weight"].shape == (32, 3, 3, 3)
    assert state["features.2.conv_list.0.conv.weight"].shape == (128, 64, 1, 1)
    assert state["features.2.conv_list.1.conv.weight"].shape == (64, 128, 3, 3)
    assert state["features.2.conv_list.3.bn.running_mean"].shape == (32,)
    assert state["features.2.avd_layer.0.weight"].shape == (128, 1, 3, 3)
    assert state["features.2.avd_layer.1.weight"].shape == (128,)
    assert "features.3.avd_layer.0.weight" not in state
    assert all(key.startswith("features.") for key in state)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50, stdc1, stdc2"):
        build_backbone("resnet18")


def test_resnet50_loads_torchvision_state_dict(tmp_path):
    source = _randomize(build_backbone("resnet50"))
    checkpoint = {_to_torchvision_key(key): value for key, value in source.state_dict().items()}
    assert "layer1.0.downsample.1.running_var" in checkpoint and "bn1.weight" in checkpoint
    checkpoint["fc.weight"] = torch.zeros(1000, 2048)
    checkpoint["fc.bias"] = torch.zeros(1000)
    torch.save(checkpoint, tmp_path / "resnet50.pth")
    target = build_backbone("resnet50")
    load_imagenet_weights(target, tmp_path / "resnet50.pth")
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_resnet50_reports_misshaped_and_missing_tensors(tmp_path):
    state = build_backbone("resnet50").state_dict()
    checkpoint = {_to_torchvision_key(key): value for key, value in state.items()}
    checkpoint["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    del checkpoint["layer4.2.bn3.running_mean"]
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as error:
        load_imagenet_weights(build_backbone("resnet50"), tmp_path / "bad.pth")
    message = str(error.value)
    assert (
        "res3.0.conv2.weight (file key layer2.0.conv2.weight): "
        "expected (128, 128, 3, 3), found (128, 128, 1, 1)"
    ) in message
    assert "res5.2.conv3.norm.running_mean: expected (2048,), found missing" in message


def test_stdc_loads_authors_imagenet_checkpoint(tmp_path, caplog):
    source = _randomize(build_backbone("stdc1"))
    tensors = dict(source.state_dict())
    tensors["x2.0.0.conv.weight"] = tensors["features.0.conv.weight"]
    tensors["x8.0.0.conv_list.0.conv.weight"] = tensors["features.2.conv_list.0.conv.weight"]
    tensors["conv_last.conv.weight"] = torch.zeros(1024, 1024, 1, 1)
    tensors["fc.weight"] = torch.zeros(1024, 1024)
    tensors["bn.running_var"] = torch.ones(1024)
    tensors["linear.weight"] = torch.zeros(1000, 1024)
    tensors["extra.weight"] = torch.zeros(3)
    wrapped = {"state_dict": {f"module.{key}": value for key, value in tensors.items()}}
    torch.save(wrapped, tmp_path / "stdc1.tar")
    target = build_backbone("stdc1")
    with caplog.at_level(logging.INFO, logger="ros_seg.models.backbones.imagenet_weights"):
        load_imagenet_weights(target, tmp_path / "stdc1.tar")
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert "extra.weight" in caplog.text
    assert "conv_last" not in caplog.text


def test_stdc_rejects_the_other_variant(tmp_path):
    torch.save(build_backbone("stdc1").state_dict(), tmp_path / "stdc1.pth")
    with pytest.raises(ValueError, match=r"features\.8\.conv_list\.0\.conv\.weight: expected"):
        load_imagenet_weights(build_backbone("stdc2"), tmp_path / "stdc1.pth")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_imagenet_weights(build_backbone("stdc1"), tmp_path / "nowhere.pth")
