"""Tiny KITTI trees in KITTI's own layouts, for the tests: raw drives (calibration, pictures, Velodyne
scans whose points land on pixels chosen in advance), the annotated depth split over train/ and val/,
and the split lists of BTS and monodepth2."""

from pathlib import Path

import numpy as np
from PIL import Image

from data import encode_depth_file
from densedepth.kitti import camera_projection, write_calibration, write_velodyne

KITTI_SIZE = (375, 1242)  # height, width of a 2011_09_26 frame
DATE = "2011_09_26"
# KITTI's own numbers for 2011_09_26: camera 2's projection, the rectifying rotation, the Velodyne's pose.
P_RECT_02 = [[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]]
R_RECT_00 = [[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
             [0.007402527, 0.004351614, 0.9999631]]  # fmt: skip
VELO_R = [[7.533745e-03, -9.999714e-01, -6.166020e-04], [1.480249e-02, 7.280733e-04, -9.998902e-01],
          [9.998621e-01, 7.523790e-03, 1.480755e-02]]  # fmt: skip
VELO_T = [-4.069766e-03, -7.631618e-02, -2.717806e-01]
# (drive, frames); frame 2 of drive 0001 has no annotated depth, as 45 of the Eigen test frames.
DRIVES = {f"{DATE}_drive_0001_sync": (0, 1, 2), f"{DATE}_drive_0002_sync": (5, 69)}
WITHOUT_ANNOTATION = (f"{DATE}_drive_0001_sync", 2)


def scene_depth_m(index):
    """A road: depth grows toward the horizon (row 140), 5 to about 150 m; a car nearer in a band of columns."""
    height, width = KITTI_SIZE
    rows = np.arange(height, dtype=np.float64)[:, None]
    depth_m = np.broadcast_to(1.65 * 721.5377 / np.maximum(rows - 140, 8), (height, width)).copy()
    band = slice(200 + 150 * index, 420 + 150 * index)
    depth_m[150:, band] = np.minimum(depth_m[150:, band], 12 + index)
    return depth_m


def scan_pixels(index):
    """The (rows, columns) a scan hits: every 5th row below row 150, every 3rd column, shifted per frame."""
    height, width = KITTI_SIZE
    rows, cols = np.meshgrid(np.arange(150 + index % 5, height, 5), np.arange(index % 3, width, 3), indexing="ij")
    return rows.ravel(), cols.ravel()


def points_landing_at(projection, rows, cols, forward_m):
    """Velodyne points (N, 4) with forward distance forward_m that project to (rows, cols):
    column = round(u) - 1, row = round(v) - 1, so u = column + 1, v = row + 1. Solves
    M [x, y, z, 1] = s [u, v, 1] for y, z and s."""
    matrix = projection.velodyne_to_image
    u, v, x = np.asarray(cols, float) + 1, np.asarray(rows, float) + 1, np.asarray(forward_m, float)
    # unknowns (y, z, s): M[:, 1] y + M[:, 2] z - s (u, v, 1) = -(M[:, 0] x + M[:, 3])
    uv1 = np.stack([u, v, np.ones_like(u)], axis=1)
    systems = np.stack([np.broadcast_to(matrix[:, 1], uv1.shape), np.broadcast_to(matrix[:, 2], uv1.shape), -uv1],
                       axis=2)  # fmt: skip
    right = -(x[:, None] * matrix[:, 0] + matrix[:, 3])
    y, z, _ = np.linalg.solve(systems, right[..., None])[..., 0].T
    return np.stack([x, y, z, np.full_like(x, 0.5)], axis=1)


def write_kitti_tree(root):
    """Write the tree under root: raw/, annotated/ (train/ + val/), bts_test.txt, monodepth2_test.txt.
    Returns {"raw", "annotated", "bts", "monodepth2", "expected": {(drive, frame): sparse depth_m}}."""
    root = Path(root)
    raw, annotated = root / "raw", root / "annotated"
    write_calibration(raw / DATE, P_RECT_02, R_RECT_00, VELO_R, VELO_T, KITTI_SIZE)
    projection = camera_projection(raw / DATE, 2)
    expected, bts_lines, monodepth2_lines = {}, [], []
    for number, (drive, frames) in enumerate(DRIVES.items()):
        for index, frame in enumerate(frames):
            depth_m = scene_depth_m(index + 2 * number)
            rows, cols = scan_pixels(index + number)
            forward_m = depth_m[rows, cols]
            scan = points_landing_at(projection, rows, cols, forward_m)
            sparse = np.zeros(KITTI_SIZE, dtype=np.float32)
            sparse[rows, cols] = forward_m
            expected[(drive, frame)] = sparse
            name = f"{frame:010d}"
            write_velodyne(raw / DATE / drive / "velodyne_points" / "data" / f"{name}.bin", scan)
            shade = np.clip(255 - depth_m * 4, 0, 255).astype(np.uint8)
            picture = np.stack([shade, np.full_like(shade, 90 + 40 * index), 255 - shade], axis=-1)
            picture[:140] = (135, 180, 235)  # sky
            image_path = raw / DATE / drive / "image_02" / "data" / f"{name}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(image_path)
            depth_name = f"{drive}/proj_depth/groundtruth/image_02/{name}.png"
            if (drive, frame) != WITHOUT_ANNOTATION:
                split = "train" if number == 0 else "val"
                path = annotated / split / depth_name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_depth_file(sparse, "png16", png_scale=256))
            bts_depth = "None" if (drive, frame) == WITHOUT_ANNOTATION else depth_name
            bts_lines.append(f"{DATE}/{drive}/image_02/data/{name}.png {bts_depth} 721.5377")
            monodepth2_lines.append(f"{DATE}/{drive} {frame} l")
    (root / "bts_test.txt").write_text("\n".join(bts_lines))  # no newline at the end, as BTS's files
    (root / "monodepth2_test.txt").write_text("\n".join(monodepth2_lines) + "\n")
    return {"raw": raw, "annotated": annotated, "bts": root / "bts_test.txt",
            "monodepth2": root / "monodepth2_test.txt", "expected": expected}  # fmt: skip
