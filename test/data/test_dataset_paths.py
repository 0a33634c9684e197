"""Paths in a panoptic json stay inside the data root: a file_name leading out of it is refused, not read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ros_seg.cli import main
from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.synthetic_scenes import write_dataset


@pytest.mark.parametrize("file_name", ["../../../outside.png", "/tmp/outside.png", "", 7])
def test_panoptic_file_names_are_confined_to_the_data_root(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            file_name: object) -> None:
    root = tmp_path / "data"
    write_dataset(root, 1, split="val", size=(32, 64), seed=0)
    json_path = layout.panoptic_json_path(root, "val")
    data = json.loads(json_path.read_text())
    real_png = layout.panoptic_png_dir(root, "val") / data["annotations"][0]["file_name"]
    shutil.copy(real_png, tmp_path / "outside.png")  # a readable file where the name leads
    data["annotations"][0]["file_name"] = file_name
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'file_name' of annotation .* in .*cityscapes_panoptic_val\.json"):
        CityscapesDataset(root, "val", "panoptic")[0]
    assert main(["metrics", "--task", "panoptic", "--gt", str(root), "--pred", str(root / "gtFine")]) == 2
    err = capsys.readouterr().err
    assert "'file_name' of annotation" in err and err.count("\n") == 1
