"""Training samples and batches: augmentation seeded per (epoch, index), padding into one tensor.

`TrainSamples` turns a `CityscapesDataset` sample into training targets: the
augmented image as (3, H, W) uint8 and its non-crowd segments as labels and
full-resolution masks. Its augmentation generator is seeded from the sample
key (epoch, dataset index[, repeat]) that `ShardedBatchSampler` yields, so the data of
any iteration is reproducible, whichever worker loads it and whether or not the
run was resumed.

`PaddedBatchCollator` pads a list of samples to one size that is a multiple of
the model's size divisibility: images with the pixel mean (zero after the
model's normalization, as the model pads itself), masks with False. The model
then does not pad again, so its 1/4-resolution predictions and the masks cover
the same area, as the criterion requires.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ros_seg.data.transforms import TrainAugmentation
from ros_seg.models.size_divisibility import padded_size


class TrainSamples(torch.utils.data.Dataset):
    """Augmented training samples addressed by (epoch, index) keys.

    Args:
        dataset: yields sample dicts ("image", "masks", "classes", "is_crowd").
        augmentation: random scale / crop / flip / jitter taking a numpy Generator.
        seed: mixed into every sample's generator seed.
    """

    def __init__(self, dataset: Any, augmentation: TrainAugmentation, seed: int) -> None:
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """{"image": (3, H, W) uint8, "labels": (T,) int64, "masks": (T, H, W) bool}; crowd regions left out.

        key: (epoch, index), or (epoch, index, k) for the k-th repeat of an image in an epoch.
        """
        index = key[1]
        rng = np.random.default_rng([self.seed, *key])
        sample = self.augmentation(self.dataset[index], rng)
        keep = ~np.asarray(sample["is_crowd"], dtype=bool)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1),
            "labels": torch.from_numpy(np.asarray(sample["classes"], dtype=np.int64)[keep]),
            "masks": torch.from_numpy(np.ascontiguousarray(sample["masks"][keep])),
        }


class PaddedBatchCollator:
    """List of samples -> (images (B, 3, H, W) float 0..255, targets [{"labels", "masks" (T, H, W)}]).

    Args:
        size_divisibility: the padded size is a multiple of this.
        pixel_mean: RGB value of padded image pixels.
    """

    def __init__(self, size_divisibility: int, pixel_mean: list[float]) -> None:
        self.size_divisibility = size_divisibility
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, samples: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        largest = (max(s["image"].shape[1] for s in samples), max(s["image"].shape[2] for s in samples))
        height, width = padded_size(largest, self.size_divisibility)
        images = self.pixel_mean.expand(3, height, width).repeat(len(samples), 1, 1, 1)  # (B, 3, H, W)
        targets = []
        for b, sample in enumerate(samples):
            _, h, w = sample["image"].shape
            images[b, :, :h, :w] = sample["image"].float()
            masks = torch.zeros(sample["masks"].shape[0], height, width, dtype=torch.bool)
            masks[:, :h, :w] = sample["masks"]
            targets.append({"labels": sample["labels"], "masks": masks})
        return images, targets
