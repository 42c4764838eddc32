"""The constant-depth baseline: predict the training set's mean depth at every pixel.

    python -m scripts.constant_baseline --train_data data/sample/nyu_data.zip --data data/sample/nyu_test.zip

Scores it on an Eigen test zip with the same crop and metrics as evaluate.py.
A model that has learnt anything must beat it clearly; the quick start prints both.
"""

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from data import TRAIN_CSV, DecodeError, EigenTestZip, decode_depth_png, open_training_data, read_pairs
from densedepth.protocol import crop
from metrics import DepthMetrics, format_table
from utils import UserError, run_main, write_bytes


def get_args_parser():
    parser = argparse.ArgumentParser(description="Score a constant prediction: the training set's mean depth")
    parser.add_argument("--train_data", required=True, help="training zip (or directory) whose mean depth is used")
    parser.add_argument("--data", required=True, help="Eigen test zip to score on")
    parser.add_argument("--output_dir", help="also save the figures as baseline_metrics.json here")
    return parser


def mean_depth_m(archive):
    """Mean depth in metres over every pixel of every training depth map."""
    total, count = 0.0, 0
    for _, depth_name in tqdm(read_pairs(archive, TRAIN_CSV), desc="training depth", unit="map", leave=False):
        try:
            depth_m = decode_depth_png(archive.read(depth_name))
        except DecodeError as err:
            raise UserError(f"{depth_name} {err}") from err
        total += float(depth_m.double().sum())
        count += depth_m.numel()
    return total / count


def main(args):
    constant_m = mean_depth_m(open_training_data(args.train_data))
    test_set = EigenTestZip(args.data)
    metrics = DepthMetrics()
    for _, depth_m in test_set.batches(16):
        gt_m = crop(torch.from_numpy(depth_m), test_set.crop)
        metrics.update(torch.full_like(gt_m, constant_m), gt_m)
    summary = metrics.summary()
    images = summary["num_images"]
    print(f"constant depth {constant_m:.3f} m (the training set's mean) on {images} test images, per image:")
    print(format_table(summary["per_image"]))
    if args.output_dir:
        report = {"constant_depth_m": constant_m, **summary}
        write_bytes(Path(args.output_dir) / "baseline_metrics.json", json.dumps(report, indent=2).encode())


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
