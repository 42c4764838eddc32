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
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data import (
    DEPTH_SCALE_HELP,
    DecodeError,
    NYUDepthDataset,
    encode_depth_file,
    is_rgbd_dataset,
    resize,
    resize_measured_depth_m,
)
from densedepth.kitti import KittiDataset, add_kitti_arguments, is_kitti_list
from utils import UserError, run_main, writable_dir, write_bytes

OUTPUT_SCALE = 256  # metres x 256 in uint16, KITTI's own convention (to 256 m)
# MATLAB's rgb2gray, which the toolbox calls: the luma of ITU-R BT.601.
RGB2GRAY = np.array([0.2989, 0.5870, 0.1140])


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


# ----------------------------------------------------------------------------- the toolbox's algorithm


def colorization_system(gray, known, alpha=1.0):
    """The sparse matrix of the NYU toolbox's fill_depth_colorization.m (Levin et al.'s colorization):
    for each pixel r, its 3x3 neighbours s (inside the picture) get weights
    w_rs = exp(-(g_s - g_r)^2 / csig), normalised to sum to 1, where csig = 0.6 * var (the variance of
    the grey values of the window, r included), raised to -min_s (g_s - g_r)^2 / ln(0.01) and to at
    least 2e-6; row r of the matrix is 1 at r, -w_rs at s, plus alpha at r where r is measured. The
    filled depth x solves M x = alpha * known * depth (depth divided by its maximum)."""
    height, width = gray.shape
    size = height * width
    padded = np.pad(gray.astype(np.float64), 1, constant_values=np.nan)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    neighbours = np.stack([padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in offsets])
    inside = np.isfinite(neighbours)
    centre = gray.astype(np.float64)
    window = np.concatenate([neighbours, centre[None]])
    count = inside.sum(axis=0) + 1
    mean = np.nansum(window, axis=0) / count
    variance = np.nansum((window - mean) ** 2, axis=0) / count
    squared = np.where(inside, (neighbours - centre) ** 2, np.inf)
    csig = np.maximum(np.maximum(0.6 * variance, -squared.min(axis=0) / math.log(0.01)), 2e-6)
    weights = np.exp(-squared / csig)  # 0 outside the picture
    weights /= weights.sum(axis=0)
    index = np.arange(size).reshape(height, width)
    rows, cols = [index.ravel()], [index.ravel()]
    values = [1.0 + alpha * known.ravel().astype(np.float64)]
    for k, (dy, dx) in enumerate(offsets):
        rows.append(index[inside[k]])
        cols.append((index + dy * width + dx)[inside[k]])
        values.append(-weights[k][inside[k]])
    from scipy.sparse import csr_matrix

    return csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))


@functools.lru_cache(maxsize=4)
def nested_dissection_order(height, width, leaf_size=16):
    """An elimination order of the pixels of a height x width picture (row-major indices) that keeps
    a direct solve of a 3x3-stencil system cheap: each rectangle's two halves first, then the
    one-pixel line that separates them (George's nested dissection). SuperLU's own orderings
    (COLAMD, minimum degree) do not see the grid and fill in three to ten times more."""
    index = np.arange(height * width).reshape(height, width)
    order = []

    def dissect(block):
        rows, cols = block.shape
        if rows * cols <= leaf_size or min(rows, cols) < 3:
            order.append(block.ravel())
        elif cols >= rows:
            middle = cols // 2
            dissect(block[:, :middle])
            dissect(block[:, middle + 1 :])
            order.append(block[:, middle])
        else:
            middle = rows // 2
            dissect(block[:middle])
            dissect(block[middle + 1 :])
            order.append(block[middle])

    dissect(index)
    return np.concatenate(order)


def solve_on_grid(system, rhs, height, width, refinements=2):
    """x with system @ x = rhs for a 3x3-stencil system over a height x width picture: SuperLU in
    nested-dissection order, without pivoting, which the system does not need (every row's diagonal
    is at least the sum of its other entries' magnitudes). The factors are single precision, half
    the time and memory of double's; each refinement step (residual in double, correction from the
    same factors) takes the error from about 2e-4 of the largest depth to 3e-8, then to 5e-12 (measured
    on a KITTI frame)."""
    from scipy.sparse.linalg import splu

    order = nested_dissection_order(height, width)
    ordered = system[order][:, order].tocsc()
    factors = splu(
        ordered.astype(np.float32), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    ordered_rhs = rhs[order]
    solution = factors.solve(ordered_rhs.astype(np.float32)).astype(np.float64)
    for _ in range(refinements):
        residual = ordered_rhs - ordered @ solution
        solution += factors.solve(residual.astype(np.float32))
    result = np.empty_like(solution)
    result[order] = solution
    return result


def fill_depth_colorization(rgb, depth_m, alpha=1.0):
    """The toolbox's fill of (H, W) depth in metres (0 or NaN: not measured) guided by an (H, W, 3)
    uint8 picture: (H, W) float64 metres. One sparse direct solve (solve_on_grid). ValueError if
    nothing was measured. The toolbox also takes depth of exactly 10 (NYU's Kinect cap) as unmeasured;
    here only 0 and NaN are, since 10 m is a real measurement outdoors."""
    depth_m = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    known = depth_m > 0
    if not known.any():
        raise ValueError("has no measured pixel")
    largest = depth_m[known].max()
    gray = np.asarray(rgb, dtype=np.float64) @ RGB2GRAY / 255
    system = colorization_system(gray, known, alpha)
    filled = solve_on_grid(system, alpha * known.ravel() * depth_m.ravel() / largest, *depth_m.shape)
    return filled.reshape(depth_m.shape) * largest


def fill_depth_linear(rgb, depth_m, alpha=1.0):
    """Linear interpolation between the measured pixels (over their Delaunay triangulation) inside
    their convex hull, and outside it the toolbox's colorization of the hull's pixels: (H, W)
    float64 metres. On rendered rooms it is 40 times closer to the exact depth than the colorization
    alone inside the hull (docs/kitti.md), whose soft constraint lets measured pixels move."""
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    depth_m = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    known = depth_m > 0
    if not known.any():
        raise ValueError("has no measured pixel")
    pixels = np.indices(depth_m.shape).reshape(2, -1).T
    try:
        linear = griddata(np.argwhere(known), depth_m[known], pixels, method="linear").reshape(depth_m.shape)
    except QhullError:  # too few points, or all on one line: no triangle to interpolate in
        return fill_depth_colorization(rgb, depth_m, alpha)
    inside = np.isfinite(linear)
    if inside.all():
        return linear
    outside = fill_depth_colorization(rgb, np.where(inside, linear, 0.0), alpha)
    return np.where(inside, linear, outside)


FILL_METHODS = {"colorization": fill_depth_colorization, "linear": fill_depth_linear}


def fill_pair(image, depth_m, size="full", alpha=1.0, method="colorization"):
    """Filled depth (H, W) float32 metres for a (3, H, W) uint8 picture and (1, H, W) depth: solved at
    the picture's size, or at half of it (depth averaged in inverse depth) and upsampled back."""
    fill = FILL_METHODS[method]
    if size == "half":
        half = ((image.shape[-2] + 1) // 2, (image.shape[-1] + 1) // 2)
        small = resize(image[None].float(), half)[0].round().clamp(0, 255).to(torch.uint8)
        sparse = resize_measured_depth_m(depth_m[None].float(), half)[0]
        filled = fill(small.permute(1, 2, 0).numpy(), sparse[0].numpy(), alpha)
        return resize(torch.from_numpy(filled).float()[None, None], image.shape[-2:])[0, 0].numpy()
    filled = fill(image.permute(1, 2, 0).numpy(), depth_m[0].numpy(), alpha)
    return filled.astype(np.float32)


# ----------------------------------------------------------------------------- the pairs and their outputs


def open_pairs(args):
    """(dataset, [(rgb path, output name)]) of --data: a KITTI list or a dataset of one's own."""
    data = Path(args.data)
    if is_kitti_list(data):
        dataset = KittiDataset(data, args.kitti_raw, args.kitti_depth, velodyne_depth=args.velodyne_depth)
        root = dataset.annotated or dataset.raw
        names = [Path(depth).relative_to(root).with_suffix(".png") for depth in dataset.depth_files]
        return dataset, [(Path(rgb), name) for rgb, name in zip(dataset.images, names)]
    if not is_rgbd_dataset(data):
        raise UserError(
            f"--data {data} is neither a KITTI split list, a CSV of pairs nor a folder with rgb/ and depth/"
        )
    from data import open_rgbd_pairs

    archive, pairs = open_rgbd_pairs(data, "--data")
    dataset = NYUDepthDataset(archive, pairs, augment=False, png_scale=args.depth_scale)
    return dataset, [(archive.path / rgb, Path(depth).with_suffix(".png")) for rgb, depth in pairs]


def parse_shard(text):
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise UserError(f"--shard {text} is not I/N (two whole numbers, I from 0 to N - 1)") from err
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: I must be from 0 to N - 1")
    return index, count


class Filler:
    """Fills pair `index` of the dataset and writes it (in a worker process): None, or why it could not."""

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


def one_thread():
    """A worker process's torch uses one thread: one process a core. (Not set in the calling process,
    whose other work keeps its threads.)"""
    torch.set_num_threads(1)


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
    todo = [i for i in range(shard, len(outputs), shards) if not (out_dir / outputs[i][1]).is_file()]
    mine = len(range(shard, len(outputs), shards))
    print(f"{args.data}: {len(outputs)} pairs, {mine} in this shard, {mine - len(todo)} filled already, "
          f"{len(todo)} to fill by {args.method} at {args.size} size with {args.workers} process(es)")  # fmt: skip
    fill = functools.partial(fill_pair, size=args.size, alpha=args.alpha, method=args.method)
    filler = Filler(dataset, outputs, out_dir, fill)
    skipped = []
    bar = tqdm(total=len(todo), unit="frame", desc="filling")
    try:
        if args.workers == 1 or len(todo) < 2:
            results = map(filler, todo)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(min(args.workers, len(todo)), initializer=one_thread)
            results = pool.imap_unordered(filler, todo)
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
