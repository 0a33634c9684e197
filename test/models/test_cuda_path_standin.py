"""The GPU path of the models and their post-processing, checked for device placement without a GPU.

No GPU is available to this project's CI. What can still go wrong there
without showing on the CPU is device placement: a tensor made on the host
(``torch.arange(n)``, ``torch.tensor([...])`` without ``device=``) meeting the
model's GPU tensors, which CUDA refuses on the first frame. device_standin.py
gives a second device with real data on which every op checks its operands as
CUDA does. Each model runs there, from the preprocessed image through the
family's post-processing, and must give exactly its CPU results.

Not covered here (README, GPU section): autocast on the GPU, CUDA streams,
events and pinned memory, and the kernels' numerics (test_gpu_kernels.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ros_seg.inference.image_input import image_to_tensor
from ros_seg.models.families import model_family
from ros_seg.models.registry import load_model_config

from device_standin import STANDIN, DeviceMismatch, OnStandIn, module_to_standin, standin_device

SIZE = (96, 160)
MODELS = ["pem_stdc1", "pem_r50", "m2f_r50", "proscale_r50_111", "panoptic_segformer_r50"]


def test_the_standin_refuses_what_cuda_refuses() -> None:
    with standin_device() as dispatch:
        on_device = torch.arange(6.0, device=STANDIN).view(2, 3)
        assert isinstance(on_device, OnStandIn) and on_device.device == STANDIN
        assert (on_device + torch.tensor(1.0)).cpu().tolist() == [[1, 2, 3], [4, 5, 6]]  # 0-dim: fine
        assert on_device[torch.tensor([1])].cpu().tolist() == [[3, 4, 5]]  # CPU indices: fine
        made_here = torch.tensor([[1.0, 2.0, 3.0]], device=on_device.device)
        assert (on_device * made_here).sum().item() == (0 + 2 + 6) + (3 + 8 + 15)
        with pytest.raises(DeviceMismatch, match=r"aten.add.Tensor: CPU tensor\(s\) of shape \[\(3,\)\]"):
            on_device + torch.ones(3)
        with pytest.raises(DeviceMismatch, match="convolution"):
            nn.functional.conv2d(on_device.view(1, 1, 2, 3), torch.ones(1, 1, 1, 1))
        with pytest.raises((TypeError, RuntimeError)):
            on_device.numpy()
        assert type(on_device.cpu()) is torch.Tensor
    assert dispatch.ops > 0


class _MakesHostTensor(nn.Module):
    """The bug this check exists for: a position table built on the host."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[-1], dtype=x.dtype)


def test_a_tensor_made_on_the_host_inside_a_model_is_caught() -> None:
    model = _MakesHostTensor()
    assert model(torch.zeros(2, 4)).shape == (2, 4)  # fine on the CPU
    with standin_device(), pytest.raises(DeviceMismatch, match="aten.add.Tensor"):
        module_to_standin(model)(torch.zeros(2, 4, device=STANDIN))


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def _run(family, model: nn.Module, device: torch.device, image: np.ndarray) -> tuple:  # noqa: ANN001
    """Preprocess, model and the family's post-processing of one bgr8 frame on `device`; results on the CPU."""
    x = image_to_tensor(image, "bgr8", device, SIZE)
    with torch.no_grad():
        out = model(x)
    semantic, panoptic = family.postprocess(out["pred_logits"][0], out["pred_masks"][0], SIZE, SIZE,
                                            (SIZE[0] - 7, SIZE[1] + 9), family.default_options())
    assert semantic.device.type == device.type, "the semantic map stays on the model's device"
    tensors = {"logits": out["pred_logits"], "masks": out["pred_masks"], "semantic": semantic}
    if panoptic is not None:
        tensors.update({f"panoptic.{k}": v for k, v in vars(panoptic).items() if isinstance(v, torch.Tensor)})
    return {name: t.cpu() for name, t in tensors.items()}


@pytest.mark.parametrize("name", MODELS)
def test_model_and_postprocessing_keep_to_the_device(name: str) -> None:
    config = load_model_config(name)
    family = model_family(config)
    torch.manual_seed(0)
    model = family.build().eval()
    image = _frame(1)
    on_cpu = _run(family, model, torch.device("cpu"), image)
    with standin_device() as dispatch:
        on_device = _run(family, module_to_standin(model), STANDIN, image)
    assert dispatch.ops > 500, "the model ran on the stand-in device"
    assert on_device.keys() == on_cpu.keys()
    for key in on_cpu:
        torch.testing.assert_close(on_device[key], on_cpu[key], rtol=1e-5, atol=1e-5, msg=key)
