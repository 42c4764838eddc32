"""Fill sparse depth (KITTI's LiDAR) with the NYU Depth v2 toolbox's colorization, as the DenseDepth
authors filled KITTI's training depth for kitti.h5 (they never published the result).

KITTI's lists, as train.py reads them (docs/kitti.md), or a CSV of pairs / a folder of one's own:
    python fill_depth.py --data eigen_train_files_with_gt.txt --kitti_raw kitti_raw \\
        --kitti_depth data_depth_annotated --output_dir kitti_filled
    python fill_depth.py --data pairs.csv --depth_scale 256 --output_dir filled --size half --shard 0/8
then train on the filled depth, the authors' KITTI recipe:
    python train.py --data_dir kitti_filled/filled.csv --depth_scale 256 --min_depth 1 --max_depth 80 \\
        --input_size 384 1248 --batch_size 8 --checkpoint_dir runs/kitti_filled --epochs 10

Each pair's filled depth is written as a 16-bit PNG (metres x 256, KITTI's convention) at the
picture's size, in a mirror of the input tree under --output_dir, and OUT/filled.csv lists
rgb_path,filled_depth_path (relative to it) for every pair filled so far. A finished file is never
redone and a killed run leaves no half-written file, so the same command resumes; --shard I/N
(I from 0) takes every N-th pair from the I-th, for an array job over N machines (run once more
without --shard at the end to list them all: nothing is redone). --method linear interpolates linearly
inside the measured points' hull instead (docs/kitti.md compares the two). Pairs that cannot be filled (no
measured pixel, a picture and depth of two sizes, an unreadable file) are skipped and listed at the end.
"""

import argparse
import functools
import multiprocessing
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from data import DEPTH_SCALE_HELP, DecodeError, NYUDepthDataset, encode_depth_file, open_rgbd_pairs
from densedepth.fill import FILL_METHODS, fill_pair
from densedepth.kitti import KittiDataset, add_kitti_arguments
from densedepth.sources import KITTI_LIST, PAIRS, check_data_flags, data_kind
from utils import UserError, run_main, writable_dir, write_bytes

OUTPUT_SCALE = 256  # metres x 256 in uint16, KITTI's own convention (to 256 m)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Fill sparse depth with the NYU toolbox's colorization")
    parser.add_argument(
        "--data",
        required=True,
        help="the pairs: a KITTI split list (with --kitti_raw), a CSV or an rgb/ + depth/ folder",
    )
    parser.add_argument("--output_dir", required=True, help="where the filled depth and filled.csv are written")
    parser.add_argument("--depth_scale", type=float, help=DEPTH_SCALE_HELP)
    add_kitti_arguments(parser.add_argument_group("with --data a KITTI split list (docs/kitti.md)"))
    parser.add_argument(
        "--size",
        choices=("full", "half"),
        default="full",
        help="solve at the picture's size (the toolbox's) or at half of it, the network's target size, about "
        "ten times faster; the result is written at the picture's size either way (default %(default)s)",
    )
    parser.add_argument(
        "--method",
        choices=sorted(FILL_METHODS),
        default="colorization",
        help="colorization: the toolbox's, the authors' recipe; linear: linear interpolation inside the "
        "measured points' hull, colorization outside it, closer to the truth on rendered rooms (docs/kitti.md)",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of a measured pixel (the toolbox's 1)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="processes filling pictures (default: all cores)"
    )
    parser.add_argument("--shard", default="0/1", help="I/N: fill every N-th pair from the I-th (I from 0)")
    return parser


# ----------------------------------------------------------------------------- the pairs and their outputs


def open_pairs(args):
    """(dataset, [(rgb path, output name)]) of --data, a KITTI list or a dataset of one's own; each
    output name is a relative path, inside --output_dir, and no two pairs share one (output_names)."""
    kind = data_kind(args.data)
    check_data_flags(args, kind, "--data", ("kitti_raw", "kitti_depth", "velodyne_depth", "depth_scale"))
    if kind == KITTI_LIST:
        dataset = KittiDataset(args.data, args.kitti_raw, args.kitti_depth, velodyne_depth=args.velodyne_depth or
                               "velodyne")  # fmt: skip
        if dataset.num_without_gt:
            print(f"{args.data}: {dataset.describe_without_gt()}, left out")
        return dataset, list(zip(dataset.images, kitti_output_names(dataset)))
    if kind != PAIRS:
        raise UserError(
            f"--data {args.data} is neither a KITTI split list, a CSV of pairs nor a folder with rgb/ and depth/"
        )
    archive, pairs = open_rgbd_pairs(args.data, "--data")
    dataset = NYUDepthDataset(archive, pairs, augment=False, png_scale=args.depth_scale)
    names = output_names([archive.path / depth for _, depth in pairs], archive.path)
    return dataset, list(zip([archive.path / rgb for rgb, _ in pairs], names))


def kitti_output_names(dataset):
    """Output names of a KITTI list's frames: the annotated depth's own path (under --kitti_depth's
    train/ or val/), or, filled from the Velodyne, DATE/DRIVE/proj_depth/filled/image_0C/N.png: one for
    each camera, as the left and right pictures of one scan differ."""
    if dataset.annotated is not None:
        return [Path(depth).relative_to(dataset.annotated) for depth in dataset.depth_files]
    return [Path(frame.date, frame.drive, "proj_depth", "filled", f"image_0{frame.camera}", f"{frame.frame:010d}.png")
            for frame in dataset.frames]  # fmt: skip


def output_names(depth_paths, root):
    """Output names (relative paths, .png) for depth files: their paths relative to `root` (the CSV's
    folder) when all lie inside it, else relative to the deepest folder holding them all, so every
    output stays inside --output_dir, whatever the CSV's paths (absolute, ../); two depth files whose
    names would meet (a.npy and a.png) stop the run."""
    root, paths = absolute(root), [absolute(path) for path in depth_paths]
    base = root if all(root in path.parents for path in paths) else Path(os.path.commonpath(paths))
    if base in paths:  # a single file: its folder
        base = base.parent
    names, first = [], {}
    for path in paths:
        name = path.relative_to(base).with_suffix(".png")
        if first.setdefault(name, path) != path:
            raise UserError(f"{first[name]} and {path} would both be filled into {name}; rename one of them")
        names.append(name)
    return names


def parse_shard(text):
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise UserError(f"--shard {text} is not I/N (two whole numbers, I from 0 to N - 1)") from err
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: I must be from 0 to N - 1")
    return index, count


class Filler:
    """Fills pair `index` of the dataset and writes it: None, or why it could not."""

    def __init__(self, dataset, outputs, out_dir, fill):
        self.dataset, self.outputs, self.out_dir, self.fill = dataset, outputs, out_dir, fill

    def __call__(self, index):
        try:
            image, depth_m = self.dataset.load_pair(index)
            filled = self.fill(image, depth_m)
        except (DecodeError, ValueError) as err:
            return index, f"{self.dataset.pairs[index][1]}: {err}"
        write_bytes(self.out_dir / self.outputs[index][1], encode_depth_file(filled, "png16", OUTPUT_SCALE))
        return index, None


# A worker process's Filler, set once by start_worker: the tasks sent to it are pair indices alone, not
# the dataset (10 MB for KITTI's 23,158 training frames) with every task.
_worker_filler = None


def start_worker(filler):
    """A worker process's start: its Filler, and one torch thread (one process a core; not set in the
    calling process, whose other work keeps its threads)."""
    global _worker_filler
    _worker_filler = filler
    torch.set_num_threads(1)


def fill_in_worker(index):
    """A pool task: fill pair `index` with the worker's Filler."""
    return _worker_filler(index)


def check_outputs_apart_from_inputs(dataset, outputs, out_dir):
    """Stop if an output would overwrite one of the pairs' files (--output_dir the data's own folder)."""
    root = dataset.archive.path if isinstance(dataset, NYUDepthDataset) else Path()
    inputs = {absolute(root / name) for pair in dataset.pairs for name in pair}
    for _, name in outputs:
        if absolute(out_dir / name) in inputs:
            raise UserError(f"--output_dir {out_dir} would overwrite the input {out_dir / name}; give another folder")


def absolute(path):
    """A path made absolute and normalised (no '..'), for comparing where files are."""
    return Path(os.path.normpath(Path(path).absolute()))


def write_list(out_dir, outputs):
    """OUT/filled.csv: rgb_path,filled_depth_path (relative to OUT) of every pair whose filled depth is there."""
    lines = [
        f"{os.path.relpath(rgb, out_dir)},{name.as_posix()}\n" for rgb, name in outputs if (out_dir / name).is_file()
    ]
    write_bytes(out_dir / "filled.csv", "".join(lines).encode())
    return len(lines)


def main(args):
    shard, shards = parse_shard(args.shard)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    out_dir = writable_dir(args.output_dir, "--output_dir").resolve()
    dataset, outputs = open_pairs(args)
    check_outputs_apart_from_inputs(dataset, outputs, out_dir)
    todo = [i for i in range(shard, len(outputs), shards) if not (out_dir / outputs[i][1]).is_file()]
    mine = len(range(shard, len(outputs), shards))
    print(f"{args.data}: {len(outputs)} pairs, {mine} in this shard, {mine - len(todo)} filled already, "
          f"{len(todo)} to fill by {args.method} at {args.size} size with {args.workers} process(es)")  # fmt: skip
    fill = functools.partial(fill_pair, size=args.size, alpha=args.alpha, method=args.method)
    filler = Filler(dataset, outputs, out_dir, fill)
    skipped = []
    bar = tqdm(total=len(todo), unit="frame", desc="filling")
    pool = None
    try:
        if args.workers == 1 or len(todo) < 2:
            results = map(filler, todo)
        else:
            processes = min(args.workers, len(todo))
            pool = multiprocessing.get_context("spawn").Pool(processes, initializer=start_worker, initargs=(filler,))
            results = pool.imap_unordered(fill_in_worker, todo)
        for _, why in results:
            if why is not None:
                skipped.append(why)
                tqdm.write(f"skipped {why}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
        listed = write_list(out_dir, outputs)
    print(f"{out_dir / 'filled.csv'} lists {listed} pairs; train with --data_dir {out_dir / 'filled.csv'} "
          f"--depth_scale {OUTPUT_SCALE}")  # fmt: skip
    if skipped:
        raise UserError(f"{len(skipped)} pairs could not be filled (listed above); the others were written")


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
