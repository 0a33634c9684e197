"""The operator profile of `ros-seg bench --profile`: shares add up, convolutions are found."""
from __future__ import annotations

import pytest

from ros_seg.bench.op_profile import profile_model


def test_profile_shares() -> None:
    out = profile_model("pem_stdc1", (64, 96), repeats=1, top=5)
    assert out["conv_matmul_share"] + out["other_share"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < out["conv_matmul_share"] < 1
    # The convolution op's name depends on the CPU's kernels (oneDNN on x86, others on ARM).
    assert any("conv" in name for name in out["top_ops_ms"]) and len(out["top_ops_ms"]) == 5
    assert out["total_ms"] > 0 and len(out["load_average"]) == 3
    with pytest.raises(ValueError, match="repeats"):
        profile_model("pem_stdc1", (64, 96), repeats=0)
