"""Test-wide settings: deterministic, few threads, DDS confined to this machine, Triton interpreted without a GPU."""
from __future__ import annotations

import os

# Every ROS 2 process started by a test stays on loopback, on a domain of its own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Without a GPU our Triton kernels run in Triton's interpreter on CPU tensors (test_gpu_kernels.py). Triton
# reads the switch when triton.language and the kernels are first imported, so it is set before any test
# module imports them.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def cuda_available() -> bool:
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
