"""Pictures, plots, point clouds and the training log files."""

import csv
import io

import numpy as np
import pytest
from PIL import Image

from data import scaled_intrinsics
from densedepth.visualize import (
    INVALID_RGB,
    OUTSIDE_CROP_RGB,
    TrainingLog,
    backproject,
    colorbar,
    colorize_depth,
    depth_picture,
    error_picture,
    history_csv,
    plot_curves,
    ply_bytes,
    prediction_grid,
    side_by_side,
)
from metrics import METRIC_NAMES


def read_ply(data):
    """(header lines, structured vertex array) of a binary little-endian PLY with x y z red green blue."""
    header, _, body = data.partition(b"end_header\n")
    vertex = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    return header.decode("ascii").splitlines(), np.frombuffer(body, dtype=vertex)


def test_colorize_depth():
    depth = np.linspace(0.5, 5, 12, dtype=np.float32).reshape(3, 4)
    picture = colorize_depth(depth)
    assert picture.shape == (3, 4, 3) and picture.dtype == np.uint8
    assert picture[0, 0].sum() < picture[-1, -1].sum()  # plasma: near is dark, far is bright
    # with a fixed range, 5 m gets the same colour in any map; with the map's own range it need not
    wide, narrow = np.array([[1.0, 5.0, 9.0]]), np.array([[4.0, 5.0, 8.0]])
    assert np.array_equal(colorize_depth(wide, 0, 10)[0, 1], colorize_depth(narrow, 0, 10)[0, 1])
    assert not np.array_equal(colorize_depth(wide)[0, 1], colorize_depth(narrow)[0, 1])


def test_pixels_without_depth_are_white_and_do_not_set_the_range():
    depth = np.array([[1.0, 3.0, np.nan, 0.0]], dtype=np.float32)
    picture = colorize_depth(depth)
    assert picture[0, 2].tolist() == list(INVALID_RGB) and picture[0, 3].tolist() == list(INVALID_RGB)
    assert np.array_equal(picture[0, :2], colorize_depth(np.array([[1.0, 3.0]]))[0])


def test_colour_bar_sits_beside_the_depth_at_its_height():
    depth = np.linspace(1, 4, 120 * 160, dtype=np.float32).reshape(120, 160)
    bar = colorbar(120, 1.0, 4.0)
    assert bar.shape[0] == 120 and bar.dtype == np.uint8 and 40 < bar.shape[1] < 160
    with_bar = depth_picture(depth, with_colorbar=True)
    assert with_bar.shape == (120, 160 + 4 + bar.shape[1], 3)
    assert np.array_equal(with_bar[:, :160], depth_picture(depth))  # the depth's own pixels are untouched
    assert side_by_side(np.zeros((120, 50, 3), np.uint8), with_bar).shape == (120, 50 + 4 + with_bar.shape[1], 3)


def test_error_picture_is_grey_outside_the_crop_and_white_without_ground_truth():
    gt = np.full((10, 12), 2.0, dtype=np.float32)
    gt[5, 5] = 0.0
    pred = gt.copy()
    pred[3, 3] = 3.0  # 50 % off: the top of the scale
    picture = error_picture(pred, gt, (2, 7, 1, 10))
    assert picture[0, 0].tolist() == list(OUTSIDE_CROP_RGB) and picture[9, 11].tolist() == list(OUTSIDE_CROP_RGB)
    assert picture[5, 5].tolist() == list(INVALID_RGB)
    assert picture[4, 4].sum() < 30  # no error: magma's black
    assert picture[3, 3].sum() > 600  # saturated: magma's pale yellow


def test_backprojection_checked_by_hand():
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    depth[5, 10] = 3.0
    fx, fy, cx, cy = scaled_intrinsics(48, 64)
    assert (fx, fy, cx, cy) == pytest.approx((51.88579, 51.94696, 32.55824, 25.37362))
    points = backproject(depth, (fx, fy, cx, cy))
    assert points.shape == (48 * 64, 3)
    # pixel (row 5, column 10) at 3 m: x = (10 - 32.55824) * 3 / 51.88579, y = (5 - 25.37362) * 3 / 51.94696
    assert points[5 * 64 + 10] == pytest.approx((-1.304301, -1.176598, 3.0), abs=1e-5)


def test_ply_holds_every_pixel_with_its_colour():
    depth = np.full((4, 6), 1.5, dtype=np.float32)
    colours = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(-1, 3)
    points = backproject(depth, (10.0, 10.0, 3.0, 2.0))
    header, vertices = read_ply(ply_bytes(points, colours))
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 24"]
    assert len(vertices) == 24
    assert (vertices["x"][0], vertices["y"][0], vertices["z"][0]) == pytest.approx((-0.45, -0.3, 1.5))
    assert [vertices[0]["red"], vertices[0]["green"], vertices[0]["blue"]] == [0, 1, 2]
    assert vertices[-1]["blue"] == 71


def history(epochs):
    rng = np.random.default_rng(0)
    return [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "seconds": 2.5,
            **dict(zip(METRIC_NAMES, rng.random(len(METRIC_NAMES)).tolist())),
        }
        for e in range(1, epochs + 1)
    ]


def test_history_csv_round_trips():
    rows = list(csv.DictReader(io.StringIO(history_csv(history(3)))))
    assert len(rows) == 3 and list(rows[0]) == ["epoch", "train_loss", "seconds", *METRIC_NAMES]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert float(rows[2]["delta1"]) == pytest.approx(history(3)[2]["delta1"], rel=1e-5)


def test_plots_and_grids_are_pictures():
    for rows in (history(1), history(5)):
        assert Image.open(io.BytesIO(plot_curves(rows))).size == (1000, 700)
    image = np.zeros((48, 64, 3), np.uint8)
    depth = np.linspace(1, 3, 48 * 64, dtype=np.float32).reshape(48, 64)
    grid = prediction_grid([(image, depth, depth)] * 3, "epoch 1")
    # 3 rows of 3 tiles of 220x165 px, 6 px apart, under a 60 px title
    assert grid.dtype == np.uint8 and grid.shape == (3 * 165 + 4 * 6 + 60, 3 * 220 + 4 * 6, 3)


def test_training_log_writes_its_files_and_skips_tensorboard_quietly_without_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    log = TrainingLog(tmp_path, first_sample=0)
    assert log.tensorboard is None
    grid = np.zeros((30, 40, 3), np.uint8)
    log.end_epoch(history(2), grid, samples_seen=16)
    log.close()
    assert (tmp_path / "log.csv").read_text().count("\n") == 3
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "predictions" / "epoch_002.png").is_file()
    assert not (tmp_path / "tensorboard").exists()
    assert capsys.readouterr() == ("", "")


def test_training_log_writes_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    log = TrainingLog(tmp_path, first_sample=0)
    log.add_loss(8, 0.5)
    log.end_epoch(history(1), np.zeros((30, 40, 3), np.uint8), samples_seen=16)
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
