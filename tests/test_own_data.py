"""Datasets of one's own: CSVs and rgb/ + depth/ folders, every depth format, indoor dense and
outdoor sparse (KITTI-like), trained, resumed, fine-tuned and evaluated with each crop."""

import json

import numpy as np
import pytest
import torch
from helpers import TINY_SIZE, assert_one_clear_line, run_script
from PIL import Image

import evaluate
import train
from data import DecodeError, collate_pairs, decode_depth, encode_depth_file
from densedepth.depth import DepthRange
from densedepth.protocol import CROPS, crop_box
from loss import DepthLoss
from metrics import DepthMetrics
from model import DenseDepth, settings_config
from sample_data import write_rgbd_folder, write_sample_data
from utils import load_checkpoint

KITTI_SIZE = (375, 1242)  # height, width of a KITTI frame
PNG_SCALES = {"png16": 1000, "png8": 25, "npy": None, "tiff": None}  # png8: 25 units per metre, up to 10.2 m


@pytest.fixture(scope="module")
def indoor(tmp_path_factory):
    """Rendered rooms as a dataset of one's own: (train.csv, test.csv), 16-bit PNG millimetres."""
    out = tmp_path_factory.mktemp("indoor")
    height, width = TINY_SIZE
    return write_sample_data(out, 8, 4, width, height, views_per_scene=4, seed=0, workers=1, layout="folders")


def kitti_like_pairs(count, seed=0):
    """Outdoor pairs at KITTI's 1242x375: a road whose depth grows toward the horizon (1 to 120 m, so
    some is beyond the 80 m cap), no depth in the sky, and LiDAR-like sparsity (about 1 pixel in 12)."""
    rng = np.random.default_rng(seed)
    height, width = KITTI_SIZE
    rows = np.arange(height, dtype=np.float32)[:, None]
    horizon = 0.35 * height
    pairs = []
    for index in range(count):
        depth_m = np.where(rows > horizon, 1.6 * 720 / np.maximum(rows - horizon, 1e-3), 0).astype(np.float32)
        depth_m = np.broadcast_to(np.minimum(depth_m, 120), (height, width)).copy()
        depth_m[:, (index * 97) % width : (index * 97) % width + 150] *= 0.6  # a car
        depth_m[rng.random((height, width)) > 1 / 12] = 0
        shade = np.clip(255 - np.minimum(depth_m, 80) * 3, 0, 255)
        rgb = np.stack([shade, np.full_like(shade, 120 + 10 * index), 255 - shade], axis=-1).astype(np.uint8)
        rgb[: int(horizon)] = (135, 180, 235)  # sky
        pairs.append((rgb, depth_m))
    return pairs


@pytest.fixture(scope="module")
def outdoor(tmp_path_factory):
    """KITTI-like sparse pairs stored x256 in 16-bit PNGs, as rgb/ + depth/ folders: (train, val)."""
    out = tmp_path_factory.mktemp("outdoor")
    write_rgbd_folder(out / "train", kitti_like_pairs(4, seed=0), "png16", png_scale=256)
    write_rgbd_folder(out / "val", kitti_like_pairs(2, seed=1), "png16", png_scale=256)
    return out / "train", out / "val"


def own_argv(data, checkpoint_dir, *extra):
    argv = ["--data_dir", data, "--checkpoint_dir", checkpoint_dir, "--epochs", 1, "--batch_size", 2]
    return argv + ["--input_size", 64, 64, "--no_pretrained", "--decoder_width", 0.0625, "--workers", 0, *extra]


# ----------------------------------------------------------------------------- reading depth


@pytest.mark.parametrize("kind", PNG_SCALES)
def test_every_depth_format_reads_back_in_metres(kind):
    depth_m = np.array([[0.0, 1.5, 4.25], [2.0, 8.0, 10.0]], dtype=np.float32)
    read = decode_depth(encode_depth_file(depth_m, kind, PNG_SCALES[kind] or 1), PNG_SCALES[kind])
    step = 1 / PNG_SCALES[kind] if PNG_SCALES[kind] else 0
    assert read.shape == (1, 2, 3) and read.dtype == torch.float32
    assert np.allclose(read[0].numpy(), depth_m, atol=step / 2 + 1e-6)


def test_kitti_depth_is_stored_x256_and_a_png_needs_its_scale():
    depth_m = np.array([[0.0, 12.5, 79.99]], dtype=np.float32)
    png = encode_depth_file(depth_m, "png16", 256)
    assert np.asarray(Image.open(__import__("io").BytesIO(png))).tolist() == [[0, 3200, 20477]]
    assert np.allclose(decode_depth(png, 256)[0].numpy(), [[0, 12.5, 20477 / 256]])
    with pytest.raises(DecodeError, match="--depth_scale"):
        decode_depth(png, None)
    with pytest.raises(DecodeError, match="is not a depth file this code reads"):
        decode_depth(b"GIF89a....", 256)


def test_crops_follow_their_published_definitions():
    height, width = KITTI_SIZE
    # Garg: rows 0.40810811 H .. 0.99189189 H, columns 0.03594771 W .. 0.96405229 W, end-exclusive.
    assert crop_box("garg", height, width) == (153, 370, 44, 1196)
    assert crop_box("eigen_kitti", height, width) == (124, 341, 44, 1196)
    assert crop_box("eigen", 480, 640) == (20, 459, 24, 615)
    assert crop_box("none", height, width) == (0, height - 1, 0, width - 1)


def test_metrics_leave_out_missing_depth_and_depth_beyond_the_cap():
    gt = torch.tensor([[[0.0, 2.0, 4.0], [float("nan"), 90.0, 10.0]]])
    pred = torch.tensor([[[5.0, 2.5, 4.0], [5.0, 5.0, 8.0]]])
    metrics = DepthMetrics(max_depth_m=80)
    metrics.update(pred, gt)
    values = metrics.compute()
    # By hand, over the three valid pixels (2, 4, 10 m against 2.5, 4, 8 m):
    assert values["delta1"] == pytest.approx(1 / 3)  # ratios 1.25 (not < 1.25), 1, 1.25
    values = {key: values[key] for key in ("abs_rel", "rms", "sq_rel")}
    assert values == pytest.approx(
        {
            "abs_rel": (0.5 / 2 + 0 + 2 / 10) / 3,
            "rms": np.sqrt((0.25 + 0 + 4) / 3),
            "sq_rel": (0.25 / 2 + 0 + 4 / 10) / 3,
        }
    )
    assert metrics.summary()["num_valid_pixels"] == 3 and metrics.summary()["num_invalid_pixels"] == 3


# ----------------------------------------------------------------------------- training and evaluation


@pytest.mark.slow  # trains twice and evaluates, 13 s on Zen 3
def test_train_resume_and_evaluate_on_an_indoor_csv(indoor, tmp_path, capsys):
    train_csv, test_csv = indoor
    run = tmp_path / "run"
    status, out, err = run_script(train, own_argv(train_csv, run, "--depth_scale", 1000), capsys)
    assert status == 0, err
    assert "validating on 1 held-out pairs" in out and "7 training pairs" in out
    status, out, err = run_script(
        train, own_argv(train_csv, run, "--depth_scale", 1000, "--checkpoint", run / "last.pth", "--epochs", 2), capsys
    )
    assert status == 0, err
    checkpoint = load_checkpoint(run / "last.pth")
    assert checkpoint["epoch"] == 2 and checkpoint["args"]["depth_scale"] == 1000
    argv = ["--model", run / "last.pth", "--data", test_csv, "--depth_scale", 1000, "--output_dir", tmp_path / "ev"]
    status, out, err = run_script(evaluate, argv + ["--crop", "eigen"], capsys)
    assert status == 0, err
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["num_images"] == 4 and report["crop"] == "eigen" and report["max_depth_m"] == 10.0
    assert (tmp_path / "ev" / "examples" / "0000.png").is_file()


@pytest.mark.slow  # trains twice for each format, 10 s each on Zen 3
@pytest.mark.parametrize("kind", ["png8", "npy", "tiff"])
def test_fine_tune_from_weights_on_each_depth_format(indoor, tmp_path, capsys, kind):
    """The indoor pairs rewritten in another format, as rgb/ + depth/ folders, fine-tuned from a model."""
    start = tmp_path / "start"
    assert run_script(train, own_argv(indoor[0], start, "--depth_scale", 1000), capsys)[0] == 0
    pairs = [(np.asarray(Image.open(rgb)), decode_depth((indoor[0].parent / depth).read_bytes(), 1000)[0].numpy())
             for rgb, depth in _csv_pairs(indoor[0])]  # fmt: skip
    folder = tmp_path / kind
    write_rgbd_folder(folder, pairs, kind, PNG_SCALES[kind] or 1)
    scale = ["--depth_scale", PNG_SCALES[kind]] if PNG_SCALES[kind] else []
    argv = own_argv(folder, tmp_path / "tuned", "--weights", start / "last.pth", "--val_data", folder, *scale)
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    assert "a new run from the weights" in out and "8 training pairs" in out
    assert load_checkpoint(tmp_path / "tuned" / "last.pth")["epoch"] == 1


def _csv_pairs(csv_path):
    for line in csv_path.read_text().splitlines():
        rgb, depth = line.split(",")
        yield csv_path.parent / rgb, depth


@pytest.mark.slow  # trains and evaluates four ways, 16 s on Zen 3
def test_kitti_like_sparse_data_trains_with_its_range_and_evaluates_with_each_crop(outdoor, tmp_path, capsys):
    train_dir, val_dir = outdoor
    run = tmp_path / "run"
    argv = own_argv(train_dir, run, "--val_data", val_dir, "--depth_scale", 256, "--min_depth", 1, "--max_depth", 80)
    argv += ["--input_size", 64, 192]
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    assert "depth 1 to 80 m" in out
    checkpoint = load_checkpoint(run / "last.pth")
    assert (checkpoint["config"]["min_depth_m"], checkpoint["config"]["max_depth_m"]) == (1.0, 80.0)
    assert np.isfinite(checkpoint["history"][0]["train_loss"])
    for crop in CROPS:
        out_dir = tmp_path / crop
        argv = ["--model", run / "last.pth", "--data", val_dir, "--depth_scale", 256, "--crop", crop]
        status, _, err = run_script(evaluate, argv + ["--output_dir", out_dir, "--num_examples", 0], capsys)
        assert status == 0, err
        report = json.loads((out_dir / "metrics.json").read_text())
        assert report["crop"] == crop and report["max_depth_m"] == 80.0 and report["num_images"] == 2
        assert 0 < report["per_image"]["delta3"] <= 1


def test_evaluation_equals_a_hand_computation_with_crop_mask_and_cap(outdoor, tmp_path, capsys):
    """A model that predicts 20 m everywhere (its head's bias alone), on the KITTI-like pairs:
    the metrics must be those of 20 m against the ground truth inside the Garg crop, where it
    is measured and at most 80 m, averaged over the pictures."""
    model = DenseDepth(0.0625, depth_range=DepthRange(1, 80))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(80 / 20)  # y = 80 / depth
    checkpoint = {"model": model.state_dict(), "config": settings_config(0.0625, (64, 192), DepthRange(1, 80))}
    torch.save({**checkpoint, "args": {}}, tmp_path / "constant.pth")
    val_dir = outdoor[1]
    argv = ["--model", tmp_path / "constant.pth", "--data", val_dir, "--depth_scale", 256, "--crop", "garg"]
    status, _, err = run_script(evaluate, argv + ["--output_dir", tmp_path, "--precision", "fp32"], capsys)
    assert status == 0, err
    report = json.loads((tmp_path / "metrics.json").read_text())
    abs_rel, rms, delta1 = [], [], []
    for depth_file in sorted((val_dir / "depth").iterdir()):
        gt = np.asarray(Image.open(depth_file), dtype=np.float64) / 256
        top, bottom, left, right = 153, 370, 44, 1196  # Garg at 375x1242
        gt = gt[top : bottom + 1, left : right + 1]
        gt = gt[(gt > 0) & (gt <= 80)]
        abs_rel.append(np.mean(np.abs(gt - 20) / gt))
        rms.append(np.sqrt(np.mean((gt - 20) ** 2)))
        delta1.append(np.mean(np.maximum(gt / 20, 20 / gt) < 1.25))
    got = report["per_image"]
    assert (got["abs_rel"], got["rms"], got["delta1"]) == pytest.approx(
        (np.mean(abs_rel), np.mean(rms), np.mean(delta1)), rel=1e-5
    )


# ----------------------------------------------------------------------------- bad data


def test_bad_datasets_get_one_clear_line(indoor, tmp_path, capsys):
    train_csv = indoor[0]
    lines = train_csv.read_text().splitlines()
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join([*lines, "train/rgb/99999.jpg,train/depth/99999.png"]) + "\n")
    (tmp_path / "train").symlink_to(train_csv.parent / "train")
    result = run_script(train, own_argv(missing, tmp_path / "a", "--depth_scale", 1000), capsys)
    assert_one_clear_line(result, "missing.csv line 9 names train/rgb/99999.jpg, which is not in")

    result = run_script(train, own_argv(train_csv, tmp_path / "b"), capsys)
    assert_one_clear_line(result, "--data_dir", "train/depth/00000.png is a depth PNG", "give --depth_scale")

    folder = tmp_path / "sizes"
    write_rgbd_folder(folder, [(np.zeros((48, 64, 3), np.uint8), np.ones((24, 32), np.float32))] * 2, "npy")
    result = run_script(train, own_argv(folder, tmp_path / "c"), capsys)
    assert_one_clear_line(result, "rgb/00000.jpg is 64x48 but its depth depth/00000.npy is 32x24")

    (folder / "rgb" / "extra.jpg").write_bytes((folder / "rgb" / "00000.jpg").read_bytes())
    result = run_script(train, own_argv(folder, tmp_path / "d"), capsys)
    assert_one_clear_line(result, "extra.jpg has no depth file")

    argv = ["--model", "x.pth", "--data", indoor[1], "--depth_scale", -1]
    assert_one_clear_line(run_script(evaluate, argv, capsys), "--depth_scale must be positive")


def test_sparse_depth_keeps_its_measurements_at_the_output_size():
    rgb, depth_m = kitti_like_pairs(1)[0]
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    depth = torch.from_numpy(depth_m)[None, None]
    _, small = train.training_batch(images, depth, (64, 192), torch.device("cpu"), DepthRange(1, 80), True)
    valid = torch.isfinite(small)
    assert small.shape == (1, 1, 32, 96)
    assert valid[..., 20:, :].all()  # the road: 1 pixel in 12 measured, every output pixel keeps some
    assert not valid[..., :8, :].any()  # the sky has no depth
    assert 1 <= small[valid].min() and small[valid].max() <= 80
    # Where measured, the output is close to the true road depth at that row.
    row = 28
    true_m = np.median(depth_m[int((row + 0.5) * 375 / 32)][depth_m[int((row + 0.5) * 375 / 32)] > 0])
    assert abs(float(small[0, 0, row].median()) - true_m) / true_m < 0.2


def test_the_loss_leaves_out_pixels_without_depth():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 24, 32) * 10 + 1
    target = torch.rand(2, 1, 24, 32) * 10 + 1
    assert torch.allclose(DepthLoss(mask_invalid=True)(pred, target), DepthLoss()(pred, target))  # none missing
    target[..., :8] = torch.nan  # no depth in the first 8 columns
    moved = pred.clone()
    moved[..., :6] += 5  # a different prediction where there is no depth

    def l1_term(prediction):  # the loss with L1 weighted 1, less the loss with L1 weighted 0
        return DepthLoss(mask_invalid=True, l1_weight=1.0)(prediction, target) - DepthLoss(
            mask_invalid=True, l1_weight=0.0
        )(prediction, target)

    assert torch.allclose(l1_term(moved), l1_term(pred)) and l1_term(pred) > 0
    loss = DepthLoss(mask_invalid=True)(pred.requires_grad_(), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_pairs_of_another_size_keep_their_holes_when_batched():
    """KITTI's frames differ by a few pixels: the batch resizes them, which must not turn holes into
    depth nor clip far depth to NYU's 10 m."""
    depth = torch.zeros(1, 48, 64)
    depth[..., ::4, ::4] = 30.0
    other = torch.zeros(1, 50, 66)
    other[..., ::4, ::4] = 30.0
    blank = torch.zeros(3, 48, 64, dtype=torch.uint8), torch.zeros(3, 50, 66, dtype=torch.uint8)
    _, depths, _ = collate_pairs([(blank[0], depth), (blank[1], other)])
    resized = depths[1]
    assert resized.shape == (1, 48, 64)
    assert torch.allclose(resized[resized > 0], torch.tensor(30.0), rtol=1e-4)
    assert (resized == 0).float().mean() > 0.5  # still mostly holes


def test_a_training_pair_with_nothing_measured_is_skipped_and_reported(tmp_path, capsys):
    """A depth picture all 0 (or all beyond --max_depth) in sparse training data: the run goes on, the
    pair named as a skipped pair (not counted against --max_bad_fraction: no pair may fail to load here),
    and the weights stay finite."""
    pairs = kitti_like_pairs(5)
    pairs[2] = (pairs[2][0], np.zeros_like(pairs[2][1]))  # nothing measured
    pairs[3] = (pairs[3][0], np.where(pairs[3][1] > 0, 95.0, 0).astype(np.float32))  # all beyond 80 m
    csv = write_rgbd_folder(tmp_path / "train", pairs, "png16", png_scale=256)
    val = write_rgbd_folder(tmp_path / "val", kitti_like_pairs(1, seed=1), "png16", png_scale=256)
    argv = own_argv(csv, tmp_path / "run", "--val_data", val, "--depth_scale", 256, "--min_depth", 1, "--max_depth",
                    80, "--batch_size", 1, "--max_bad_fraction", 0)  # fmt: skip (not damage: never counted)
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    for name in ("train/depth/00002.png", "train/depth/00003.png"):
        assert f"skipped training pair train/rgb/{name[12:17]}.jpg: has no measured depth in 0 < d <= 80 m" in out + err
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())
