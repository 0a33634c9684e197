"""metrics.jsonl: a last line cut short by a kill is left out and repaired by a resume; other damage names the
file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.run_files import LOG_FILE


def _write(out: Path, text: str) -> MetricsLog:
    (out / LOG_FILE).write_text(text)
    return MetricsLog(out)


def test_partial_last_line_is_dropped_and_repaired(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [json.dumps({"iter": i, "loss": 1.0 / i}) for i in (1, 2, 3)]
    log = _write(tmp_path, "\n".join(lines) + "\n" + '{"iter": 4, "loss": 0.2')  # killed while writing line 4
    with caplog.at_level("WARNING"):
        assert [r["iter"] for r in log.records()] == [1, 2, 3]
    assert f"{log.path}: its last line (4) is incomplete" in caplog.text
    log.truncate_after(2)  # what a resume from iteration 2 does
    assert log.path.read_text() == "".join(line + "\n" for line in lines[:2])


def test_broken_line_before_the_last_names_file_and_line(tmp_path: Path) -> None:
    log = _write(tmp_path, '{"iter": 1}\n{"iter": 2, oops\n{"iter": 3}\n')
    with pytest.raises(ValueError, match=rf"{LOG_FILE}, line 2, is not a JSON object: .*fix or delete that line"):
        log.records()
    log = _write(tmp_path, '{"iter": 1}\n[1, 2]\n{"iter": 3}\n')
    with pytest.raises(ValueError, match=r"line 2, is not a JSON object"):
        log.records()
