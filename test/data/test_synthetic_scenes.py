"""Synthetic scenes: determinism, Cityscapes layout, panoptic ground truth as the official script writes it."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ros_seg.cli import synth as synth_cli
from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.synthetic_scenes import (
    BICYCLE,
    BUS,
    MIN_INSTANCE_AREA,
    MOTORCYCLE,
    RIDER,
    TRAIN,
    Camera,
    _Canvas,
    _Cyclist,
    _ParkedTwoWheeler,
    _Vehicle,
    frame_rng,
    synthesize_drive,
    write_dataset,
)
from ros_seg.models.class_metadata import CITYSCAPES

SIZE = (192, 384)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[layout.FrameName]]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_dataset(root, 4, "val", SIZE, seed=7)


def _read_all(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_and_prefix_independent_of_count(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 2, "train", (96, 192), seed=3)
    write_dataset(tmp_path / "b", 3, "train", (96, 192), seed=3)
    a, b = _read_all(tmp_path / "a"), _read_all(tmp_path / "b")
    images = [k for k in a if k.endswith("_leftImg8bit.png")]
    assert len(images) == 2
    for key in a:
        if not key.endswith(".json"):
            assert a[key] == b[key], key
    other = synthesize_drive(frame_rng(4, "train", 0), (96, 192)).render(0)
    same = synthesize_drive(frame_rng(3, "train", 0), (96, 192)).render(0)
    again = synthesize_drive(frame_rng(3, "train", 0), (96, 192)).render(0)
    assert np.array_equal(same.image, again.image) and np.array_equal(same.instance_ids, again.instance_ids)
    assert not np.array_equal(same.image, other.image)


def test_layout_files_and_label_maps(dataset: tuple[Path, list[layout.FrameName]]) -> None:
    root, names = dataset
    assert [n.frame for n in names] == [19] * 4 and len({n.city for n in names}) == 2
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[list(CITYSCAPES.label_ids)] = CITYSCAPES.colors
    for name in names:
        image = layout.read_png(layout.image_path(root, "val", name), 3)
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        label_ids = layout.read_png(layout.gt_path(root, "val", name, layout.LABEL_IDS_SUFFIX), 1)
        instance_ids = layout.read_png(layout.gt_path(root, "val", name, layout.INSTANCE_IDS_SUFFIX), 1)
        color = layout.read_png(layout.gt_path(root, "val", name, layout.COLOR_SUFFIX), 3)
        assert label_ids.dtype == np.uint8 and instance_ids.dtype == np.uint16
        derived = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
        assert np.array_equal(derived, label_ids)
        assert np.array_equal(color, palette[label_ids])
        assert set(np.unique(label_ids)) <= {0, 1, *CITYSCAPES.label_ids}
        ids, areas = np.unique(instance_ids, return_counts=True)
        thing_labels = {i for i, t in zip(CITYSCAPES.label_ids, CITYSCAPES.is_thing) if t}
        is_object = (ids >= 1000) | np.isin(ids, list(thing_labels))
        assert (areas[is_object] >= MIN_INSTANCE_AREA).all()


def test_panoptic_ground_truth_equals_official_conversion(dataset: tuple[Path, list[layout.FrameName]],
                                                          tmp_path: Path) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root, _ = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(root / "gtFine"), str(tmp_path), False, ["val"])
    ours = json.loads(layout.panoptic_json_path(root, "val").read_text())
    official = json.loads((tmp_path / "cityscapes_panoptic_val.json").read_text())
    assert ours == official
    for annotation in official["annotations"]:
        expected = layout.read_png(tmp_path / "cityscapes_panoptic_val" / annotation["file_name"], 3)
        got = layout.read_png(layout.panoptic_png_dir(root, "val") / annotation["file_name"], 3)
        assert np.array_equal(got, expected)


def test_panoptic_json_consistent_with_png(dataset: tuple[Path, list[layout.FrameName]]) -> None:
    root, _ = dataset
    data = json.loads(layout.panoptic_json_path(root, "val").read_text())
    assert {c["id"] for c in data["categories"]} == set(CITYSCAPES.label_ids)
    assert [a["image_id"] for a in data["annotations"]] == [i["id"] for i in data["images"]]
    for annotation in data["annotations"]:
        ids = layout.rgb_to_id(layout.read_png(layout.panoptic_png_dir(root, "val") / annotation["file_name"], 3))
        listed = {s["id"]: s for s in annotation["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(listed)
        for segment_id, segment in listed.items():
            ys, xs = np.nonzero(ids == segment_id)
            assert segment["area"] == len(xs)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            expected_label = segment_id // 1000 if segment_id >= 1000 else segment_id
            assert segment["category_id"] == expected_label
            thing = CITYSCAPES.is_thing[CITYSCAPES.label_ids.index(expected_label)]
            assert segment["iscrowd"] == int(thing and segment_id < 1000)


def test_scenes_cover_the_classes() -> None:
    seen: set[int] = set()
    for i in range(6):
        seen |= set(np.unique(synthesize_drive(frame_rng(0, "train", i), (128, 256)).render(0).label_ids).tolist())
    core = {"road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car"}
    assert {CITYSCAPES.label_ids[CITYSCAPES.names.index(n)] for n in core} <= seen
    assert len(seen & set(CITYSCAPES.label_ids)) >= 13


def _gray_canvas() -> _Canvas:
    """A 256x512 canvas of uniform gray 128 (no background to tell drawn pixels from), camera 1.5 m up."""
    camera = Camera(width=512, height=256, focal=540.0, horizon=110.0, mount_height=1.5)
    return _Canvas(camera, np.full((256, 3), 128, dtype=np.uint8))


def _draw_alone(label: int, color: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One oncoming 20 m vehicle 25 m ahead in the lane left of the camera, on gray: (image, instance ids)."""
    canvas = _gray_canvas()
    vehicle = _Vehicle(-3.5, 25.0, length=20.0, track=1, label=label, width=2.5, height=3.3, color=color,
                       oncoming=True)
    vehicle.draw(canvas, 25.0, 0.0, 1.0)
    return canvas.image, canvas.ids


@pytest.mark.parametrize("color", [(235, 235, 230), (200, 30, 35)], ids=["white", "red"])
def test_trams_look_unlike_buses(color: tuple[int, int, int]) -> None:
    tram_image, tram_ids = _draw_alone(TRAIN, color)
    bus_image, bus_ids = _draw_alone(BUS, color)
    tram, bus = tram_ids == TRAIN * 1000 + 1, bus_ids == BUS * 1000 + 1
    # Everything drawn belongs to the vehicle's segment, and nothing else does.
    assert np.array_equal((tram_image != 128).any(axis=-1), tram)
    assert np.array_equal((bus_image != 128).any(axis=-1), bus)
    # Roof equipment and the pantograph rise above a bus body of the same height.
    assert np.nonzero(tram.any(axis=1))[0].min() < np.nonzero(bus.any(axis=1))[0].min() - 5
    # The livery stripe (the other tram colour) and the dark skirt and bellows are the tram's alone.
    other = np.array((200, 30, 35) if color[0] > 220 else (235, 235, 230))
    def stripe(image: np.ndarray) -> np.ndarray:  # on the front face, or shaded on the side face
        return np.stack([np.abs(image.astype(int) - other * f).max(axis=-1) < 20 for f in (1.0, 0.8)]).any(0)

    def dark(image: np.ndarray) -> np.ndarray:
        return image.max(axis=-1) < 60

    assert stripe(tram_image)[tram].sum() > 60 and stripe(bus_image)[bus].sum() == 0
    assert dark(tram_image)[tram].mean() > dark(bus_image)[bus].mean() + 0.05


def _two_wheeler_alone(motorcycle: bool, parked: bool) -> tuple[np.ndarray, np.ndarray]:
    """A two-wheeler 5 m ahead, ridden away from the camera (yellow) or parked at an angle (red), on gray."""
    canvas = _gray_canvas()
    if parked:
        actor = _ParkedTwoWheeler(1.5, 5.0, length=1.2, track=1, motorcycle=motorcycle, angle=0.9,
                                  color=(150, 20, 25))
    else:
        colors = ((30, 55, 120), (40, 40, 40), (220, 180, 150), (40, 30, 20))
        actor = _Cyclist(0.3, 5.0, length=2.0 if motorcycle else 1.7, track=1, motorcycle=motorcycle,
                         rider_track=1, colors=colors, frame_color=(230, 200, 40))
    actor.draw(canvas, 5.0, 0.0, 1.0)
    return canvas.image, canvas.ids


def _near(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 12) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(color)).max(axis=-1) <= tolerance


@pytest.mark.parametrize("parked", [False, True], ids=["ridden", "parked"])
def test_motorcycles_look_unlike_bicycles(parked: bool) -> None:
    moto_image, moto_ids = _two_wheeler_alone(True, parked)
    bike_image, bike_ids = _two_wheeler_alone(False, parked)
    moto, bike = moto_ids == MOTORCYCLE * 1000 + 1, bike_ids == BICYCLE * 1000 + 1
    # Everything drawn is the two-wheeler or its rider, and both are drawn.
    for image, ids, vehicle in ((moto_image, moto_ids, moto), (bike_image, bike_ids, bike)):
        drawn = (image != 128).any(axis=-1)
        assert np.array_equal(drawn, vehicle | (ids == RIDER * 1000 + 1)) and vehicle.sum() > 100
    # A motorcycle is bulkier and carries chrome (silencer, exhaust, fork) a bicycle has none of.
    assert moto.sum() > 1.5 * bike.sum()
    chrome = (178, 178, 184)
    assert _near(moto_image, chrome)[moto].sum() > 20 and _near(bike_image, chrome).sum() == 0
    if not parked:
        # Seen from behind: the red tail lamp and the light number plate, on the motorcycle's segment.
        assert _near(moto_image, (210, 25, 25))[moto].sum() > 10
        assert _near(moto_image, (232, 232, 222))[moto].sum() > 30
        # The tail section in the body colour covers the rider's seat: below the hips it is motorcycle.
        rows = np.nonzero(moto.any(axis=1))[0]
        assert _near(moto_image, (230, 200, 40), 40)[moto].sum() > 150 and rows.min() < 150


def test_sequence_frames_move_smoothly(tmp_path: Path) -> None:
    names = write_dataset(tmp_path, 3, "train", (128, 256), seed=1, sequence=True)
    assert [(n.sequence, n.frame) for n in names] == [(0, 0), (0, 1), (0, 2)]
    assert len({n.city for n in names}) == 1
    drive = synthesize_drive(frame_rng(5, "train", 0), (256, 512), frames=4)
    a, b = drive.render(0), drive.render(1)
    shared = np.intersect1d(a.instance_ids[a.instance_ids >= 1000], b.instance_ids[b.instance_ids >= 1000])
    assert len(shared) >= 3  # objects keep their instance ids
    for instance in shared:
        ya, xa = np.nonzero(a.instance_ids == instance)
        yb, xb = np.nonzero(b.instance_ids == instance)
        if min(len(xa), len(xb)) > 200:
            assert abs(xa.mean() - xb.mean()) < 25 and abs(ya.mean() - yb.mean()) < 25
    assert (a.label_ids == b.label_ids).mean() > 0.85
    independent = synthesize_drive(frame_rng(6, "train", 0), (256, 512)).render(0)
    assert (a.label_ids == b.label_ids).mean() > (a.label_ids == independent.label_ids).mean()


@pytest.mark.parametrize("sequence", [False, True], ids=["scenes", "sequence"])
def test_worker_processes_write_the_same_files(tmp_path: Path, sequence: bool) -> None:
    one = write_dataset(tmp_path / "one", 5, "val", (64, 128), seed=4, sequence=sequence)
    three = write_dataset(tmp_path / "three", 5, "val", (64, 128), seed=4, sequence=sequence, workers=3)
    assert three == one
    a, b = _read_all(tmp_path / "one"), _read_all(tmp_path / "three")
    assert len(a) == 5 * 5 + 1 and a.keys() == b.keys()  # image, 3 ground-truth maps and panoptic PNG per frame
    for key in a:
        assert a[key] == b[key], key
    with pytest.raises(ValueError, match="worker processes must be at least 1"):
        write_dataset(tmp_path / "none", 2, "val", (64, 128), workers=0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-seg")
    synth_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    args = parser.parse_args(
        ["synth", "--out", str(tmp_path), "--n", "2", "--split", "val", "--size", "64x128", "--seed", "2"]
    )
    assert args.func(args) == 0
    assert len(list((tmp_path / "leftImg8bit" / "val").rglob("*.png"))) == 2
    assert args.func(args) == 2  # the split already holds images
    assert "already holds images" in capsys.readouterr().err
    args = parser.parse_args(["synth", "--out", str(tmp_path / "w"), "--n", "2", "--size", "64x128", "--workers", "2"])
    assert args.func(args) == 0
    assert "with 2 worker processes" in capsys.readouterr().out
    assert len(list((tmp_path / "w" / "leftImg8bit" / "train").rglob("*.png"))) == 2
    args = parser.parse_args(["synth", "--out", str(tmp_path / "v"), "--n", "2", "--workers", "0"])
    assert args.func(args) == 2
    assert "worker processes must be at least 1" in capsys.readouterr().err
    args = parser.parse_args(["synth", "--out", str(tmp_path / "x"), "--n", "0"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 1" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", str(tmp_path), "--n", "1", "--size", "big"])
