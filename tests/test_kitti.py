"""KITTI from its own files: the split lists of BTS and monodepth2, the raw drives with their
calibration and Velodyne scans, the annotated depth; the projected ground truth pixel by pixel,
the counts, the protocol's metrics against an independent computation, training, and bad input."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import assert_one_clear_line, run_script
from kitti_tree import DATE, DRIVES, KITTI_SIZE, P_RECT_02, R_RECT_00, VELO_R, VELO_T, write_kitti_tree
from PIL import Image

import evaluate
import train
from densedepth.depth import KITTI_DEPTH_RANGE
from densedepth.kitti import (
    KittiDataset,
    camera_projection,
    list_kind,
    read_split_list,
    read_velodyne,
    velodyne_depth_m,
    write_calibration,
)
from densedepth.protocol import crop_box, kb_crop_box
from model import DenseDepth, settings_config

NUM_FRAMES = sum(len(frames) for frames in DRIVES.values())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_kitti_tree(tmp_path_factory.mktemp("kitti"))


@pytest.fixture(scope="module")
def kitti_checkpoint(tmp_path_factory):
    """A model of KITTI's depth range (1 to 80 m) whose depth varies over a frame (a briefly trained one
    predicts nearly one depth): random weights, the head scaled and biased to a positive target."""
    torch.manual_seed(0)
    model = DenseDepth(0.0625, depth_range=KITTI_DEPTH_RANGE)
    with torch.no_grad():
        model.head.weight.mul_(50)
        model.head.bias.fill_(8.0)
    path = tmp_path_factory.mktemp("kitti_model") / "varied.pth"
    config = settings_config(0.0625, (64, 192), KITTI_DEPTH_RANGE)
    torch.save({"model": model.state_dict(), "config": config, "args": {}}, path)
    return path


def kitti_train_argv(tree, out, *extra):
    argv = ["--checkpoint_dir", out, "--epochs", 1, "--batch_size", 2, "--input_size", 64, 192, "--no_pretrained"]
    argv += ["--decoder_width", 0.0625, "--workers", 0, "--kitti_raw", tree["raw"], *extra]
    return [str(arg) for arg in argv]


# ----------------------------------------------------------------------------- lists


def test_both_list_shapes_are_recognised_and_read(tree):
    assert list_kind(tree["bts"]) == "bts" and list_kind(tree["monodepth2"]) == "monodepth2"
    bts, monodepth2 = read_split_list(tree["bts"], "--data"), read_split_list(tree["monodepth2"], "--data")
    assert [(f.drive, f.frame, f.camera) for f in bts] == [(f.drive, f.frame, f.camera) for f in monodepth2]
    assert len(bts) == NUM_FRAMES and sum(f.no_depth for f in bts) == 1
    assert bts[0].name == f"{DATE}/{DATE}_drive_0001_sync/image_02/data/0000000000"


def test_a_right_camera_line_and_an_unpadded_frame(tmp_path):
    path = tmp_path / "test_files.txt"
    path.write_text(f"{DATE}/{DATE}_drive_0002_sync 69 r\r\n\n")
    (frame,) = read_split_list(path, "--data")
    assert (frame.frame, frame.camera) == (69, 3) and frame.name.endswith("image_03/data/0000000069")


# ----------------------------------------------------------------------------- the Velodyne's ground truth


def test_projected_ground_truth_lands_on_the_pixels_chosen(tree):
    projection = camera_projection(tree["raw"] / DATE, 2)
    assert projection.size == KITTI_SIZE
    for (drive, frame), expected in tree["expected"].items():
        points = read_velodyne(tree["raw"] / DATE / drive / "velodyne_points" / "data" / f"{frame:010d}.bin")
        got = velodyne_depth_m(points, projection)
        np.testing.assert_array_equal(got, expected)


def monodepth2_generate_depth_map(points, matrix, size, vel_depth):
    """monodepth2's generate_depth_map as it is written (a loop over shared pixels, its sub2ind), for comparison."""
    velo = points[points[:, 0] >= 0].astype(np.float64)
    velo[:, 3] = 1.0
    image_points = (matrix @ velo.T).T
    image_points[:, :2] = image_points[:, :2] / image_points[:, 2][..., None]
    if vel_depth:
        image_points[:, 2] = velo[:, 0]
    image_points[:, 0] = np.round(image_points[:, 0]) - 1
    image_points[:, 1] = np.round(image_points[:, 1]) - 1
    keep = (image_points[:, 0] >= 0) & (image_points[:, 1] >= 0)
    keep &= (image_points[:, 0] < size[1]) & (image_points[:, 1] < size[0])
    image_points = image_points[keep]
    depth = np.zeros(size)
    depth[image_points[:, 1].astype(int), image_points[:, 0].astype(int)] = image_points[:, 2]
    index = image_points[:, 1] * (size[1] - 1) + image_points[:, 0] - 1
    for shared in [item for item, count in Counter(index).items() if count > 1]:
        where = np.where(index == shared)[0]
        depth[int(image_points[where[0], 1]), int(image_points[where[0], 0])] = image_points[where, 2].min()
    depth[depth < 0] = 0
    return depth


@pytest.mark.parametrize("depth", ["velodyne", "camera"])
def test_projection_matches_monodepth2_inside_the_crops(tmp_path, depth):
    """Random points around the car, behind it, outside the picture and several on one pixel."""
    write_calibration(tmp_path, P_RECT_02, R_RECT_00, VELO_R, VELO_T, KITTI_SIZE)
    projection = camera_projection(tmp_path, 2)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-20, 90, 30000), rng.uniform(-40, 40, 30000), rng.uniform(-3, 2, 30000),
                              rng.uniform(0, 1, 30000)]).astype(np.float32)  # fmt: skip
    points = np.concatenate([points, points[:3000] * [1.0, 1.0, 1.0, 1.0] + [0.3, 0, 0, 0]]).astype(np.float32)
    got = velodyne_depth_m(points, projection, depth)
    reference = monodepth2_generate_depth_map(points, projection.velodyne_to_image, KITTI_SIZE, depth == "velodyne")
    inner = (slice(None), slice(1, KITTI_SIZE[1] - 1))  # monodepth2's sub2ind folds column W-1 onto column 0
    np.testing.assert_allclose(got[inner], reference[inner], rtol=1e-6)
    assert (got > 0).sum() > 5000
    if depth == "camera":
        assert not np.allclose(got, velodyne_depth_m(points, projection, "velodyne"))


def test_points_behind_outside_or_sharing_a_pixel(tmp_path):
    write_calibration(tmp_path, P_RECT_02, R_RECT_00, VELO_R, VELO_T, KITTI_SIZE)
    projection = camera_projection(tmp_path, 2)
    from kitti_tree import points_landing_at

    near, far = points_landing_at(projection, [300, 300], [600, 600], [10.0, 30.0])
    (edge,) = points_landing_at(projection, [374], [1241], [20.0])  # the last row and column
    behind = -near
    outside = near * [1, 50, 1, 1]  # far to the side
    got = velodyne_depth_m(np.stack([far, near, edge, behind, outside]).astype(np.float32), projection)
    assert got[300, 600] == pytest.approx(10.0) and got[374, 1241] == pytest.approx(20.0)
    assert (got > 0).sum() == 2


# ----------------------------------------------------------------------------- the dataset and its counts


@pytest.mark.parametrize(
    "list_name, annotated, scored, without",
    [("bts", True, NUM_FRAMES - 1, 1), ("monodepth2", True, NUM_FRAMES - 1, 1), ("monodepth2", False, NUM_FRAMES, 0),
     ("bts", False, NUM_FRAMES, 0)],
)  # fmt: skip
def test_frames_without_ground_truth_are_counted(tree, list_name, annotated, scored, without):
    dataset = KittiDataset(tree[list_name], tree["raw"], tree["annotated"] if annotated else None)
    assert (len(dataset), dataset.num_listed, dataset.num_without_gt) == (scored, NUM_FRAMES, without)
    image, depth_m = dataset[0]
    assert image.shape == (3, *KITTI_SIZE) and image.dtype == torch.uint8 and depth_m.shape == (1, *KITTI_SIZE)
    expected = tree["expected"][(dataset.frames[0].drive, dataset.frames[0].frame)]
    tolerance = 0.5 / 256 if annotated else 0  # the annotated PNGs hold metres x 256
    np.testing.assert_allclose(depth_m[0].numpy(), expected, atol=tolerance + 1e-6)


def test_annotated_depth_merged_into_one_folder(tree, tmp_path):
    merged = tmp_path / "merged"
    for split in ("train", "val"):
        for path in (tree["annotated"] / split).rglob("*.png"):
            target = merged / path.relative_to(tree["annotated"] / split)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert len(KittiDataset(tree["bts"], tree["raw"], merged)) == NUM_FRAMES - 1


def test_jpeg_frames_are_read_too(tree, tmp_path):
    raw = tmp_path / "raw"
    for path in tree["raw"].rglob("*"):
        if path.is_file():
            target = raw / path.relative_to(tree["raw"])
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".png":
                Image.open(path).save(target.with_suffix(".jpg"), quality=95)
            else:
                target.write_bytes(path.read_bytes())
    dataset = KittiDataset(tree["monodepth2"], raw)
    assert len(dataset) == NUM_FRAMES and dataset.images[0].suffix == ".jpg"
    assert dataset[0][0].shape == (3, *KITTI_SIZE)


# ----------------------------------------------------------------------------- evaluation


def numpy_kitti_metrics(pairs):
    """KITTI's metrics per image then averaged (monodepth2's compute_errors, BTS's silog), in numpy."""
    rows = []
    for pred, gt in pairs:
        height, width = gt.shape
        top, bottom, left, right = (int(0.40810811 * height), int(0.99189189 * height),
                                    int(0.03594771 * width), int(0.96405229 * width))  # fmt: skip
        mask = np.zeros_like(gt, dtype=bool)
        mask[top:bottom, left:right] = True
        mask &= (gt > 1e-3) & (gt < 80)
        p, g = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
        ratio = np.maximum(g / p, p / g)
        err = np.log(p) - np.log(g)
        rows.append({
            "delta1": (ratio < 1.25).mean(), "delta2": (ratio < 1.25**2).mean(), "delta3": (ratio < 1.25**3).mean(),
            "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
            "rms": np.sqrt(np.mean((g - p) ** 2)), "rms_log": np.sqrt(np.mean(err**2)),
            "log10": np.mean(np.abs(np.log10(g) - np.log10(p))),
            "silog": 100 * np.sqrt(np.mean(err**2) - np.mean(err) ** 2),
        })  # fmt: skip
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


@pytest.mark.parametrize("annotated", [True, False])
def test_evaluation_matches_an_independent_computation(tree, kitti_checkpoint, tmp_path, capsys, annotated):
    """The scores of evaluate.py --data LIST equal numpy's metrics on the depth --img writes for each frame."""
    gt_flags = ["--kitti_depth", tree["annotated"]] if annotated else []
    status, out, err = run_script(evaluate, ["--model", kitti_checkpoint, "--data", tree["monodepth2"],
                                             "--kitti_raw", tree["raw"], *gt_flags, "--output_dir", tmp_path / "eval",
                                             "--precision", "fp32", "--num_examples", 1], capsys)  # fmt: skip
    assert status == 0, err
    scored = NUM_FRAMES - 1 if annotated else NUM_FRAMES
    counts = f"{scored} of {NUM_FRAMES} frames scored" + ("; 1 without ground truth" if annotated else "")
    assert counts in out and "silog" in out
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["frames"] == counts and report["crop"] == "garg" and report["gt_range_m"] == [1e-3, 80]
    assert (report["frames_listed"], report["frames_without_gt"]) == (NUM_FRAMES, NUM_FRAMES - scored)
    dataset = KittiDataset(tree["monodepth2"], tree["raw"], tree["annotated"] if annotated else None)
    pairs = []
    for index in range(len(dataset)):
        status, _, err = run_script(evaluate, ["--model", kitti_checkpoint, "--img", dataset.images[index],
                                               "--output_dir", tmp_path / "img", "--precision", "fp32"], capsys)  # fmt: skip
        assert status == 0, err
        pred = np.load(tmp_path / "img" / f"{dataset.images[index].stem}_depth_m.npy")
        pairs.append((pred, dataset[index][1][0].numpy()))
    expected = numpy_kitti_metrics(pairs)
    for name, value in expected.items():
        assert report["per_image"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_kb_crop_predicts_on_the_benchmark_crop_and_scores_in_the_full_frame(tree, kitti_checkpoint, tmp_path, capsys):
    assert kb_crop_box(*KITTI_SIZE) == (23, 374, 13, 1228)
    top, _, left, right = crop_box("garg", *KITTI_SIZE)
    assert top >= 23 and left >= 13 and right <= 1228  # Garg's crop lies inside the benchmark crop
    status, _, err = run_script(evaluate, ["--model", kitti_checkpoint, "--data", tree["bts"], "--kitti_raw",
                                             tree["raw"], "--kitti_depth", tree["annotated"], "--kb_crop",
                                             "--output_dir", tmp_path, "--num_examples", 0], capsys)  # fmt: skip
    assert status == 0, err
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["kb_crop"] is True and report["num_images"] == NUM_FRAMES - 1
    assert report["num_valid_pixels"] > 0 and math.isfinite(report["per_image"]["silog"])


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("ground_truth", ["velodyne", "annotated"])
def test_training_on_kitti_lists(tree, tmp_path, capsys, ground_truth):
    """Velodyne ground truth from monodepth2's list validated on BTS's; annotated depth from BTS's list
    validated on frames held out of it."""
    if ground_truth == "velodyne":
        data = ["--data_dir", tree["monodepth2"], "--val_data", tree["bts"]]
    else:
        data = ["--data_dir", tree["bts"], "--kitti_depth", tree["annotated"]]
    status, out, err = run_script(train, kitti_train_argv(tree, tmp_path, *data), capsys)
    assert status == 0, err
    checkpoint = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=False)
    assert (checkpoint["config"]["min_depth_m"], checkpoint["config"]["max_depth_m"]) == (1.0, 80.0)
    assert math.isfinite(checkpoint["val_metrics"]["silog"]) and "depth 1 to 80 m" in out
    training_frames = NUM_FRAMES if ground_truth == "velodyne" else NUM_FRAMES - 2  # one held out, one without
    assert f"{training_frames} training pairs" in out


# ----------------------------------------------------------------------------- bad input


def copy_tree(tree, tmp_path):
    import shutil

    shutil.copytree(tree["bts"].parent, tmp_path / "tree")
    root = tmp_path / "tree"
    return {key: root / value.relative_to(tree["bts"].parent) for key, value in tree.items() if key != "expected"}


def evaluate_on(copy, capsys, *extra, data=None):
    return run_script(evaluate, ["--model", "unused.pth", "--data", data or copy["bts"], "--kitti_raw", copy["raw"],
                                 *extra, "--output_dir", copy["raw"].parent / "out"], capsys)  # fmt: skip


def test_bad_kitti_input_is_one_line_each(tree, tmp_path, capsys):
    copy = copy_tree(tree, tmp_path)
    drive = next(iter(DRIVES))
    frames = copy["raw"] / DATE / drive
    lines = copy["bts"].read_text().splitlines()

    copy["bts"].write_text("\n".join(lines[:2] + ["two fields"] + lines[2:]))
    assert_one_clear_line(evaluate_on(copy, capsys), "line 3 has 2 fields", "monodepth2")
    copy["bts"].write_text("\n".join(lines))

    (frames / "image_02" / "data" / "0000000001.png").rename(frames / "moved.png")
    assert_one_clear_line(evaluate_on(copy, capsys), "0000000001.png", "does not exist")
    (frames / "moved.png").rename(frames / "image_02" / "data" / "0000000001.png")

    scan = frames / "velodyne_points" / "data" / "0000000002.bin"
    scan.rename(frames / "moved.bin")
    assert_one_clear_line(evaluate_on(copy, capsys), "0000000002.bin", "does not exist")
    (frames / "moved.bin").write_bytes((frames / "moved.bin").read_bytes()[:-4])
    (frames / "moved.bin").rename(scan)
    assert_one_clear_line(evaluate_on(copy, capsys), "0000000002.bin", "not a whole number of 16-byte points")

    calibration = copy["raw"] / DATE / "calib_cam_to_cam.txt"
    text = calibration.read_text()
    calibration.write_text("\n".join(line for line in text.splitlines() if not line.startswith("P_rect_02")))
    assert_one_clear_line(evaluate_on(copy, capsys), "calib_cam_to_cam.txt", "no P_rect_02")
    calibration.unlink()
    assert_one_clear_line(evaluate_on(copy, capsys), "calib_cam_to_cam.txt", "does not exist")

    # the annotated depth needs no calibration, but a folder with the list's drives in it
    assert_one_clear_line(evaluate_on(copy, capsys, "--kitti_depth", copy["raw"]), "holds none of the 2 drives")
    assert_one_clear_line(
        run_script(evaluate, ["--model", "x.pth", "--data", copy["bts"], "--output_dir", tmp_path], capsys),
        "give --kitti_raw",
    )


def test_kitti_flags_without_a_kitti_list_are_refused(tiny_zips, tmp_path, capsys):
    result = run_script(evaluate, ["--model", "x.pth", "--data", tiny_zips[1], "--kb_crop"], capsys)
    assert_one_clear_line(result, "--kb_crop is for --data a KITTI split list")
    argv = ["--data_dir", tiny_zips[0], "--batch_size", 2, "--checkpoint_dir", tmp_path, "--epochs", 1]
    assert_one_clear_line(run_script(train, argv + ["--kitti_raw", tmp_path], capsys), "--kitti_raw is for --data_dir")
