"""`OUT/metrics.jsonl`, the training log: one JSON object per line, appended as training goes.

Lines of logged iterations hold {"iter", the loss terms, "loss", "grad_norm",
"lr", "time", "data_time"}; lines of evaluations {"iter", "eval": report}. Only
rank 0 writes it. A resume first drops the lines of iterations after its
checkpoint, so the log reads as that of one uninterrupted run. A last line cut
short (a run killed while writing it) is left out when the log is read and
dropped from the file by the resume's rewrite, with a warning; a broken line
before it is an error naming the file and line.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.train.run_files import LOG_FILE, atomic_write_text

log = logging.getLogger(__name__)


class MetricsLog:
    """The metrics.jsonl file of the output folder `out_dir` (created on the first append)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOG_FILE

    def append(self, record: dict[str, Any]) -> None:
        """Add `record` as a line; it is on disk when this returns."""
        with open(self.path, "a") as log_file:
            log_file.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """Every line of the log, in order (none when there is no log yet)."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(errors="replace").splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                if number == len(lines):
                    log.warning("%s: its last line (%d) is incomplete, as a run killed while writing it leaves it: "
                                "left out (a resume removes it from the file)", self.path, number)
                    break
                raise ValueError(f"{self.path}, line {number}, is not a JSON object: {excerpt(line)}; fix or "
                                 "delete that line")
            records.append(record)
        return records

    def truncate_after(self, iteration: int) -> None:
        """Drop the lines of iterations after `iteration` (written by a run that was interrupted)."""
        if not self.path.is_file():
            return
        kept = [json.dumps(record) for record in self.records() if record.get("iter", 0) <= iteration]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
