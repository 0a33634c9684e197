"""Repeat-factor sampling: LVIS factors per image, weighted epochs that stay reproducible and resumable."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.data.transforms import TrainAugmentation
from ros_seg.models.strict_config import ConfigError
from ros_seg.train import training_run
from ros_seg.train.batching import TrainSamples
from ros_seg.train.distributed import ShardedBatchSampler
from ros_seg.train.repeat_factors import class_image_fractions, describe_repeat_factors, image_repeat_factors
from ros_seg.train.train_config import TrainConfig


def classes(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.int64)


def test_factors_follow_the_lvis_rule() -> None:
    # Class 0 in every image, class 1 in one of four, class 2 in two of four (once twice in an image's list).
    present = [classes(0), classes(0, 1), classes(0, 2, 2), classes(0, 2), classes()]
    assert class_image_fractions(present, 3).tolist() == [0.8, 0.2, 0.4]
    factors = image_repeat_factors(present, 3, threshold=0.8)
    # r(c) = max(1, sqrt(t / f(c))): 1, 2, sqrt(2); an image takes its rarest class's factor; none: 1.
    assert factors == pytest.approx([1.0, 2.0, np.sqrt(2.0), np.sqrt(2.0), 1.0])
    assert image_repeat_factors(present, 3, threshold=0.2).tolist() == [1.0] * 5  # nothing rarer than t
    assert describe_repeat_factors(factors) == "3 of 5 images boosted; repeat factor min 1.00, mean 1.37, max 2.00"


def test_factor_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        image_repeat_factors([classes(0)], 2, threshold=0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        image_repeat_factors([classes(0)], 2, threshold=1.5)
    with pytest.raises(ValueError, match=r"image 1 lists class ids \[0, 7\] outside 0..1"):
        image_repeat_factors([classes(0), classes(0, 7)], 2, threshold=0.5)
    with pytest.raises(ValueError, match="no images"):
        image_repeat_factors([], 2, threshold=0.5)


def epochs(sampler: ShardedBatchSampler, batches: int) -> list[list[tuple[int, ...]]]:
    stream = iter(sampler)
    return [next(stream) for _ in range(batches)]


def test_weighted_epochs_draw_in_proportion_and_resume_exactly() -> None:
    weights = [1.0] * 7 + [8.0]
    sampler = ShardedBatchSampler(8, 2, seed=5, weights=weights)
    stream = epochs(sampler, 4 * 300)  # 300 epochs of 8 draws
    assert stream == epochs(ShardedBatchSampler(8, 2, seed=5, weights=weights), 4 * 300)  # reproducible
    assert stream[4 * 7 + 1 :] == epochs(ShardedBatchSampler(8, 2, seed=5, weights=weights, start_iteration=29),
                                          4 * 300 - 29)  # resumed anywhere: the same stream
    keys = [key for batch in stream for key in batch]
    counts = Counter(key[1] for key in keys)
    assert counts[7] / 300 == pytest.approx(8 * 8 / 15, rel=0.1)  # 8 draws x weight share 8/15 per epoch
    assert counts[0] / 300 == pytest.approx(8 / 15, rel=0.25)
    for epoch in range(300):
        epoch_keys = [key for key in keys if key[0] == epoch]
        assert len(epoch_keys) == 8 and len(set(epoch_keys)) == 8  # repeats get their own keys
        for key in epoch_keys:
            if len(key) == 3:
                assert key[2] >= 1 and (epoch, key[1]) in epoch_keys and (key[2] == 1 or (epoch, key[1], key[2] - 1)
                                                                          in epoch_keys)
    # Without weights the epochs are still permutations with 2-element keys (unchanged streams).
    plain = [key for batch in epochs(ShardedBatchSampler(8, 2, seed=5), 4) for key in batch]
    assert sorted(k[1] for k in plain) == list(range(8)) and all(len(k) == 2 for k in plain)


def test_weighted_epochs_are_split_between_processes() -> None:
    weights = np.linspace(1, 3, 10)
    whole = [key for batch in epochs(ShardedBatchSampler(10, 1, seed=2, weights=weights), 10) for key in batch]
    for rank in range(2):
        shard = [key for batch in epochs(ShardedBatchSampler(10, 2, seed=2, rank=rank, world_size=2,
                                                             weights=weights), 2) for key in batch]
        assert shard == whole[rank::2][:4]


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match=r"must be 4 positive numbers \(one per sample\), got shape \(3,\)"):
        ShardedBatchSampler(4, 2, seed=0, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="must be positive; 2 are not, the first at sample 1"):
        ShardedBatchSampler(4, 2, seed=0, weights=[1.0, 0.0, 1.0, float("nan")])


def test_a_repeated_image_is_augmented_anew(tmp_path: Path) -> None:
    write_dataset(tmp_path, 1, "train", size=(64, 128), seed=3)
    samples = TrainSamples(CityscapesDataset(tmp_path, "train"), TrainAugmentation((48, 96), (0.5, 2.0)), seed=0)
    first, again, repeat = samples[(4, 0)], samples[(4, 0)], samples[(4, 0, 1)]
    assert (first["image"] == again["image"]).all()
    assert first["image"].shape != repeat["image"].shape or not (first["image"] == repeat["image"]).all()


def test_trainer_samples_by_repeat_factor(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dataset(tmp_path / "data", 6, "train", size=(64, 128), seed=4)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "model": "pem_stdc1", "seed": 1, "eval_period": 0, "checkpoint_period": 0,
        "data": {"root": str(tmp_path / "data"), "crop_size": [64, 128], "num_workers": 0, "val_split": None,
                 "repeat_factor_threshold": 1.0},
        "solver": {"batch_size": 2, "max_iters": 1, "amp": False},
    }))
    config = TrainConfig.from_yaml(config_path)
    with caplog.at_level(logging.INFO, logger=training_run.__name__):
        run = training_run.build_training_run(config, tmp_path / "out", device="cpu")
    expected = image_repeat_factors(run.train_set.classes_per_image(), 19, 1.0)
    assert run.sampler.weights.tolist() == pytest.approx(expected.tolist())
    assert expected.max() > 1  # some class of these scenes is in fewer than all images
    assert "repeat-factor sampling (threshold 1): " + describe_repeat_factors(expected) in caplog.text
    # The config refuses thresholds outside (0, 1].
    bad = yaml.safe_load(config_path.read_text())
    bad["data"]["repeat_factor_threshold"] = 0
    config_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"'data.repeat_factor_threshold' in .*config.yaml must be null or in "
                                          r"\(0, 1\], got 0"):
        TrainConfig.from_yaml(config_path)
