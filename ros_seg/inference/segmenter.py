"""The Segmenter: one camera image in, semantic map, panoptic map and segments out.

It serves the ROS node, replay, evaluation and benchmarks alike:

    seg = Segmenter(model="pem_stdc1", weights="pem_stdc1.pt", device="auto")
    result = seg.segment(image, encoding="rgb8")   # (H, W, 3) uint8

The model runs on one of three backends (see
:mod:`ros_seg.inference.backends.selection`): "torch" (eager PyTorch),
"onnxruntime" (an ONNX export; CPU, or CUDA with onnxruntime-gpu) or
"tensorrt" (an engine; NVIDIA GPUs). Fixed-size ONNX exports and TensorRT
engines take one input size: the Segmenter then resizes every image to it
(`input_size` defaults to that size and must not differ from it), and with
output_resolution "input" the label maps are resized back to the image size.

Pre-processing (channel order, optional resize to a network size) and
post-processing (the model family's semantic and panoptic merge with its resize
to the input size, segment statistics) run on the model's device; results come
back in one copy per map. The merge thresholds default to the model config's
and may be chosen per image (`segment(..., options=PostprocessOptions(...))`).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ros_seg.inference.backends.selection import BACKENDS, open_backend
from ros_seg.inference.backends.torch_backend import PRECISIONS
from ros_seg.inference.image_input import check_image, image_to_tensor
from ros_seg.inference.result import Segment, SegmentationResult
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.families import model_family
from ros_seg.models.meta_architecture import PostprocessOptions
from ros_seg.models.postprocess.label_maps import PanopticOutput, segment_statistics
from ros_seg.models.size_divisibility import padded_size

__all__ = ["BACKENDS", "OUTPUT_RESOLUTIONS", "Segmenter", "resolve_device"]

OUTPUT_RESOLUTIONS = ("input", "network")


def resolve_device(device: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with a clear error if unavailable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available: use 'cpu' or 'auto'")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(device)
    raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


class Segmenter:
    """Segments images with a model of any family (ros_seg.models.families), post-processed by its family.

    Args:
        model: model name (e.g. "pem_stdc1") or config path; may be None when weights are given.
        weights: ros_seg checkpoint, or for the onnxruntime/tensorrt backends an exported .onnx
            (or .engine) file; None gives random weights (speed tests only).
        device: "auto", "cpu", "cuda" or "cuda:N".
        precision: "fp32", "fp16" or "bf16" (autocast).
        backend: inference backend ("torch", "onnxruntime" or "tensorrt").
        input_size: (H, W) the image is resized to before the network; None keeps its size, or
            takes the size a fixed-size export requires.
        output_resolution: "input" (label maps at the image's size) or "network".
        score_threshold: panoptic score threshold (default from the model config).
        overlap_threshold: panoptic overlap threshold (default from the model config).
        semantic_rule: "authors" (Mask2Former's and PEM's semantic maps: mask logits resized, then
            sigmoid; what scores are reported with) or "fast" (class scores resized; see
            ros_seg.models.postprocess.label_maps). The three make up `default_options`; segment()
            may be given other options per image.
        channels_last: NHWC convolutions (torch backend).
        compile_mode: torch backend: "none" (eager) or a torch.compile mode ("default",
            "reduce-overhead" = with CUDA graphs on GPUs, "max-autotune"); compiles on the first image of a size.
    """

    def __init__(
        self,
        model: str | None = "pem_stdc1",
        weights: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        backend: str = "torch",
        input_size: tuple[int, int] | None = None,
        output_resolution: str = "input",
        score_threshold: float | None = None,
        overlap_threshold: float | None = None,
        semantic_rule: str = "authors",
        channels_last: bool = False,
        compile_mode: str = "none",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output_resolution must be one of {OUTPUT_RESOLUTIONS}, got {output_resolution!r}")
        if input_size is not None and (len(input_size) != 2 or min(input_size) <= 0):
            raise ValueError(f"input_size must be (height, width) > 0, got {input_size}")
        self.device = resolve_device(device)
        size = tuple(input_size) if input_size is not None else None
        opened = open_backend(backend, model, weights, self.device, precision, size, channels_last, compile_mode)
        self.config = opened.config
        self.metadata: ClassMetadata = opened.metadata
        self.weights = opened.weights
        self.backend = opened.backend
        self.precision = opened.backend.precision
        if opened.input_size is not None and size is not None and size != opened.input_size:
            raise ValueError(
                f"the {backend} model takes input size {opened.input_size[0]}x{opened.input_size[1]}, "
                f"but input_size {size} was given: drop input_size or export the model at that size (or --dynamic)"
            )
        self.input_size = opened.input_size or size
        self.output_resolution = output_resolution
        self.family = model_family(self.config, self.metadata)
        defaults = self.family.default_options()
        self.default_options = PostprocessOptions(
            defaults.score_threshold if score_threshold is None else score_threshold,
            defaults.overlap_threshold if overlap_threshold is None else overlap_threshold,
            semantic_rule,
        )
        self.family.prepare(self.device)

    @property
    def model_name(self) -> str:
        return self.config.name

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def segment(
        self, image: np.ndarray, encoding: str = "rgb8", options: PostprocessOptions | None = None
    ) -> SegmentationResult:
        """Segment one (H, W, C) uint8 image given in `encoding` (rgb8, bgr8, rgba8, bgra8, mono8), merging
        with `options` (default: `default_options`)."""
        image = check_image(image, encoding)
        t0 = time.perf_counter()
        x = image_to_tensor(image, encoding, self.device, self.input_size)  # (1, 3, H', W')
        in_size = (image.shape[0], image.shape[1])
        net_size = (x.shape[2], x.shape[3])
        padded = padded_size(net_size, self.config.input.size_divisibility)
        self._sync()
        t1 = time.perf_counter()
        class_logits, mask_logits = self.backend.infer(x)
        self._sync()
        t2 = time.perf_counter()
        out_size = in_size if self.output_resolution == "input" else net_size
        semantic, pan = self.family.postprocess(
            class_logits[0], mask_logits[0], net_size, padded, out_size, options or self.default_options
        )
        result = self._to_host(semantic, pan)
        t3 = time.perf_counter()
        result.timings = {
            "preprocess": (t1 - t0) * 1e3,
            "infer": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return result

    def _to_host(self, semantic: torch.Tensor, pan: PanopticOutput) -> SegmentationResult:
        """Label maps and segments from the device, with each segment's statistics."""
        meta = self.metadata
        stats = pan.statistics if pan.statistics is not None else segment_statistics(pan.panoptic, len(pan.classes))
        sem_dtype = torch.uint8 if meta.num_classes <= 255 else torch.int32
        semantic_np = semantic.to(sem_dtype).cpu().numpy()
        if sem_dtype == torch.int32:
            semantic_np = semantic_np.astype(np.uint16)
        panoptic_np = pan.panoptic.cpu().numpy()
        # Every per-segment number in one (S, 9) float64 table: one copy back from an accelerator.
        columns = ("area", "x0", "y0", "x1", "y1", "cx", "cy")
        table = torch.stack([stats[k].double() for k in columns] + [pan.classes.double(), pan.scores.double()], 1)
        rows = table.cpu().tolist()
        host = {k: [row[j] for row in rows] for j, k in enumerate(columns)}
        classes, scores = [int(row[7]) for row in rows], [row[8] for row in rows]
        segments = []
        for i, (cls, score) in enumerate(zip(classes, scores)):
            if host["area"][i] == 0:
                continue
            x0, y0, x1, y1 = (int(host[k][i]) for k in ("x0", "y0", "x1", "y1"))
            segments.append(
                Segment(
                    id=i + 1,
                    class_id=cls,
                    class_name=meta.names[cls],
                    is_thing=meta.is_thing[cls],
                    score=float(score),
                    area=int(host["area"][i]),
                    bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                    centroid=(float(host["cx"][i]), float(host["cy"][i])),
                )
            )
        return SegmentationResult(semantic=semantic_np, panoptic=panoptic_np, segments=segments)
