"""The picture of docs/kitti.md's filling section: a rendered test room, about 5 % of its exact depth kept
along scan lines as a LiDAR sees it, the toolbox's colorization fill of that, and the exact depth.

    python -m scripts.fill_example --out docs/sample/fill_example.png
"""

import argparse

from bench.benchmark import lidar_samples
from densedepth.fill import fill_depth_colorization
from densedepth.visualize import colorize_depth, png_bytes, side_by_side
from rendering.scenes import render_scene
from utils import write_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/sample/fill_example.png")
    args = parser.parse_args()
    _, views = render_scene(7, 1, 2, 1, 320, 240)
    rgb, depth = views[0]
    sparse = lidar_samples(depth, seed=2)
    filled = fill_depth_colorization(rgb, sparse)
    low, high = float(depth.min()), float(depth.max())
    tiles = [rgb] + [colorize_depth(values, low, high) for values in (sparse, filled, depth)]
    write_bytes(args.out, png_bytes(side_by_side(*tiles)))
    print(
        f"wrote {args.out}: picture | {100 * (sparse > 0).mean():.1f} % sampled | filled | exact ({low:.1f} to {high:.1f} m)"
    )


if __name__ == "__main__":
    main()
