"""Metrics: our mIoU and PQ equal cityscapesScripts' official evaluators on the same files."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ros_seg.cli import metrics as metrics_cli
from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.eval.json_safe import nan_to_none
from ros_seg.eval.panoptic_metrics import PanopticAccumulator
from ros_seg.eval.prediction_files import (
    PanopticPredictionWriter,
    score_panoptic_predictions,
    score_semantic_predictions,
    write_semantic_prediction,
)
from ros_seg.eval.semantic_metrics import SemanticAccumulator
from ros_seg.models.class_metadata import CITYSCAPES

SPLIT = "val"
TRAIN_ID = {label: i for i, label in enumerate(CITYSCAPES.label_ids)}
CONFUSED = {7: 8, 8: 7, 11: 12, 21: 22, 24: 25, 25: 24, 26: 27, 27: 26, 28: 26, 32: 33, 33: 32}


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic val frames with an added crowd, void and ignored-class region; panoptic GT by cityscapesScripts."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = tmp_path_factory.mktemp("gt")
    names = write_dataset(root, 3, SPLIT, (256, 512), seed=22)  # a seed whose scenes hold all 19 classes
    for k, name in enumerate(names):
        path = layout.gt_path(root, SPLIT, name, layout.INSTANCE_IDS_SUFFIX)
        ids = layout.read_png(path, 1).astype(np.int32)
        objects, areas = np.unique(ids[ids >= 1000], return_counts=True)
        crowd = objects[np.argsort(areas)[-2]]  # second-largest object becomes a crowd region
        ids[ids == crowd] = crowd // 1000
        ids[200 + k * 10:230, 20:90] = 0  # unlabeled
        ids[150:170, 300:380] = 9 if k % 2 else 29005  # parking / caravan: ignored in evaluation
        layout.write_png(path, ids.astype(np.uint16))
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        layout.write_png(layout.gt_path(root, SPLIT, name, layout.LABEL_IDS_SUFFIX), label_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), False, [SPLIT])
    return root


def _semantic_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label-id prediction: shifted rows, swapped classes, unlabeled/ignored and absent-class blocks."""
    pred = gt.copy()
    pred[60:140] = np.roll(gt[60:140], (int(rng.integers(-6, 7)), int(rng.integers(-12, 13))), axis=(0, 1))
    for _ in range(12):
        y, x = rng.integers(0, gt.shape[0] - 30), rng.integers(0, gt.shape[1] - 60)
        block = pred[y:y + 30, x:x + 60]
        for src, dst in CONFUSED.items():
            if rng.uniform() < 0.3:
                block[gt[y:y + 30, x:x + 60] == src] = dst
    pred[10:30, 400:460] = 0
    pred[40:60, 400:460] = 9
    pred[200:215, 200:260] = 31  # train: not in the ground truth
    return pred


@pytest.fixture(scope="module")
def semantic_predictions(gt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("semantic_pred")
    rng = np.random.default_rng(0)
    for gt_file in sorted((gt_root / "gtFine" / SPLIT).glob(f"*/*{layout.LABEL_IDS_SUFFIX}")):
        name = layout.FrameName.parse(gt_file.name)
        pred = _semantic_prediction(layout.read_png(gt_file, 1), rng)
        layout.write_png(out / name.city / f"{name.stem}_leftImg8bit_pred.png", pred)
    return out


def _panoptic_prediction(
    gt_ids: np.ndarray, segments: list[dict], rng: np.random.Generator
) -> tuple[np.ndarray, dict[int, int]]:
    """Perturbed copy of a ground-truth panoptic map: new ids, shifted / swapped / dropped / merged /
    split segments and extra false positives (on void, on crowd, anywhere)."""
    h, w = gt_ids.shape
    pred = np.zeros_like(gt_ids)
    classes: dict[int, int] = {}
    fresh = iter(rng.permutation(np.arange(1, 5000)) * 997 + 3)
    merged_into: dict[int, int] = {}
    for segment in segments:
        mask = gt_ids == segment["id"]
        category = segment["category_id"]
        action = rng.choice(["keep", "shift", "swap", "drop", "merge", "split"], p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.1])
        if action == "drop":
            continue
        if action == "shift":
            mask = np.roll(mask, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
        if action == "swap":
            category = CONFUSED.get(category, category)
        new_id = int(next(fresh))
        if action == "merge" and category in merged_into:
            new_id = merged_into[category]
        merged_into.setdefault(category, new_id)
        pred[mask] = new_id
        classes[new_id] = TRAIN_ID[category]
        if action == "split":
            part = mask & (np.arange(w)[None, :] % 40 < 20)
            other = int(next(fresh))
            pred[part] = other
            classes[other] = TRAIN_ID[category]
    extras = [(rng.integers(0, h - 20), rng.integers(0, w - 30), rng.choice(CITYSCAPES.label_ids)) for _ in range(6)]
    void_y, void_x = np.nonzero(gt_ids == 0)
    extras.append((void_y.min(), void_x.min(), 26))  # mostly on void
    for segment in segments:
        if segment["iscrowd"]:
            x, y, _, _ = segment["bbox"]
            extras.append((y, x, segment["category_id"]))  # on the crowd, same class
            extras.append((y + 2, x + 2, 24))
    for y, x, category in extras:
        new_id = int(next(fresh))
        pred[y:y + 16, x:x + 26] = new_id
        classes[new_id] = TRAIN_ID[int(category)]
    present = set(np.unique(pred).tolist()) - {0}
    return pred, {i: c for i, c in classes.items() if i in present}


@pytest.fixture(scope="module")
def panoptic_predictions(gt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("panoptic_pred")
    writer = PanopticPredictionWriter(out, f"cityscapes_panoptic_{SPLIT}")
    rng = np.random.default_rng(1)
    gt = json.loads(layout.panoptic_json_path(gt_root, SPLIT).read_text())
    for annotation in gt["annotations"]:
        ids = layout.rgb_to_id(layout.read_png(layout.panoptic_png_dir(gt_root, SPLIT) / annotation["file_name"], 3))
        pred, classes = _panoptic_prediction(ids, annotation["segments_info"], rng)
        writer.add(annotation["image_id"], pred, classes)
    writer.close()
    return out


def test_semantic_scores_equal_official(gt_root: Path, semantic_predictions: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    monkeypatch.setattr(np, "in1d", np.isin, raising=False)  # removed in NumPy 2.4; used for the nIoU scores

    args = official.args
    args.predictionPath, args.predictionWalk = str(semantic_predictions), None
    args.exportFile, args.quiet = str(tmp_path / "result.json"), True
    gt_files = sorted(str(p) for p in (gt_root / "gtFine" / SPLIT).glob(f"*/*{layout.LABEL_IDS_SUFFIX}"))
    pred_files = [official.getPrediction(args, f) for f in gt_files]
    with contextlib.redirect_stdout(io.StringIO()):
        expected = official.evaluateImgLists(pred_files, gt_files, args)

    ours = score_semantic_predictions(gt_root, semantic_predictions, SPLIT)
    assert ours["images"] == 3
    assert ours["miou"] == pytest.approx(100 * expected["averageScoreClasses"], abs=1e-9)
    assert 20 < ours["miou"] < 95
    defined = 0
    for name, value in ours["per_class_iou"].items():
        reference = expected["classScores"][name]
        if math.isnan(reference):
            assert value is None
        else:
            defined += 1
            assert value == pytest.approx(100 * reference, abs=1e-9)
    assert defined == 19


def test_panoptic_scores_equal_official(gt_root: Path, panoptic_predictions: Path) -> None:
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as official

    gt = json.loads(layout.panoptic_json_path(gt_root, SPLIT).read_text())
    pred_json = panoptic_predictions / f"cityscapes_panoptic_{SPLIT}.json"
    pred = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = [(a, pred[a["image_id"]]) for a in gt["annotations"]]
    assert any(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
    with contextlib.redirect_stdout(io.StringIO()):
        stat = official.pq_compute_single_core(
            0, pairs, str(layout.panoptic_png_dir(gt_root, SPLIT)), str(pred_json.with_suffix("")), categories
        )
    expected = official.average_pq(stat, categories)

    ours = score_panoptic_predictions(gt_root, panoptic_predictions, SPLIT)
    for suffix, group in (("", "All"), ("_things", "Things"), ("_stuff", "Stuff")):
        for key in ("pq", "sq", "rq"):
            assert ours[key + suffix] == pytest.approx(100 * expected[group][key], abs=1e-9), key + suffix
        assert ours["n" + suffix] == expected[group]["n"]
    assert 20 < ours["pq"] < 90
    for label_id, reference in expected["per_class"].items():
        name = categories[label_id]["name"]
        counts = stat[label_id]
        if counts.tp + counts.fp + counts.fn == 0:
            assert name not in ours["per_class"]
            continue
        assert (ours["per_class"][name]["tp"], ours["per_class"][name]["fp"], ours["per_class"][name]["fn"]) == (
            counts.tp, counts.fp, counts.fn)
        for key in ("pq", "sq", "rq"):
            assert ours["per_class"][name][key] == pytest.approx(100 * reference[key], abs=1e-9)


def test_accumulator_void_crowd_and_threshold_rules() -> None:
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:4, 0:4] = 1  # car, 16 px
    gt[5:10, 0:5] = 2  # car crowd
    gt[0:2, 6:8] = 3  # person, 4 px
    gt_classes = {1: TRAIN_ID[26], 2: TRAIN_ID[26], 3: TRAIN_ID[24]}
    pred = np.zeros_like(gt)
    pred[0:4, 0:5] = 10  # car: all 16 GT pixels + 4 on void -> IoU 1
    pred[5:10, 0:4] = 11  # car on the crowd -> ignored
    pred[5:10, 5:7] = 12  # car mostly on void -> ignored
    pred[0:1, 6:8] = 13  # person, IoU exactly 0.5 -> no match
    pred[6:9, 8:10] = 14  # rider on void -> ignored
    pred_classes = {10: TRAIN_ID[26], 11: TRAIN_ID[26], 12: TRAIN_ID[26], 13: TRAIN_ID[24], 14: TRAIN_ID[25]}
    accumulator = PanopticAccumulator()
    accumulator.update(pred, pred_classes, gt, gt_classes, gt_crowd=[2])
    summary = accumulator.summary()
    assert summary["per_class"]["car"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "tp": 1, "fp": 0, "fn": 0}
    assert summary["per_class"]["person"]["tp"] == 0
    assert (summary["per_class"]["person"]["fp"], summary["per_class"]["person"]["fn"]) == (1, 1)
    assert set(summary["per_class"]) == {"car", "person"} and summary["n"] == 2 and summary["n_stuff"] == 0
    assert summary["pq"] == 50.0 and math.isnan(summary["pq_stuff"])
    with pytest.raises(ValueError, match="not in its segment list"):
        accumulator.update(pred, {10: 13}, gt, gt_classes)


def test_accumulator_counts_matched_thing_segments_by_area() -> None:
    gt = np.zeros((40, 40), dtype=np.int64)
    gt[0:4, 0:4] = 1  # car, 16 px: matched
    gt[0:2, 6:8] = 2  # person, 4 px: missed
    gt[10:20, 0:10] = 3  # car, 100 px: matched
    gt[10:30, 20:40] = 4  # car, 400 px: missed (its prediction covers a quarter of it)
    gt[30:40, 0:10] = 5  # car crowd, 100 px: not counted
    gt[20:40, 10:20] = 6  # road, 200 px: stuff, not counted
    car, person, road = TRAIN_ID[26], TRAIN_ID[24], TRAIN_ID[7]
    gt_classes = {1: car, 2: person, 3: car, 4: car, 5: car, 6: road}
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 1
    pred[10:20, 0:10] = 2
    pred[10:20, 20:30] = 3
    pred[20:40, 10:20] = 4
    pred_classes = {1: car, 2: car, 3: car, 4: road}
    accumulator = PanopticAccumulator()
    accumulator.update(pred, pred_classes, gt, gt_classes, gt_crowd=[5])
    by_area = accumulator.summary()["things_by_area"]
    assert [row["area"] for row in by_area] == ["< 64 px", "64-255 px", "256-1023 px", "1024-4095 px", ">= 4096 px"]
    assert [(row["segments"], row["matched"]) for row in by_area] == [(2, 1), (1, 1), (1, 0), (0, 0), (0, 0)]
    assert [row["recall"] for row in by_area[:3]] == [50.0, 100.0, 0.0] and math.isnan(by_area[3]["recall"])


def test_semantic_accumulator_rules() -> None:
    gt = np.array([[0, 0, 1, 255], [13, 13, 13, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 5], [13, 255, 13, 13]], dtype=np.uint8)
    accumulator = SemanticAccumulator()
    accumulator.update(pred, gt)
    summary = accumulator.summary()
    iou = summary["per_class_iou"]
    assert iou["road"] == 50.0 and iou["sidewalk"] == 50.0 and iou["car"] == pytest.approx(200 / 3)
    assert iou["pole"] is None and iou["sky"] is None  # predicted only on ignored pixels / absent
    assert summary["miou"] == pytest.approx((50 + 50 + 200 / 3) / 3)
    assert summary["pixel_accuracy"] == pytest.approx(400 / 6)
    # Road's pixels went half to sidewalk; one of car's three to outside the label set; sidewalk's none.
    assert accumulator.confusions() == {
        "road": [("sidewalk", 50.0)], "sidewalk": [], "car": [("outside the label set", pytest.approx(100 / 3))],
    }
    accumulator.update(np.full((1, 4), 1, np.uint8), np.zeros((1, 4), np.uint8))  # 4 more road pixels, as sidewalk
    accumulator.update(np.array([[2, 2, 0, 0]], np.uint8), np.zeros((1, 4), np.uint8))  # 2 as building
    assert accumulator.confusions(top=2)["road"] == [("sidewalk", 50.0), ("building", 20.0)]
    assert accumulator.confusions(top=1)["road"] == [("sidewalk", 50.0)]


def test_written_semantic_predictions_score_like_the_arrays(gt_root: Path, tmp_path: Path) -> None:
    table = layout.label_to_train_table(CITYSCAPES)
    rng = np.random.default_rng(3)
    streamed = SemanticAccumulator()
    for gt_file in sorted((gt_root / "gtFine" / SPLIT).glob(f"*/*{layout.LABEL_IDS_SUFFIX}")):
        gt = table[layout.read_png(gt_file, 1)]
        pred = np.where(rng.uniform(size=gt.shape) < 0.2, rng.integers(0, 19, gt.shape), gt).astype(np.uint8)
        pred[:8] = 255  # written as unlabeled (0)
        write_semantic_prediction(tmp_path, layout.FrameName.parse(gt_file.name).stem, pred)
        streamed.update(pred, gt)
    from_files = score_semantic_predictions(gt_root, tmp_path, SPLIT)
    assert from_files["miou"] == pytest.approx(streamed.summary()["miou"], abs=1e-12)
    assert from_files["per_class_iou"] == pytest.approx(streamed.summary()["per_class_iou"], abs=1e-12)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-seg")
    metrics_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_json_output_and_errors(gt_root: Path, semantic_predictions: Path, panoptic_predictions: Path,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    out = tmp_path / "semantic.json"
    args = parser.parse_args(
        ["metrics", "--task", "semantic", "--gt", str(gt_root), "--pred", str(semantic_predictions), "--json", str(out)]
    )
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["miou"] == pytest.approx(score_semantic_predictions(gt_root, semantic_predictions)["miou"])
    assert set(result["per_class_iou"]) == set(CITYSCAPES.names)

    args = parser.parse_args(
        ["metrics", "--task", "panoptic", "--gt", str(gt_root), "--pred", str(panoptic_predictions), "--json", "-"]
    )
    capsys.readouterr()
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text  # undefined values are null, as strict JSON readers need
    result = json.loads(text)
    assert {"pq", "sq", "rq", "pq_things", "pq_stuff", "per_class", "things_by_area"} <= set(result)
    thing_counts = [v for k, v in result["per_class"].items() if CITYSCAPES.is_thing[CITYSCAPES.names.index(k)]]
    assert sum(row["segments"] for row in result["things_by_area"]) == sum(v["tp"] + v["fn"] for v in thing_counts)
    args = parser.parse_args(
        ["metrics", "--task", "panoptic", "--gt", str(gt_root), "--pred", str(panoptic_predictions)]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"all     PQ {result['pq']:6.2f}" in printed and "thing segments matched, by area: < 64 px " in printed

    partial = tmp_path / "partial"
    kept = sorted(semantic_predictions.rglob("*.png"))[1:]
    for path in kept:
        (partial / path.name).parent.mkdir(parents=True, exist_ok=True)
        (partial / path.name).write_bytes(path.read_bytes())
    missing = sorted(semantic_predictions.rglob("*.png"))[0].name[: len("dunmore_000000_000019")]
    args = parser.parse_args(["metrics", "--task", "semantic", "--gt", str(gt_root), "--pred", str(partial)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no prediction for ground-truth image {missing}" in err
    args = parser.parse_args(["metrics", "--task", "panoptic", "--gt", str(tmp_path / "none"), "--pred", str(partial)])
    assert args.func(args) == 2
    assert "cityscapes_panoptic_val.json" in capsys.readouterr().err


def test_nan_becomes_null_at_any_depth() -> None:
    report = {"miou": math.nan, "pq": 41.5, "rows": [{"recall": math.nan, "n": 0}, (1.0, math.nan)], "name": "nan"}
    safe = nan_to_none(report)
    assert safe == {"miou": None, "pq": 41.5, "rows": [{"recall": None, "n": 0}, [1.0, None]], "name": "nan"}
    assert math.isnan(report["miou"])  # the input is left as it was
    json.loads(json.dumps(safe), parse_constant=lambda name: pytest.fail(name))
