"""Cityscapes reader: synthetic and hand-made official-layout data, both tasks, error messages."""
from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.data.transforms import TrainAugmentation
from ros_seg.models.class_metadata import CITYSCAPES

TRAIN_ID = {name: i for i, name in enumerate(CITYSCAPES.names)}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_dataset(root, 3, "val", (128, 256), seed=11)
    return root


def _official_panoptic(root: Path, split: str) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), False, [split])


@pytest.fixture(scope="module")
def handmade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 'aachen' frame as in the real data set, panoptic ground truth from cityscapesScripts."""
    root = tmp_path_factory.mktemp("real_layout")
    name = layout.FrameName("aachen", 0, 19)
    instance_ids = np.full((40, 60), 23, dtype=np.uint16)  # sky
    instance_ids[20:, :] = 7  # road
    instance_ids[15:30, 5:20] = 26000  # car 0
    instance_ids[15:30, 22:30] = 26001  # car 1
    instance_ids[25:35, 35:45] = 26  # a crowd of cars
    instance_ids[10:30, 50:55] = 24003  # person 3
    instance_ids[30:40, 0:10] = 29001  # caravan: ignored in evaluation
    instance_ids[36:, 20:60] = 1  # ego vehicle
    label_ids = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids).astype(np.uint8)
    layout.write_png(layout.image_path(root, "train", name), np.zeros((40, 60, 3), np.uint8) + 50)
    layout.write_png(layout.gt_path(root, "train", name, layout.LABEL_IDS_SUFFIX), label_ids)
    layout.write_png(layout.gt_path(root, "train", name, layout.INSTANCE_IDS_SUFFIX), instance_ids)
    _official_panoptic(root, "train")
    return root


def test_panoptic_sample_of_synthetic_data(synth_root: Path) -> None:
    dataset = CityscapesDataset(synth_root, "val", "panoptic")
    assert len(dataset) == 3
    sample = dataset[1]
    assert sample["name"] == dataset.frames[1].stem
    h, w = 128, 256
    assert sample["image"].shape == (h, w, 3) and sample["image"].dtype == np.uint8
    masks, classes = sample["masks"], sample["classes"]
    k = len(classes)
    assert masks.shape == (k, h, w) and masks.dtype == bool
    assert sample["is_thing"].shape == sample["is_crowd"].shape == sample["segment_ids"].shape == (k,)
    assert masks.sum(axis=0).max() == 1  # disjoint
    assert np.array_equal(masks.any(axis=0), sample["semantic"] != 255)
    for mask, cls, thing in zip(masks, classes, sample["is_thing"]):
        assert (sample["semantic"][mask] == cls).all() and thing == CITYSCAPES.is_thing[cls]
    instance_ids = layout.read_png(layout.gt_path(synth_root, "val", dataset.frames[1], layout.INSTANCE_IDS_SUFFIX), 1)
    for mask, segment_id in zip(masks, sample["segment_ids"]):
        assert np.array_equal(mask, instance_ids == segment_id)


def test_semantic_sample_agrees_with_panoptic(synth_root: Path) -> None:
    panoptic = CityscapesDataset(synth_root, "val", "panoptic")
    semantic = CityscapesDataset(synth_root, "val", "semantic")
    for i in range(len(semantic)):
        a, b = panoptic[i], semantic[i]
        assert np.array_equal(a["semantic"], b["semantic"]) and np.array_equal(a["image"], b["image"])
        assert list(b["classes"]) == sorted(set(a["classes"].tolist()))
        for mask, cls, segment_id in zip(b["masks"], b["classes"], b["segment_ids"]):
            assert np.array_equal(mask, b["semantic"] == cls) and segment_id == CITYSCAPES.label_ids[cls]


def test_official_layout_with_crowd_ignored_class_and_ego_vehicle(handmade_root: Path) -> None:
    sample = CityscapesDataset(handmade_root, "train", "panoptic")[0]
    assert sample["name"] == "aachen_000000_000019"
    segments = zip(sample["segment_ids"], sample["classes"], sample["is_crowd"])
    by_id = {int(s): (int(c), bool(crowd)) for s, c, crowd in segments}
    car, person = TRAIN_ID["car"], TRAIN_ID["person"]
    assert by_id == {23: (TRAIN_ID["sky"], False), 7: (TRAIN_ID["road"], False), 26000: (car, False),
                     26001: (car, False), 26: (car, True), 24003: (person, False)}
    semantic = sample["semantic"]
    assert (semantic[30:36, 0:10] == 255).all() and (semantic[36:, 20:60] == 255).all()  # caravan, ego vehicle
    assert (semantic[25:35, 35:45] == car).all()
    other = CityscapesDataset(handmade_root, "train", "semantic")[0]
    assert np.array_equal(other["semantic"], semantic)


def test_classes_per_image_without_decoding_samples(synth_root: Path, handmade_root: Path) -> None:
    for task in ("panoptic", "semantic"):
        dataset = CityscapesDataset(synth_root, "val", task)
        present = dataset.classes_per_image()
        assert len(present) == len(dataset)
        for i, classes in enumerate(present):
            assert classes.dtype == np.int64 and classes.tolist() == sorted(set(dataset[i]["classes"].tolist()))
    # Crowd regions show their class; ids outside the evaluated classes (caravan, ego vehicle) are left out.
    expected = sorted(TRAIN_ID[name] for name in ("road", "sky", "car", "person"))
    for task in ("panoptic", "semantic"):
        assert CityscapesDataset(handmade_root, "train", task).classes_per_image()[0].tolist() == expected


def test_transform_is_applied(synth_root: Path) -> None:
    dataset = CityscapesDataset(synth_root, "val", "panoptic", transform=TrainAugmentation((64, 96), seed=0))
    sample = dataset[0]
    assert sample["image"].shape == (64, 96, 3) and sample["masks"].shape[1:] == (64, 96)


def test_errors_name_the_expected_path(tmp_path: Path, synth_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CityscapesDataset(tmp_path / "nowhere", "val")
    with pytest.raises(FileNotFoundError) as info:
        CityscapesDataset(tmp_path, "val")
    message = str(info.value)
    assert f"no Cityscapes images under {tmp_path / 'leftImg8bit' / 'val'}: expected" in message
    assert "_leftImg8bit.png" in message
    with pytest.raises(ValueError, match="unknown task"):
        CityscapesDataset(synth_root, "val", "instance")

    copy = tmp_path / "copy"
    shutil.copytree(synth_root, copy)
    frame = CityscapesDataset(copy, "val", "semantic").frames[0]
    label_file = layout.gt_path(copy, "val", frame, layout.LABEL_IDS_SUFFIX)
    label_file.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(label_file))):
        CityscapesDataset(copy, "val", "semantic")
    json_file = layout.panoptic_json_path(copy, "val")
    json_file.rename(tmp_path / "moved.json")
    with pytest.raises(FileNotFoundError, match=re.escape(str(json_file))):
        CityscapesDataset(copy, "val", "panoptic")
