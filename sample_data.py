"""Built-in sample data: rendered rooms (rendering/scenes.py) written as the two NYU Depth v2 zips.

    python sample_data.py --out data/sample
    python sample_data.py --out data/sample_rgbd --layout folders

The first
writes data/sample/nyu_data.zip (training pairs and the test split, in the
DenseDepth training-zip layout) and data/sample/nyu_test.zip (the same test
pictures in the Eigen test-zip format); data.py describes both formats. The
second writes the same pictures as a dataset of one's own: train/ and test/, each
with rgb/NNNNN.jpg and depth/NNNNN.png (16-bit, millimetres: --depth_scale 1000),
and train.csv / test.csv listing them. Each
room is seen from several camera positions, like NYU's scenes; test rooms are
never training rooms. The output is the same for the same arguments.
"""

import argparse
import math
import multiprocessing
import os
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import (
    EIGEN_CROP,
    EIGEN_DEPTH,
    EIGEN_RGB,
    TEST_CSV,
    TRAIN_CSV,
    encode_depth_file,
    encode_picture,
    encode_test_depth_png,
    encode_train_depth_png,
    write_member,
    write_npy_member,
)
from densedepth.protocol import scaled_eigen_crop
from rendering.scenes import render_scene
from utils import UserError, atomic_write, run_main, write_bytes

# ----------------------------------------------------------------------------- writing the zips


def _render_job(job):
    return render_scene(*job)


def render_all(jobs, workers, desc):
    """Render (seed, split, scene_index, views, width, height) jobs in parallel, yielding results in order."""
    if workers <= 1:
        yield from tqdm(map(_render_job, jobs), total=len(jobs), desc=desc)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from tqdm(pool.imap(_render_job, jobs), total=len(jobs), desc=desc)


def scene_jobs(seed, split, images, views_per_scene, width, height):
    """Rendering jobs for `images` pictures, `views_per_scene` per room (split 0: training, 1: test rooms)."""
    scenes = math.ceil(images / views_per_scene)
    views = [min(views_per_scene, images - i * views_per_scene) for i in range(scenes)]
    return [(seed, split, index, count, width, height) for index, count in enumerate(views)]


def render_test_set(jobs, workers, images, width, height):
    """All test pictures in memory: (rgb (N, H, W, 3) uint8, depth_m (N, H, W) float32)."""
    rgb = np.zeros((images, height, width, 3), dtype=np.uint8)
    depth_m = np.zeros((images, height, width), dtype=np.float32)
    index = 0
    for _, frames in render_all(jobs, workers, "test rooms"):
        for frame_rgb, frame_depth_m in frames:
            rgb[index], depth_m[index] = frame_rgb, frame_depth_m
            index += 1
    return rgb, depth_m


def write_training_zip(path, train_scenes, test_rgb, test_depth_m):
    """nyu_data.zip: JPEG + 8-bit PNG training pairs, PNG + 16-bit mm PNG test pairs, and their CSVs."""
    with atomic_write(path) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        rows = []
        for scene_index, (room_type, frames) in enumerate(train_scenes):
            folder = f"data/nyu2_train/{room_type}_{scene_index:04d}_out"
            for view, (rgb, depth_m) in enumerate(frames, start=1):
                rgb_name, depth_name = f"{folder}/{view}.jpg", f"{folder}/{view}.png"
                write_member(archive, rgb_name, encode_picture(rgb, "JPEG"))
                write_member(archive, depth_name, encode_train_depth_png(depth_m))
                rows.append(f"{rgb_name},{depth_name}\n")
        write_member(archive, TRAIN_CSV, "".join(rows))
        rows = []
        for index, (rgb, depth_m) in enumerate(zip(test_rgb, test_depth_m)):
            rgb_name, depth_name = f"data/nyu2_test/{index:05d}_colors.png", f"data/nyu2_test/{index:05d}_depth.png"
            write_member(archive, rgb_name, encode_picture(rgb, "PNG"))
            write_member(archive, depth_name, encode_test_depth_png(depth_m))
            rows.append(f"{rgb_name},{depth_name}\n")
        write_member(archive, TEST_CSV, "".join(rows))


def write_eigen_zip(path, test_rgb, test_depth_m):
    """nyu_test.zip: the three arrays of the Eigen test zip."""
    crop = np.array(scaled_eigen_crop(*test_rgb.shape[1:3]), dtype=np.int64)
    with atomic_write(path) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        write_npy_member(archive, EIGEN_RGB, test_rgb)
        write_npy_member(archive, EIGEN_DEPTH, test_depth_m)
        write_npy_member(archive, EIGEN_CROP, crop)


def write_rgbd_folder(folder, pairs, depth_kind="png16", png_scale=1000):
    """A dataset of one's own: folder/rgb/NNNNN.jpg, folder/depth/NNNNN.<png|npy|tiff> and folder.csv
    listing them (paths relative to the CSV), from (rgb, depth_m) pairs; returns the CSV's path."""
    folder = Path(folder)
    suffix = {"png16": "png", "png8": "png"}.get(depth_kind, depth_kind)
    rows = []
    for index, (rgb, depth_m) in enumerate(pairs):
        rgb_name, depth_name = f"rgb/{index:05d}.jpg", f"depth/{index:05d}.{suffix}"
        write_bytes(folder / rgb_name, encode_picture(rgb, "JPEG"))
        write_bytes(folder / depth_name, encode_depth_file(depth_m, depth_kind, png_scale))
        rows.append(f"{folder.name}/{rgb_name},{folder.name}/{depth_name}\n")
    csv_path = folder.parent / f"{folder.name}.csv"
    write_bytes(csv_path, "".join(rows).encode())
    return csv_path


def write_sample_data(out_dir, train_images, test_images, width, height, views_per_scene, seed, workers, layout="zips"):
    """Render and write nyu_data.zip, nyu_test.zip and example.png into out_dir and return the zips'
    paths; with layout 'folders', train/ and test/ folders with their CSVs instead, and their CSVs' paths."""
    out_dir = Path(out_dir)
    train_zip, test_zip = out_dir / "nyu_data.zip", out_dir / "nyu_test.zip"
    test_jobs = scene_jobs(seed, 1, test_images, views_per_scene, width, height)
    test_rgb, test_depth_m = render_test_set(test_jobs, workers, test_images, width, height)
    train_jobs = scene_jobs(seed, 0, train_images, views_per_scene, width, height)
    if layout == "folders":
        train_scenes = render_all(train_jobs, workers, "training rooms")
        train_pairs = (frame for _, frames in train_scenes for frame in frames)
        write_bytes(out_dir / "example.png", encode_picture(test_rgb[0], "PNG"))
        return write_rgbd_folder(out_dir / "train", train_pairs), write_rgbd_folder(
            out_dir / "test", zip(test_rgb, test_depth_m)
        )
    write_training_zip(train_zip, render_all(train_jobs, workers, "training rooms"), test_rgb, test_depth_m)
    write_eigen_zip(test_zip, test_rgb, test_depth_m)
    # A test picture on its own, to try prediction on (evaluate.py --img).
    write_bytes(out_dir / "example.png", encode_picture(test_rgb[0], "PNG"))
    return train_zip, test_zip


def get_args_parser():
    parser = argparse.ArgumentParser(description="Render the built-in sample data as NYU Depth v2 zips", add_help=True)
    parser.add_argument("--out", default="data/sample", help="output directory for nyu_data.zip and nyu_test.zip")
    parser.add_argument("--train_images", type=int, default=600, help="number of training pairs")
    parser.add_argument("--test_images", type=int, default=100, help="number of test pairs (654 in NYU)")
    parser.add_argument("--views_per_scene", type=int, default=10, help="camera positions rendered per room")
    parser.add_argument("--width", type=int, default=640, help="picture width in pixels")
    parser.add_argument("--height", type=int, default=480, help="picture height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same data")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    parser.add_argument(
        "--layout",
        choices=("zips", "folders"),
        default="zips",
        help="zips: NYU's nyu_data.zip and nyu_test.zip (default); folders: a dataset of one's own, train/ and "
        "test/ with rgb/ and depth/ (16-bit PNG, millimetres) and a CSV for each",
    )
    return parser


def main(args):
    for flag in ("train_images", "test_images", "views_per_scene", "width", "height", "workers"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    train_path, test_path = write_sample_data(
        args.out,
        args.train_images,
        args.test_images,
        args.width,
        args.height,
        args.views_per_scene,
        args.seed,
        args.workers,
        args.layout,
    )
    print(
        f"wrote {train_path} ({args.train_images} training + {args.test_images} test pairs), {test_path} "
        f"and {Path(args.out) / 'example.png'}"
    )


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
