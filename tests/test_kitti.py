"""KITTI from its own files: the split lists of BTS and monodepth2, the raw drives with their
calibration and Velodyne scans, the annotated depth; the projected ground truth pixel by pixel against
the raw data devkit's equations (both colour cameras), the counts, the protocol's metrics against an
independent computation, training, and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import assert_one_clear_line, run_script
from kitti_tree import (
    DATE,
    DRIVES,
    KITTI_SIZE,
    RIGHT_CAMERA_FRAME,
    WITHOUT_ANNOTATION,
    devkit_matrix,
    points_landing_at,
    reference_depth_map,
    write_calibration_files,
    write_kitti_tree,
)
from PIL import Image

import evaluate
import train
from densedepth.depth import KITTI_DEPTH_RANGE
from densedepth.kitti import (
    KittiDataset,
    camera_projection,
    read_calibration_file,
    read_split_list,
    read_velodyne,
    velodyne_depth_m,
)
from densedepth.protocol import crop_box, kb_crop_box
from densedepth.sources import (
    KITTI_LIST,
    UNKNOWN_LIST,
    data_kind,
    first_list_line,
    kb_crop_scoring_box,
    kb_cropped,
)
from model import DenseDepth, settings_config
from utils import UserError

NUM_FRAMES = sum(len(frames) for frames in DRIVES.values()) + 1  # and the right picture of one frame


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


def frame_key(frame):
    return (frame.drive, frame.frame, frame.camera)


# ----------------------------------------------------------------------------- lists


def test_both_list_shapes_are_recognised_and_read(tree):
    assert data_kind(tree["bts"]) == data_kind(tree["monodepth2"]) == KITTI_LIST
    bts, monodepth2 = read_split_list(tree["bts"], "--data"), read_split_list(tree["monodepth2"], "--data")
    assert [frame_key(f) for f in bts] == [frame_key(f) for f in monodepth2]
    assert len(bts) == NUM_FRAMES and sum(f.no_depth for f in bts) == 1
    assert bts[0].name == f"{DATE}/{DATE}_drive_0001_sync/image_02/data/0000000000"
    assert [frame.camera for frame in bts].count(3) == 1


def test_a_right_camera_line_and_an_unpadded_frame(tmp_path):
    path = tmp_path / "test_files.txt"
    path.write_text(f"{DATE}/{DATE}_drive_0002_sync 69 r\r\n\n")
    (frame,) = read_split_list(path, "--data")
    assert (frame.frame, frame.camera) == (69, 3) and frame.name.endswith("image_03/data/0000000069")


def test_a_bts_line_keeps_its_depth_path_and_a_blank_line_mid_list_is_skipped(tmp_path):
    # BTS's second field is the annotated depth's path, as the list gives it (here one the frame's own path
    # would not give); "None" means no annotated depth. A blank line between two is passed over, not an end.
    path = tmp_path / "eigen_test_files.txt"
    path.write_text(f"{DATE}/{DATE}_drive_0002_sync/image_02/data/0000000069.png elsewhere/69.png 721.5377\n\n"
                    f"{DATE}/{DATE}_drive_0002_sync/image_03/data/0000000070.png None 721.5377\n")  # fmt: skip
    first, second = read_split_list(path, "--data")
    assert (first.depth_name, first.no_depth, first.camera) == ("elsewhere/69.png", False, 2)
    assert (second.depth_name, second.no_depth, second.camera, second.frame) == ("", True, 3, 70)


def test_a_tab_separated_list_is_recognised(tree, tmp_path):
    tabbed = tmp_path / "test_files.txt"
    tabbed.write_text(tree["monodepth2"].read_text().replace(" ", "\t"))
    assert data_kind(tabbed) == KITTI_LIST
    assert [frame_key(f) for f in read_split_list(tabbed, "--data")] == [
        frame_key(f) for f in read_split_list(tree["monodepth2"], "--data")
    ]


def test_what_a_txt_is_told_apart_by_blank_lines_bad_bytes_and_nothing(tmp_path):
    # The first line with something on it, its fields joined by single spaces; bytes that are not UTF-8
    # read as U+FFFD rather than stop; '' for a list of blank lines, a file that is not a .txt, or none.
    (tmp_path / "gaps.txt").write_bytes(f"\n  \r\n{DATE}/{DATE}_drive_0002_sync\t69  l\r\n".encode())
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("\n \n\t\n")
    (tmp_path / "list.csv").write_text(f"{DATE}/{DATE}_drive_0002_sync 69 l\n")
    assert first_list_line(tmp_path / "gaps.txt") == f"{DATE}/{DATE}_drive_0002_sync 69 l"
    assert data_kind(tmp_path / "gaps.txt") == KITTI_LIST
    assert first_list_line(tmp_path / "latin1.txt") == "caf\ufffd au lait"
    assert data_kind(tmp_path / "latin1.txt") == data_kind(tmp_path / "blank.txt") == UNKNOWN_LIST
    assert first_list_line(tmp_path / "blank.txt") == first_list_line(tmp_path / "list.csv") == ""
    assert first_list_line(tmp_path / "missing.txt") == ""


# ----------------------------------------------------------------------------- the Velodyne's ground truth


def test_the_calibration_gives_the_devkits_matrix_for_each_camera(tree):
    for camera in (2, 3):
        projection = camera_projection(tree["raw"] / DATE, camera)
        assert projection.size == KITTI_SIZE
        np.testing.assert_allclose(projection.velodyne_to_image, devkit_matrix(camera), rtol=1e-6, atol=1e-9)
    assert not np.allclose(devkit_matrix(2), devkit_matrix(3), rtol=1e-3)


@pytest.mark.parametrize("camera", [2, 3])
def test_projected_ground_truth_lands_on_the_devkits_pixels(tree, camera):
    """The scans were made to land on chosen pixels of the left camera (exactly, by the devkit's
    equations); the right camera sees them where the devkit says, another place."""
    for (drive, frame, seen_by), expected in tree["expected"].items():
        if seen_by != camera:
            continue
        points = read_velodyne(tree["raw"] / DATE / drive / "velodyne_points" / "data" / f"{frame:010d}.bin")
        got = velodyne_depth_m(points, camera_projection(tree["raw"] / DATE, camera))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert (got > 0).sum() > 1000
    left = tree["expected"][(*RIGHT_CAMERA_FRAME, 2)]
    right = tree["expected"][(*RIGHT_CAMERA_FRAME, 3)]
    assert ((left > 0) != (right > 0)).mean() > 0.01  # the cameras see the scan in other places


@pytest.mark.parametrize("camera", [2, 3])
@pytest.mark.parametrize("depth", ["velodyne", "camera"])
def test_projection_matches_monodepth2_inside_the_crops(tmp_path, camera, depth):
    """Random points around the car, behind it, outside the picture and several on one pixel, against
    monodepth2's per-point rules on the devkit's projection (reference_depth_map)."""
    write_calibration_files(tmp_path)
    projection = camera_projection(tmp_path, camera)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-20, 90, 30000), rng.uniform(-40, 40, 30000), rng.uniform(-3, 2, 30000),
                              rng.uniform(0, 1, 30000)]).astype(np.float32)  # fmt: skip
    points = np.concatenate([points, points[:3000] + [0.3, 0, 0, 0]]).astype(np.float32)
    got = velodyne_depth_m(points, projection, depth)
    reference = reference_depth_map(points, camera, velodyne_depth=depth == "velodyne")
    np.testing.assert_allclose(got, reference, rtol=1e-6)
    assert (got > 0).sum() > 5000
    if depth == "camera":
        assert not np.allclose(got, velodyne_depth_m(points, projection, "velodyne"))


def test_a_calibration_file_is_read_past_lines_it_cannot_use(tmp_path):
    """Blank lines, a line without a colon and a calib_time that is not UTF-8 are passed over, not the end."""
    path = tmp_path / "calib_velo_to_cam.txt"
    path.write_bytes(b"calib_time: 15-Mar-2012 11:37:16 \xe9t\xe9\n\nnotes without a colon\nR: 1 0 0 0 1 0 0 0 1\n"
                     b"T: -0.004 -0.076 -0.27\n")  # fmt: skip
    values = read_calibration_file(path)
    assert sorted(values) == ["R", "T"]
    np.testing.assert_array_equal(values["T"], [-0.004, -0.076, -0.27])
    assert values["R"].dtype == np.float64 and values["R"].sum() == 3


def test_points_behind_outside_or_sharing_a_pixel(tmp_path):
    write_calibration_files(tmp_path)
    projection = camera_projection(tmp_path, 2)
    near, far = points_landing_at([300, 300], [600, 600], [10.0, 30.0])
    (edge,) = points_landing_at([374], [1241], [20.0])  # the last row and column
    (top,) = points_landing_at([0], [700], [15.0])  # the first row
    (close,) = points_landing_at([200], [400], [0.5])  # half a metre ahead: in front, so projected
    at_zero, shadowed = points_landing_at([250, 250], [500, 500], [0.0, 12.0])  # x = 0 is kept, as monodepth2
    behind = -near  # keeps it: nearest on its pixel, it leaves depth 0 there
    outside = near * [1, 50, 1, 1]  # far to the side
    points = np.stack([far, near, edge, top, close, shadowed, at_zero, behind, outside]).astype(np.float32)
    got = velodyne_depth_m(points, projection)
    assert got[300, 600] == pytest.approx(10.0) and got[374, 1241] == pytest.approx(20.0)
    assert got[0, 700] == pytest.approx(15.0) and got[200, 400] == pytest.approx(0.5) and got[250, 500] == 0
    assert (got > 0).sum() == 4 and got.dtype == np.float32


# ----------------------------------------------------------------------------- the dataset and its counts


@pytest.mark.parametrize(
    "list_name, annotated, scored, without",
    [("bts", True, NUM_FRAMES - 1, 1), ("benchmark", True, NUM_FRAMES - 1, 0), ("monodepth2", False, NUM_FRAMES, 0),
     ("bts", False, NUM_FRAMES, 0)],
)  # fmt: skip
def test_frames_without_ground_truth_are_counted(tree, list_name, annotated, scored, without):
    dataset = KittiDataset(tree[list_name], tree["raw"], tree["annotated"] if annotated else None)
    assert (len(dataset), dataset.num_without_gt) == (scored, without)
    for index in (0, len(dataset) - 1):
        image, depth_m = dataset[index]
        assert image.shape == (3, *KITTI_SIZE) and image.dtype == torch.uint8 and depth_m.shape == (1, *KITTI_SIZE)
        expected = tree["expected"][frame_key(dataset.frames[index])]
        tolerance = 0.5 / 256 if annotated else 1e-6 * expected.max()  # the annotated PNGs hold metres x 256
        np.testing.assert_allclose(depth_m[0].numpy(), expected, atol=tolerance)
    assert dataset.frames[-1].camera == 3 or list_name == "benchmark"


def test_missing_annotated_depth_is_an_error_not_frames_without_ground_truth(tree, tmp_path, capsys):
    """Only train/ of data_depth_annotated unzipped: the frames of val/'s drive are missing, which is an
    error naming the first and the count, not a smaller test set scored with exit 0; for BTS's list (which
    names each file) and monodepth2's (which does not) alike."""
    import shutil

    only_train = tmp_path / "annotated"
    shutil.copytree(tree["annotated"] / "train", only_train / "train")
    missing = sum(len(frames) for drive, frames in DRIVES.items() if drive != WITHOUT_ANNOTATION[0]) + 1
    for list_name in ("bts", "benchmark"):
        argv = ["--model", "unused.pth", "--data", tree[list_name], "--kitti_raw", tree["raw"], "--kitti_depth",
                only_train, "--output_dir", tmp_path / "out"]  # fmt: skip
        assert_one_clear_line(run_script(evaluate, argv, capsys), f"{missing} of the", "the first:",
                              "_drive_0002_sync/proj_depth/groundtruth/image_02/0000000005.png")  # fmt: skip
    # monodepth2's lists name no ground-truth file: a frame KITTI left unannotated in a drive it annotated
    # is left out and said (its training lists have many), while a drive not there at all stops, as above.
    dataset = KittiDataset(tree["monodepth2"], tree["raw"], tree["annotated"])
    assert (len(dataset), dataset.num_without_gt) == (NUM_FRAMES - 1, 1)
    assert dataset.describe_without_gt() == (f"1 of its {NUM_FRAMES} frames have no ground truth (not annotated by "
                                             "KITTI's depth benchmark)")  # fmt: skip


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


@pytest.mark.slow  # evaluate.py on a KITTI tree, 10 s each on Zen 3 (test_protocol.py checks the steps in-process)
@pytest.mark.parametrize(("list_name", "annotated"), [("bts", True), ("monodepth2", False)])
def test_evaluation_matches_an_independent_computation(tree, kitti_checkpoint, tmp_path, capsys, list_name, annotated):
    """The scores of evaluate.py --data LIST equal numpy's metrics on the depth --img writes for each frame."""
    gt_flags = ["--kitti_depth", tree["annotated"]] if annotated else []
    status, out, err = run_script(evaluate, ["--model", kitti_checkpoint, "--data", tree[list_name],
                                             "--kitti_raw", tree["raw"], *gt_flags, "--output_dir", tmp_path / "eval",
                                             "--precision", "fp32", "--num_examples", 1], capsys)  # fmt: skip
    assert status == 0, err
    scored = NUM_FRAMES - 1 if annotated else NUM_FRAMES
    counts = f"{scored} of {NUM_FRAMES} frames scored" + ("; 1 without ground truth" if annotated else "")
    assert counts in out and "silog" in out
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["frames"] == counts and report["crop"] == "garg" and report["gt_range_m"] == [1e-3, 80]
    assert (report["frames_listed"], report["frames_without_gt"]) == (NUM_FRAMES, NUM_FRAMES - scored)
    dataset = KittiDataset(tree[list_name], tree["raw"], tree["annotated"] if annotated else None)
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


def test_the_benchmark_crop_and_the_scored_box_inside_it_by_hand():
    # BTS's crop of a 375x1242 frame: top 375 - 352 = 23, left (1242 - 1216) // 2 = 13, right 13 + 1215.
    assert kb_crop_box(*KITTI_SIZE) == (23, 374, 13, 1228)
    assert kb_crop_box(352, 1216) == (0, 351, 0, 1215)  # a frame of the crop's own size is its own crop
    for height, width in ((351, 1216), (352, 1215)):
        with pytest.raises(ValueError, match=f"^a {width}x{height} frame is smaller than the benchmark crop's 1216x352$"):
            kb_crop_box(height, width)
    with pytest.raises(UserError, match="^--kb_crop: a 1215x352 frame is smaller than"):
        next(kb_cropped([(torch.zeros(1, 3, 352, 1215), torch.zeros(1, 1, 352, 1215))], "garg"))
    # Garg's crop of the frame: rows int(0.40810811 * 375) = 153 to int(0.99189189 * 375) - 1 = 370, columns
    # int(0.03594771 * 1242) = 44 to int(0.96405229 * 1242) - 1 = 1196; all inside the benchmark crop, so
    # in its rows and columns: 153 - 23, 370 - 23, 44 - 13, 1196 - 13. The whole frame ('none') is cut to it.
    assert kb_crop_scoring_box("garg", *KITTI_SIZE) == (130, 347, 31, 1183)
    assert kb_crop_scoring_box("none", *KITTI_SIZE) == (0, 351, 0, 1215)
    images = torch.zeros(2, 3, *KITTI_SIZE)
    images[:, :, 23, 13], images[:, :, 374, 1228] = 1, 2  # the benchmark crop's corners
    depth_m = images[:, :1] * 10
    (cut_images, cut_depth_m, scored), *rest = list(kb_cropped([(images, depth_m)], "garg"))
    assert not rest and scored == (130, 347, 31, 1183)
    assert cut_images.shape == (2, 3, 352, 1216) and cut_depth_m.shape == (2, 1, 352, 1216)
    assert (cut_images[..., 0, 0] == 1).all() and (cut_images[..., -1, -1] == 2).all()
    assert cut_images.sum() == 2 * 3 * (1 + 2)
    assert (cut_depth_m[..., 0, 0] == 10).all() and (cut_depth_m[..., -1, -1] == 20).all()


@pytest.mark.slow  # evaluate.py twice, 7 s on Zen 3
def test_kb_crop_predicts_on_the_benchmark_crop_and_scores_in_the_full_frame(tree, kitti_checkpoint, tmp_path, capsys):
    """Garg's crop lies inside the benchmark crop, so the same pixels are scored with and without --kb_crop:
    the pixels outside Garg's crop are not counted as left out."""
    reports = {}
    for kb_crop in ([], ["--kb_crop"]):
        out = tmp_path / ("kb" if kb_crop else "full")
        status, stdout, err = run_script(evaluate, ["--model", kitti_checkpoint, "--data", tree["bts"], "--kitti_raw",
                                                    tree["raw"], "--kitti_depth", tree["annotated"], *kb_crop,
                                                    "--output_dir", out, "--num_examples", 1], capsys)  # fmt: skip
        assert status == 0, err
        reports[bool(kb_crop)] = json.loads((out / "metrics.json").read_text())
    kb, full = reports[True], reports[False]
    assert kb["kb_crop"] is True and kb["num_images"] == NUM_FRAMES - 1 and math.isfinite(kb["per_image"]["silog"])
    assert (kb["num_valid_pixels"], kb["num_invalid_pixels"]) == (full["num_valid_pixels"], full["num_invalid_pixels"])
    garg = crop_box("garg", *KITTI_SIZE)
    assert full["num_valid_pixels"] + full["num_invalid_pixels"] == (NUM_FRAMES - 1) * (garg[1] - garg[0] + 1) * (
        garg[3] - garg[2] + 1
    )
    assert kb["per_image"]["delta1"] != full["per_image"]["delta1"]  # predicted on another picture
    assert (tmp_path / "kb" / "examples" / "0000.png").is_file()


# ----------------------------------------------------------------------------- training


@pytest.mark.slow  # trains and evaluates, 6 s each on Zen 3
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
