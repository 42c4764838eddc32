"""Export a trained model for deployment: ONNX or TorchScript, and an INT8 ONNX for CPUs.

    python export.py --model checkpoints/last.pth --format onnx --output densedepth.onnx
    python export.py --model nyu.h5 --format torchscript --output densedepth.pt
    python export.py --model checkpoints/last.pth --format onnx --output densedepth.onnx --int8 \\
        --calibration data/sample/nyu_test.zip

The file is one network from pictures to metres (densedepth/deploy.py): input "image" (N, 3, H, W)
RGB uint8 (or float in [0, 1] with --input float), any N, H and W; output "depth_m"
(N, 1, H, W) in metres. Nothing of this repository is needed to run it: onnxruntime (or
any ONNX runtime) for the .onnx, torch.jit.load for the .pt. Each export is checked
against PyTorch at the model's training size and at a size that is not a multiple of
32. --int8 adds NAME.int8.onnx, statically quantised with onnxruntime's tools and
calibrated on --calibration's pictures.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from densedepth.deploy import (
    INT8_CHECK_COUNT,
    DepthInMetres,
    calibration_pictures,
    calibration_split,
    example_input,
    export_onnx,
    export_torchscript,
    load_exported,
    metadata,
    quantize_int8,
)
from densedepth.weights import load_weights
from model import model_from_checkpoint
from utils import UserError, run_main, writable_dir


def get_args_parser():
    parser = argparse.ArgumentParser(description="Export a DenseDepth model to ONNX or TorchScript")
    parser.add_argument(
        "--model", required=True, help="a checkpoint of this project, or the authors' nyu.h5 / kitti.h5"
    )
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="what to write")
    parser.add_argument("--output", required=True, help="the file to write, e.g. densedepth.onnx or densedepth.pt")
    parser.add_argument(
        "--input", choices=("uint8", "float"), default="uint8", help="the pictures' type: uint8 0..255 or float [0, 1]"
    )
    parser.add_argument("--int8", action="store_true", help="also write an INT8 ONNX (OUTPUT's name + .int8.onnx)")
    parser.add_argument(
        "--calibration",
        help="pictures for --int8's calibration, like the ones the model will see: an Eigen test zip, or a folder of "
        "pictures (4 more than --calibration_count are read: the last 4 check INT8 against fp32)",
    )
    parser.add_argument("--calibration_count", type=int, default=16, help="how many calibration pictures")
    return parser


def check_args(args):
    if args.int8 and args.format != "onnx":
        raise UserError("--int8 quantises an ONNX model: give --format onnx")
    if args.calibration_count < 1:
        raise UserError(f"--calibration_count must be at least 1, got {args.calibration_count}")
    if args.int8 and args.calibration is None:
        raise UserError("--int8 calibrates on pictures like the ones the model will see: give --calibration (an Eigen "
                        "test zip or a folder of pictures)")  # fmt: skip


def check_export(module, path, file_format, input_size, uint8_input):
    """The exported file against PyTorch at the training size and an odd size; returns the largest
    relative difference seen."""
    height, width = input_size
    worst = 0.0
    run = load_exported(path, file_format)
    for size in ((height, width), (max(33, height - 13), width + 19)):
        pictures = example_input(size, uint8_input, batch=2, seed=1)
        with torch.no_grad():
            expected, got = module(pictures).numpy(), run(pictures)
        if got.shape != expected.shape:
            raise UserError(f"{path} gives depth of shape {got.shape} at {size}, PyTorch {expected.shape}")
        difference = float(np.abs(got - expected).max() / np.abs(expected).max())
        print(f"  {size[0]}x{size[1]}, batch 2: max |difference| / max depth = {difference:.1e}")
        worst = max(worst, difference)
    if worst > 1e-3:
        raise UserError(f"{path} does not give PyTorch's depth (relative difference {worst:.1e}); it is not usable")
    return worst


def write_int8(args, module, input_size, uint8_input):
    int8_path = Path(args.output).with_suffix(".int8.onnx")
    pictures = calibration_pictures(
        args.calibration, args.calibration_count + INT8_CHECK_COUNT, input_size, uint8_input
    )
    calibration, others = calibration_split(pictures, args.calibration_count)
    check = others or calibration[:INT8_CHECK_COUNT]
    compared = f"{len(check)} pictures besides the calibration ones" if others else "the calibration pictures"
    print(f"quantising to INT8, calibrated on {len(calibration)} pictures of {args.calibration} ...")
    with tempfile.TemporaryDirectory(dir=int8_path.parent) as scratch:
        partial = Path(scratch) / int8_path.name
        quantize_int8(Path(args.output), partial, calibration)
        run_fp32, run_int8 = load_exported(args.output, "onnx"), load_exported(partial, "onnx")
        fp32 = np.concatenate([run_fp32(picture) for picture in check])
        int8 = np.concatenate([run_int8(picture) for picture in check])
        partial.replace(int8_path)
    difference = float(np.median(np.abs(int8 - fp32) / fp32))
    print(f"wrote {int8_path}: median |INT8 - fp32| / fp32 on {compared} = {difference:.3f}")


def main(args):
    check_args(args)
    output = Path(args.output)
    writable_dir(output.parent, "--output's folder")
    checkpoint = load_weights(args.model)
    model = model_from_checkpoint(checkpoint, args.model).eval()
    input_size = tuple(checkpoint["config"]["input_size"])
    uint8_input = args.input == "uint8"
    module = DepthInMetres(model, uint8_input).eval()
    meta = metadata(checkpoint["config"], uint8_input, args.model)
    example = example_input(input_size, uint8_input)
    print(
        f"exporting {args.model} to {args.format} (input {args.input}, traced at {input_size[0]}x{input_size[1]}) ..."
    )
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:  # whole or not at all
        partial = Path(scratch) / output.name
        export = export_onnx if args.format == "onnx" else export_torchscript
        export(module, partial, example, meta)
        check_export(module, partial, args.format, input_size, uint8_input)
        partial.replace(output)
    print(f"wrote {output}: {meta['input']} -> {meta['output']}")
    if args.int8:
        write_int8(args, module, input_size, uint8_input)


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
