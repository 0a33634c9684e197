"""Out-of-range command-line values are refused before any work: exit 2 with a one-line reason, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from ros_seg.cli import main


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["synth", "--out", "{tmp}/s", "--n", "1", "--size", "100000x100000"], "at most 16384 per side"),
        (["synth", "--out", "{tmp}/s", "--n", "1", "--size", "9" * 5000 + "x9"], "size must look like"),
        (["bench", "--model", "pem_stdc1", "--threads", "-1"], "must be >= 1, got '-1'"),
        (["bench", "--model", "pem_stdc1", "--threads", "0"], "must be >= 1, got '0'"),
        (["make-bag", "--data", "{tmp}", "--out", "{tmp}/b", "--rate", "1e-300"], "rate must be between"),
        (["make-bag", "--data", "{tmp}", "--out", "{tmp}/b", "--rate", "inf"], "rate must be between"),
        (["make-bag", "--data", "{tmp}", "--out", "{tmp}/b", "--rate", "nan"], "rate must be between"),
        (["describe", "--model", "pem_stdc1", "--json", "{tmp}/no/such/dir/x.json"], "does not exist: create it"),
    ],
)
def test_out_of_range_values_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                                  reason: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"ros-seg {argv[0]}: error: argument ") and reason in last, err
    assert "Traceback" not in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "s").exists() and not (tmp_path / "b").exists()


def test_write_bag_refuses_rates_whose_stamps_collide_or_overflow(tmp_path: Path) -> None:
    from ros_seg.replay.bag_writer import write_bag

    for rate in (float("inf"), 1e-300, 0.0):
        with pytest.raises(ValueError, match="--rate must be between 1e-3 and 1e9"):
            write_bag(tmp_path, tmp_path / "bag", rate_hz=rate)
