"""`ros-seg describe`: parameters and GMACs of a model at an input size."""
from __future__ import annotations

import argparse

from ros_seg.cli.arguments import add_json_argument, image_size, write_json
from ros_seg.models.complexity import count_gmacs, count_parameters
from ros_seg.models.registry import build_model, load_model_config

# Figures published for the models (params in millions, GMACs at 1024x2048 unless the key names a size).
PUBLISHED = {
    "pem_r50": {"params_m": 35.6, "params_m_authors_code": 35.53, "gmacs": 237.0, "source": "PEM paper, Table 1/2"},
    "pem_stdc2": {"params_m": 21.0, "params_m_authors_code": 20.99, "source": "PEM paper"},
    "pem_stdc1": {"params_m": 17.0, "params_m_authors_code": 16.96, "source": "PEM paper"},
    "m2f_r50": {
        "params_m": 44.0,
        "gmacs": 524.1,
        "encoder_gmacs": 291.0,
        "source": "params: PEM paper, Tables 1-2 (Mask2Former R50); GMACs: PRO-SCALE paper, Table 2",
    },
    "proscale_r50_111": {"gmacs": 298.1, "encoder_gmacs": 65.21, "source": "PRO-SCALE paper, Table 2"},
    "proscale_r50_222": {"gmacs": 338.2, "encoder_gmacs": 105.0, "source": "PRO-SCALE paper, Table 2"},
    "proscale_r50_333": {"gmacs": 378.3, "encoder_gmacs": 145.0, "source": "PRO-SCALE paper, Table 2"},
    "panoptic_segformer_r50_coco": {
        "params_m": 47.0,
        "gmacs_800x1200": 246.0,
        "source": "Panoptic SegFormer paper (arXiv v1), Tables 1 and 4: COCO, R50, FLOPs at 1200x800; its "
        "single 4-layer mask decoder, where ours has the authors' decoupled thing (4) and stuff (6) decoders",
    },
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="parameters and GMACs of a model",
        description="Count a model's parameters and multiply-adds (GMACs, fvcore convention: one "
        "multiply-add = one 'FLOP' of the papers) at an input size, without running it. "
        "`gmacs` counts every decoder layer's prediction at mask resolution as the papers do; "
        "`gmacs_inference` counts what ros_seg's inference runs (earlier predictions only at "
        "attention-mask resolution).",
    )
    p.add_argument("--model", required=True, help="model name (e.g. pem_r50) or config file")
    p.add_argument("--size", type=image_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    add_json_argument(p)
    p.set_defaults(func=run)


def describe(model_name: str, size: tuple[int, int]) -> dict:
    config = load_model_config(model_name)
    model, metadata = build_model(config)
    full = count_gmacs(model, size, all_predictions=True)
    inference = count_gmacs(model, size, all_predictions=False)
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    result = {
        "model": config.name,
        "size": list(size),
        "num_classes": metadata.num_classes,
        "params": count_parameters(model),
        "params_by_part": parts,
        "gmacs": round(full.pop("total"), 3),
        "gmacs_by_part": {k: round(v, 3) for k, v in full.items()},
        "gmacs_inference": round(inference["total"], 3),
    }
    if config.name in PUBLISHED:
        result["published"] = PUBLISHED[config.name]
    return result


def run(args: argparse.Namespace) -> int:
    result = describe(args.model, args.size)
    if args.json is not None:
        write_json(result, args.json)
        return 0
    h, w = result["size"]
    print(f"{result['model']}  ({result['num_classes']} classes, input {h}x{w})")
    print(f"  params           {result['params'] / 1e6:9.3f} M")
    for name, n in result["params_by_part"].items():
        print(f"    {name:<22} {n / 1e6:9.3f} M")
    print(f"  GMACs            {result['gmacs']:9.1f}   (all decoder predictions at mask resolution, as papers count)")
    for name, g in result["gmacs_by_part"].items():
        print(f"    {name:<22} {g:9.1f}")
    print(f"  GMACs inference  {result['gmacs_inference']:9.1f}   (what ros_seg inference runs)")
    if "published" in result:
        print(f"  published        {result['published']}")
    return 0
