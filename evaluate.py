"""Evaluate a trained DenseDepth model on the Eigen test split, or predict the depth of a picture.

Evaluation on the Eigen test zip (nyu_test.zip) by the DenseDepth protocol:
    python evaluate.py --model checkpoints/last.pth --data nyu_test.zip
Depth of a picture, as a colour map and as a 16-bit PNG in millimetres:
    python evaluate.py --model checkpoints/last.pth --img photo.jpg --output_dir results

The protocol: each picture is resized to the network's input size (the one it
was trained at, stored in the checkpoint), predicted together with its mirror
image, both converted to metres (clipped to [0.1, 10] m), upsampled to the
ground truth's size and averaged; the metrics are taken inside the Eigen crop
over ground-truth pixels that are finite and > 0.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from data import EigenTestZip, encode_picture, scaled_eigen_crop
from metrics import AGGREGATIONS, DepthMetrics, crop, format_table
from model import SIZE_MULTIPLE, model_from_checkpoint, predict_depth_m
from utils import (
    PRECISIONS,
    UserError,
    atomic_write,
    autocast,
    choose_device,
    choose_precision,
    colorize_depth,
    load_checkpoint,
    precision_name,
    run_main,
    writable_dir,
)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Evaluation of depth estimation model on either test data/own images")
    parser.add_argument("--model", required=True, help="Model checkpoint path")
    parser.add_argument("--data", help="Test data zip path (if evaluation on test data)")
    parser.add_argument("--img", help="Image path (if evaluation on a single image)")
    parser.add_argument("--batch_size", type=int, default=4, help="Batch size to process the test data")
    parser.add_argument("--output_dir", default="results", help="Directory to save output depth images")
    parser.add_argument(
        "--device", default="auto", help="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ..."
    )
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        default="per_image",
        help="how the printed table averages: per image then over images (default, as the paper's "
        "figures), or all pixels pooled (as DenseDepth's code); both are saved in the JSON",
    )
    parser.add_argument(
        "--no_flip",
        dest="flip",
        action="store_false",
        help="skip the mirror-image averaging of the protocol (twice as fast, slightly worse)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast precision; 'auto': bf16 where the GPU or CPU has it natively, fp16 on older GPUs, "
        "else fp32; metrics are computed in fp32 either way",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (worth it on CUDA for large test sets)"
    )
    return parser


def load_model(path, device):
    """The model stored in a checkpoint, in eval mode and channels_last on `device`, and its training input size."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path)
    return model.to(device, memory_format=torch.channels_last).eval(), tuple(checkpoint["config"]["input_size"])


def evaluate_protocol(
    model, batches, input_size, crop_box, device, dtype=torch.float32, flip=True, total=None, desc="evaluating"
):
    """Run the evaluation protocol over (images (B, 3, H, W) uint8 or in [0, 1], depth_m (B, 1, H, W)) batches.

    The network runs under autocast to `dtype`; the metrics are computed in fp32 and
    streamed, so memory does not grow with the number of images. crop_box None means
    the Eigen crop scaled to the ground truth's size.
    """
    metrics = DepthMetrics()
    model.eval()
    with torch.inference_mode():
        for images, depth_m in tqdm(batches, total=total, desc=desc, unit="batch", leave=False):
            images, depth_m = images.to(device, non_blocking=True), depth_m.to(device, non_blocking=True)
            with autocast(device, dtype):
                pred_m = predict_depth_m(model, images, input_size, depth_m.shape[-2:], flip)
            box = crop_box or scaled_eigen_crop(*depth_m.shape[-2:])
            metrics.update(crop(pred_m, box), crop(depth_m, box))
    return metrics


def eigen_batches(test_set, batch_size):
    """Batches of the Eigen test zip as tensors: images (B, 3, H, W) uint8, depth (B, 1, H, W) in metres."""
    for rgb, depth_m in test_set.batches(batch_size):
        yield torch.from_numpy(rgb).permute(0, 3, 1, 2), torch.from_numpy(depth_m)[:, None]


def evaluate_zip(model, input_size, args, device, dtype):
    test_set = EigenTestZip(args.data)
    batches = eigen_batches(test_set, args.batch_size)
    total = math.ceil(len(test_set) / args.batch_size)
    metrics = evaluate_protocol(model, batches, input_size, test_set.crop, device, dtype, args.flip, total=total)
    summary = metrics.summary()
    print(
        f"{summary['num_images']} images, Eigen crop {list(test_set.crop)}, "
        f"{'with' if args.flip else 'without'} flip averaging, {args.aggregation.replace('_', '-')} aggregation, "
        f"{precision_name(dtype)} on {device}:"
    )
    print(format_table(summary[args.aggregation]))
    if summary["num_invalid_pixels"]:
        left_out = summary["num_invalid_pixels"]
        print(f"{left_out} ground-truth pixels inside the crop were not finite and > 0 and were left out")
    report = {
        "model": str(args.model),
        "data": str(args.data),
        "crop": list(test_set.crop),
        "flip": args.flip,
        "precision": precision_name(dtype),
        "input_size": list(input_size),
        **summary,
    }
    path = Path(args.output_dir) / "metrics.json"
    with atomic_write(path) as file:
        file.write(json.dumps(report, indent=2).encode())
    print(f"metrics saved to {path}")


def load_picture(path):
    """A picture as a (1, 3, H, W) uint8 tensor, upright (EXIF orientation applied).

    Any mode becomes RGB: grayscale is repeated, alpha dropped, palette and CMYK
    converted, and 16-bit or float grayscale scaled to 8 bits (PIL would clip it).
    """
    try:
        with Image.open(path) as picture:
            rgb = rgb_array(ImageOps.exif_transpose(picture))
    except FileNotFoundError as err:
        raise UserError(f"--img {path} does not exist") from err
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(f"--img {path} is not a picture that can be read ({err})") from err
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def rgb_array(picture):
    """A PIL picture of any mode as an (H, W, 3) uint8 array."""
    if picture.mode.startswith("I") or picture.mode == "F":
        values = np.asarray(picture, dtype=np.float32)
        full_scale = 65535.0 if picture.mode.startswith("I") else max(1.0, float(values.max()))
        gray = np.clip(np.rint(values / full_scale * 255), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.array(picture.convert("RGB"))


def network_size(picture_size, trained_size):
    """An input size with the picture's aspect ratio, about the trained area, sides multiples of 32."""
    scale = math.sqrt(trained_size[0] * trained_size[1] / (picture_size[0] * picture_size[1]))
    return tuple(max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in picture_size)


def save_png(array, path):
    with atomic_write(path) as file:
        file.write(encode_picture(array, "PNG"))


def predict_picture(model, input_size, args, device, dtype):
    image = load_picture(args.img).to(device)
    picture_size = tuple(image.shape[-2:])
    with torch.inference_mode(), autocast(device, dtype):
        depth_m = predict_depth_m(model, image, network_size(picture_size, input_size), picture_size, args.flip)
    depth_m = depth_m[0, 0].cpu().numpy()
    stem = Path(args.output_dir) / Path(args.img).stem
    color_path, mm_path = stem.with_name(stem.name + "_depth.png"), stem.with_name(stem.name + "_depth_mm.png")
    save_png(colorize_depth(depth_m), color_path)
    save_png(np.rint(depth_m * 1000).astype(np.uint16), mm_path)
    print(
        f"depth {depth_m.min():.2f}..{depth_m.max():.2f} m; wrote {color_path} (plasma colour map, near = dark) "
        f"and {mm_path} (16-bit PNG, millimetres)"
    )


def main(args):
    if (args.data is None) == (args.img is None):
        raise UserError("give exactly one of --data (a test zip) and --img (a picture)")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    writable_dir(args.output_dir, "--output_dir")
    device = choose_device(args.device)
    dtype = choose_precision(args.precision, device)
    model, input_size = load_model(args.model, device)
    if args.compile:
        model = torch.compile(model)
    if args.data is not None:
        evaluate_zip(model, input_size, args, device, dtype)
    else:
        predict_picture(model, input_size, args, device, dtype)


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
