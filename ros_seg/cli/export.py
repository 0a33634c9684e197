"""`ros-seg export`: a model as an ONNX file (ONNX Runtime) or a TensorRT engine."""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_seg.cli.arguments import image_size, weights_file
from ros_seg.inference.onnx_export import DYNAMIC_TRACE_SIZE, export_onnx
from ros_seg.models.load import load_model

FORMATS = ("onnx", "tensorrt")
DEFAULT_SIZE = (1024, 2048)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or build a TensorRT engine",
        description="Export the whole model (uint8 RGB image (1, 3, H, W) in; class logits (1, Q, K+1) and "
        "mask logits (1, Q, H'/4, W'/4) out, H' and W' padded to /32) as ONNX (opset 19, deformable "
        "convolution as the standard DeformConv, IR version 13 for ONNX Runtime), or build a TensorRT "
        "engine from the TensorRT-flavoured ONNX (deformable attention as the "
        "MultiscaleDeformableAttnPlugin_TRT plugin). A TensorRT export writes FILE (the engine) and the "
        "ONNX it was built from beside it (same name, .onnx); keep them together. The model description "
        "(config, classes, input size) is stored in the ONNX file, so the export alone can segment: "
        "Segmenter(weights=FILE, backend=onnxruntime|tensorrt).",
    )
    p.add_argument("--model", help="model name or config file (optional with --weights)")
    p.add_argument("--weights", type=weights_file,
                   help="ros_seg checkpoint or zoo:NAME (default: random weights, for speed tests only)")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or tensorrt (engine)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="TensorRT engine precision (ONNX exports are fp32; default fp32)",
    )
    p.add_argument(
        "--size",
        type=image_size,
        help=f"input HxW: the size a fixed export takes (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}); "
        "with --dynamic the size traced at and the TensorRT engine's size",
    )
    p.add_argument("--dynamic", action="store_true", help="ONNX graph that accepts any input height and width")
    p.add_argument("--out", required=True, help="output file (.onnx, or .engine for --format tensorrt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model is None and args.weights is None:
        raise ValueError("give --model, --weights or both")
    out = Path(args.out)
    if args.format == "onnx":
        if args.precision != "fp32":
            raise ValueError("ONNX exports are fp32; --precision applies to --format tensorrt engines")
        if out.suffix != ".onnx":
            raise ValueError(f"--out must be an .onnx file for --format onnx, got {out}")
    elif out.suffix != ".engine":
        raise ValueError(f"--out must be an .engine file for --format tensorrt, got {out}")
    size = args.size or (DYNAMIC_TRACE_SIZE if args.dynamic else DEFAULT_SIZE)
    if args.format == "onnx":
        export_onnx(load_model(args.model, args.weights), out, size, args.dynamic, target="onnxruntime")
        print(f"wrote {out} ({'dynamic' if args.dynamic else f'{size[0]}x{size[1]}'} input, ONNX Runtime)")
        return 0
    from ros_seg.inference.tensorrt_engine import build_engine, import_tensorrt

    import_tensorrt()  # fail before the export when TensorRT is missing
    onnx_path = out.with_suffix(".onnx")
    export_onnx(load_model(args.model, args.weights), onnx_path, size, args.dynamic, target="tensorrt")
    build_engine(onnx_path, out, size, args.precision, timing_cache=out.with_suffix(".timing"))
    print(f"wrote {out} ({args.precision}, {size[0]}x{size[1]} input) and {onnx_path}")
    return 0
