"""What a `weights` setting names: a file, an official checkpoint pulled into the zoo cache, the model's default
weights, or random weights on explicit request.

    ''          the model's default weights: pem_stdc1 has the demo checkpoint (trained on synthetic
                scenes, so a warning says so and how to get a real model); other models have none
    random      random weights (tests, timing): only when asked for by name
    zoo:NAME    the converted official checkpoint in the cache (`ros-seg zoo pull NAME`); never downloads
    FILE        a ros_seg checkpoint, or the .onnx / .engine export of one
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ros_seg.inference.model_zoo import zoo_weights
from ros_seg.inference.zoo_catalogue import ZOO_PREFIX, zoo_entry

RANDOM_WEIGHTS = "random"
DEMO_MODEL = "pem_stdc1"
DEMO_CHECKPOINT = Path("models") / "pem_stdc1_synth.pt"
REAL_MODEL_HINT = ("for a real model run `ros-seg zoo pull m2f_r50_cityscapes_panoptic` and start with "
                   "model:=m2f_r50 weights:=zoo:m2f_r50_cityscapes_panoptic")


def demo_checkpoint() -> Path | None:
    """The demo checkpoint: in the source checkout, else in share/ros_seg/ of a ROS 2 install on AMENT_PREFIX_PATH
    (CMakeLists.txt installs it there). A pip-installed wheel does not carry it (16.6 MiB of weights)."""
    checkout = Path(__file__).resolve().parents[2]
    prefixes = [Path(p) / "share" / "ros_seg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for root in [checkout, *prefixes]:
        if (root / DEMO_CHECKPOINT).is_file():
            return root / DEMO_CHECKPOINT
    return None


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights setting resolved: the file to load (None: random weights), and a warning to show, if any."""

    path: Path | None
    warning: str | None = None


def resolve_weights(weights: str, model: str) -> ResolvedWeights:
    """The file `weights` names for `model` (a model name, '' for the checkpoint's own); ValueError saying
    what is wrong and what to set otherwise."""
    if weights == RANDOM_WEIGHTS:
        return ResolvedWeights(None)
    if weights.startswith(ZOO_PREFIX):
        entry = zoo_entry(weights)
        if model and not model.endswith((".yaml", ".yml")) and model != entry.model:
            raise ValueError(f"zoo model {entry.name!r} is a {entry.model} checkpoint, but model {model!r} was "
                             f"requested: set model to {entry.model!r} (or '')")
        return ResolvedWeights(zoo_weights(entry.name))
    if weights:
        return ResolvedWeights(Path(weights))
    if model != DEMO_MODEL:
        raise ValueError(f"model {model!r} has no default weights: give a checkpoint file, zoo:NAME (an official "
                         f"checkpoint, see `ros-seg zoo list`), or {RANDOM_WEIGHTS!r} for random weights "
                         "(tests and timing only)")
    demo = demo_checkpoint()
    if demo is None:
        raise ValueError(f"the demo checkpoint ({DEMO_CHECKPOINT}), the default weights of {DEMO_MODEL}, is not "
                         "installed here (share/ros_seg/models of the ROS 2 package; the pip wheel leaves it out): "
                         f"give weights, or {RANDOM_WEIGHTS!r} for random weights")
    return ResolvedWeights(demo, f"no weights given: running the demo checkpoint {demo}, {DEMO_MODEL} trained on "
                                 "synthetic scenes only, whose outputs on real camera images mean little; "
                                 f"{REAL_MODEL_HINT}")
