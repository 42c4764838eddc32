"""Tiny KITTI trees in KITTI's own layouts, for the tests: raw drives (calibration, pictures of both
colour cameras, Velodyne scans whose points land on pixels chosen in advance), the annotated depth
split over train/ and val/, and the split lists of BTS and monodepth2.

Nothing here uses the project's KITTI code. The calibration files are written as KITTI writes them,
with KITTI's own numbers for 2011_09_26 (both colour cameras, and the entries a wrong reading could
take instead: P_rect_00, R_rect_02, R_rect_03), and the geometry is the raw data devkit's statement
of it (readme.txt, "Velodyne to camera"): a Velodyne point x lands in camera c's rectified picture at

    y = P_rect_0c * R_rect_00 * (R|T)_velo_to_cam * x

with R_rect_00 and (R|T) expanded to 4x4; devkit_project() spells that out step by step."""

from pathlib import Path

import numpy as np
from PIL import Image

KITTI_SIZE = (375, 1242)  # height, width of a 2011_09_26 frame
DATE = "2011_09_26"
# KITTI's numbers for 2011_09_26 (calib_cam_to_cam.txt, calib_velo_to_cam.txt).
R_RECT_00 = [[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
             [0.007402527, 0.004351614, 0.9999631]]  # fmt: skip
P_RECT = {
    0: [[721.5377, 0, 609.5593, 0], [0, 721.5377, 172.854, 0], [0, 0, 1, 0]],
    2: [[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]],
    3: [[721.5377, 0, 609.5593, -339.5242], [0, 721.5377, 172.854, 2.199936], [0, 0, 1, 0.002729905]],
}
R_RECT_OTHERS = {  # the other cameras' rectifying rotations: the projection must not use them
    2: [[0.9998817, 0.01511453, -0.002841595], [-0.01511724, 0.9998853, -0.000933851],
        [0.002827154, 0.0009766976, 0.9999955]],
    3: [[0.9998321, -0.007193136, 0.01685599], [0.007232804, 0.9999712, -0.002293585],
        [-0.01683901, 0.002415116, 0.9998553]],
}  # fmt: skip
VELO_R = [[7.533745e-03, -9.999714e-01, -6.166020e-04], [1.480249e-02, 7.280733e-04, -9.998902e-01],
          [9.998621e-01, 7.523790e-03, 1.480755e-02]]  # fmt: skip
VELO_T = [-4.069766e-03, -7.631618e-02, -2.717806e-01]
# (drive, frames); frame 2 of drive 0001 has no annotated depth, as 45 of the Eigen test frames.
DRIVES = {f"{DATE}_drive_0001_sync": (0, 1, 2), f"{DATE}_drive_0002_sync": (5, 69)}
WITHOUT_ANNOTATION = (f"{DATE}_drive_0001_sync", 2)
RIGHT_CAMERA_FRAME = (f"{DATE}_drive_0002_sync", 69)  # the lists also name this frame's right picture


def numbers(values):
    return " ".join(f"{value:e}" for value in np.asarray(values, dtype=np.float64).ravel())


def write_calibration_files(date_dir):
    """DATE/calib_cam_to_cam.txt and calib_velo_to_cam.txt as KITTI distributes them (the entries read)."""
    date_dir = Path(date_dir)
    date_dir.mkdir(parents=True, exist_ok=True)
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02", f"R_rect_00: {numbers(R_RECT_00)}",
             f"P_rect_00: {numbers(P_RECT[0])}"]  # fmt: skip
    for camera in (2, 3):
        lines += [f"S_0{camera}: 1.392000e+03 5.120000e+02", f"S_rect_0{camera}: 1.242000e+03 3.750000e+02",
                  f"R_rect_0{camera}: {numbers(R_RECT_OTHERS[camera])}", f"P_rect_0{camera}: {numbers(P_RECT[camera])}"]
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    velodyne = ["calib_time: 15-Mar-2012 11:37:16", f"R: {numbers(VELO_R)}", f"T: {numbers(VELO_T)}",
                "delta_f: 0.000000e+00 0.000000e+00", "delta_c: 0.000000e+00 0.000000e+00"]  # fmt: skip
    (date_dir / "calib_velo_to_cam.txt").write_text("\n".join(velodyne) + "\n")


def devkit_project(points, camera):
    """(u, v, camera z) of Velodyne points (N, >= 3) in camera `camera`'s rectified picture, by the devkit's
    steps: into camera 0's frame (R x + T), rectified (R_rect_00), projected (P_rect_0c), divided by w."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    in_camera_0 = xyz @ np.asarray(VELO_R).T + np.asarray(VELO_T)
    rectified = in_camera_0 @ np.asarray(R_RECT_00).T
    homogeneous = np.concatenate([rectified, np.ones((len(rectified), 1))], axis=1)
    u, v, w = (homogeneous @ np.asarray(P_RECT[camera]).T).T
    return u / w, v / w, w


def devkit_matrix(camera):
    """The 3x4 matrix of devkit_project: P_rect_0c @ [R_rect_00 R | R_rect_00 T; 0 0 0 1]."""
    rotation = np.asarray(R_RECT_00) @ np.asarray(VELO_R)
    rigid = np.vstack([np.column_stack([rotation, np.asarray(R_RECT_00) @ np.asarray(VELO_T)]), [0, 0, 0, 1]])
    return np.asarray(P_RECT[camera]) @ rigid


def points_landing_at(rows, cols, forward_m, camera=2):
    """Velodyne points (N, 4) with forward distance forward_m that camera `camera` sees at (rows, cols) as
    monodepth2 rounds them (column = round(u) - 1, row = round(v) - 1, so u = column + 1, v = row + 1):
    solves devkit_matrix(camera) [x, y, z, 1] = s [u, v, 1] for y, z and s."""
    matrix = devkit_matrix(camera)
    u, v, x = np.asarray(cols, float) + 1, np.asarray(rows, float) + 1, np.asarray(forward_m, float)
    uv1 = np.stack([u, v, np.ones_like(u)], axis=1)
    systems = np.stack([np.broadcast_to(matrix[:, 1], uv1.shape), np.broadcast_to(matrix[:, 2], uv1.shape), -uv1],
                       axis=2)  # fmt: skip
    right = -(x[:, None] * matrix[:, 0] + matrix[:, 3])
    y, z, _ = np.linalg.solve(systems, right[..., None])[..., 0].T
    return np.stack([x, y, z, np.full_like(x, 0.5)], axis=1)


def reference_depth_map(points, camera, velodyne_depth=True):
    """Sparse ground truth (H, W) as monodepth2's generate_depth_map makes it, one point at a time, from
    devkit_project: points with x >= 0, pixel (round(v) - 1, round(u) - 1) inside the picture, the
    nearest depth where several land on one pixel, the forward distance x (or the camera's z)."""
    points = np.asarray(points, dtype=np.float64)
    points = points[points[:, 0] >= 0]
    u, v, z = devkit_project(points, camera)
    depth = np.zeros(KITTI_SIZE)
    for index in range(len(points)):
        row, col = int(np.round(v[index]) - 1), int(np.round(u[index]) - 1)
        if not (0 <= row < KITTI_SIZE[0] and 0 <= col < KITTI_SIZE[1]):
            continue
        value = points[index, 0] if velodyne_depth else z[index]
        if depth[row, col] == 0 or value < depth[row, col]:
            depth[row, col] = value
    return np.maximum(depth, 0).astype(np.float32)


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


def write_png_depth(path, depth_m):
    """A KITTI annotated depth PNG: uint16, metres x 256, 0 where nothing was measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(depth_m * 256), 0, 65535).astype(np.uint16)).save(path)


def write_picture(path, depth_m, index):
    shade = np.clip(255 - depth_m * 4, 0, 255).astype(np.uint8)
    picture = np.stack([shade, np.full_like(shade, 90 + 40 * index), 255 - shade], axis=-1)
    picture[:140] = (135, 180, 235)  # sky
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)


def write_kitti_tree(root):
    """Write the tree under root: raw/, annotated/ (train/ + val/), bts_test.txt, monodepth2_test.txt.
    Returns {"raw", "annotated", "bts", "monodepth2", "expected": {(drive, frame, camera): sparse depth_m}}:
    the left camera's scans land on the pixels chosen, the right camera's wherever the devkit says."""
    root = Path(root)
    raw, annotated = root / "raw", root / "annotated"
    write_calibration_files(raw / DATE)
    expected, bts_lines, monodepth2_lines = {}, [], []
    for number, (drive, frames) in enumerate(DRIVES.items()):
        for index, frame in enumerate(frames):
            depth_m = scene_depth_m(index + 2 * number)
            rows, cols = scan_pixels(index + number)
            forward_m = depth_m[rows, cols]
            scan = points_landing_at(rows, cols, forward_m)
            sparse = np.zeros(KITTI_SIZE, dtype=np.float32)
            sparse[rows, cols] = forward_m
            expected[(drive, frame, 2)] = sparse
            name = f"{frame:010d}"
            scan_path = raw / DATE / drive / "velodyne_points" / "data" / f"{name}.bin"
            scan_path.parent.mkdir(parents=True, exist_ok=True)
            scan.astype(np.float32).tofile(scan_path)
            cameras = (2, 3) if (drive, frame) == RIGHT_CAMERA_FRAME else (2,)
            for camera in cameras:
                write_picture(raw / DATE / drive / f"image_0{camera}" / "data" / f"{name}.png", depth_m, index)
                if camera == 3:
                    expected[(drive, frame, 3)] = reference_depth_map(scan.astype(np.float32), 3)
                depth_name = f"{drive}/proj_depth/groundtruth/image_0{camera}/{name}.png"
                if (drive, frame) != WITHOUT_ANNOTATION:
                    split = "train" if number == 0 else "val"
                    write_png_depth(annotated / split / depth_name, expected[(drive, frame, camera)])
                bts_depth = "None" if (drive, frame) == WITHOUT_ANNOTATION else depth_name
                bts_lines.append(f"{DATE}/{drive}/image_0{camera}/data/{name}.png {bts_depth} 721.5377")
                monodepth2_lines.append(f"{DATE}/{drive} {frame} {'l' if camera == 2 else 'r'}")
    (root / "bts_test.txt").write_text("\n".join(bts_lines))  # no newline at the end, as BTS's files
    (root / "monodepth2_test.txt").write_text("\n".join(monodepth2_lines) + "\n")
    # monodepth2's eigen_benchmark list: the frames with annotated depth only
    without = f"{DATE}/{WITHOUT_ANNOTATION[0]} {WITHOUT_ANNOTATION[1]} l"
    benchmark = [line for line in monodepth2_lines if line != without]
    (root / "monodepth2_benchmark.txt").write_text("\n".join(benchmark) + "\n")
    return {"raw": raw, "annotated": annotated, "bts": root / "bts_test.txt",
            "monodepth2": root / "monodepth2_test.txt", "benchmark": root / "monodepth2_benchmark.txt",
            "expected": expected}  # fmt: skip
