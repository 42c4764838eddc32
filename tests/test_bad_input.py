"""Bad input of every kind: one sentence on stderr naming what is wrong, exit status 2, no trace.

The scripts run in-process through run_main, the same path as their command lines.
"""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from helpers import TINY_SIZE, assert_one_clear_line, rewrite_zip, run_script, tiny_train_argv
from PIL import Image

import evaluate
import train
from data import EIGEN_CROP, EIGEN_DEPTH, EIGEN_RGB, TRAIN_CSV, encode_picture, write_npy_member


def train_argv(data, checkpoint_dir, *extra, epochs=1, batch_size=4):
    return tiny_train_argv(data, checkpoint_dir, "--workers", 0, *extra, epochs=epochs, batch_size=batch_size)


def first_pair(train_zip):
    with zipfile.ZipFile(train_zip) as archive:
        return archive.read(TRAIN_CSV).decode().splitlines()[0].split(",")


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--batch_size", 0], "--batch_size must be at least 1, got 0"),
        (["--epochs", -2], "--epochs must be at least 1, got -2"),
        (["--input_size", 0, 64], "--input_size must be two positive numbers"),
        (["--input_size", -64, 64], "--input_size must be two positive numbers"),
        (["--input_size", 20, 64], "each side must be at least 21"),
        (["--lr", -0.1], "--lr must be positive"),
        (["--decoder_width", 0], "--decoder_width must be positive"),
        (["--workers", -1], "--workers must be 0 or more"),
        (["--l1_weight", -1], "--l1_weight must be 0 or more, got -1.0"),
        (["--gradient_weight", -0.5], "--gradient_weight must be 0 or more, got -0.5"),
        (["--max_bad_fraction", 1.5], "--max_bad_fraction must be in [0, 1)"),
        (["--log_interval", 0], "--log_interval must be at least 1"),
    ],
)
def test_training_flags_that_make_no_sense(tiny_zips, tmp_path, capsys, flags, needle):
    argv = train_argv(tiny_zips[0], tmp_path) + flags  # later flags win
    assert_one_clear_line(run_script(train, argv, capsys), needle)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--data", "a.zip", "--img", "b.png"], "give exactly one of --data (a test zip) and --img (pictures)"),
        ([], "give exactly one of --data (a test zip) and --img (pictures)"),
        (["--img", "b.png", "--batch_size", 0], "--batch_size must be at least 1, got 0"),
        (["--data", "a.zip", "--num_examples", -1], "--num_examples must be 0 or more, got -1"),
        (["--img", "b.png", "--depth_range", 5, 2], "--depth_range must be two depths in metres, MIN < MAX"),
        (["--img", "b.png", "--cmap", "rainbowz"], "--cmap rainbowz is not a matplotlib colour map"),
        (["--img", "b.png", "--intrinsics", 0, 500, 320, 240], "--intrinsics FX and FY must be positive"),
        (["--img", "nowhere.png"], "--img nowhere.png does not exist"),
        (["--img", "nowhere/*.png"], "--img nowhere/*.png matches no picture file"),
    ],
)
def test_evaluation_flags_that_make_no_sense(tmp_path, capsys, flags, needle):
    result = run_script(evaluate, ["--model", tmp_path / "any.pth", *flags], capsys)
    assert_one_clear_line(result, needle)


def test_output_places_that_cannot_be_written(tiny_zips, tmp_path, capsys):
    (tmp_path / "a_file").write_text("in the way")
    result = run_script(train, train_argv(tiny_zips[0], tmp_path / "a_file"), capsys)
    assert_one_clear_line(result, "--checkpoint_dir", "a_file cannot be created")
    picture = tmp_path / "b.png"
    Image.new("RGB", (8, 8)).save(picture)
    argv = ["--model", tmp_path / "m.pth", "--img", picture, "--output_dir", tmp_path / "a_file" / "out"]
    assert_one_clear_line(run_script(evaluate, argv, capsys), "--output_dir", "cannot be created")
    assert (tmp_path / "a_file").read_text() == "in the way"


# ----------------------------------------------------------------------------- the training zip


def test_training_data_that_is_not_there_or_not_a_zip(tiny_zips, tmp_path, capsys):
    train_zip = tiny_zips[0]
    (tmp_path / "notes.txt").write_text("not a zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(train_zip.read_bytes()[: train_zip.stat().st_size // 2])
    damaged = tmp_path / "damaged.zip"
    data = bytearray(train_zip.read_bytes())
    directory = data.rindex(b"PK\x01\x02")  # the last entry of the table of contents
    data[directory : directory + 4] = b"XXXX"
    damaged.write_bytes(bytes(data))
    without_csv = rewrite_zip(train_zip, tmp_path / "no_csv.zip", drop=[TRAIN_CSV])
    cases = [
        (tmp_path / "nowhere.zip", "--data_dir", "nowhere.zip does not exist"),
        (tmp_path / "notes.txt", "notes.txt is a .txt whose first line 'not a zip' is neither a KITTI split list's"),
        (truncated, "truncated.zip is not a zip file, or is truncated"),
        (damaged, "damaged.zip is a damaged zip file"),
        (without_csv, f"no_csv.zip has no {TRAIN_CSV}"),
        (tmp_path, "holds neither data/nyu2_train.csv nor nyu_data.zip"),
    ]
    for path, *needles in cases:
        assert_one_clear_line(run_script(train, train_argv(path, tmp_path / "out"), capsys), *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_csv_rows_malformed_or_naming_missing_entries(tiny_zips, tmp_path, capsys):
    train_zip = tiny_zips[0]
    with zipfile.ZipFile(train_zip) as archive:
        rows = archive.read(TRAIN_CSV).decode().splitlines()
    malformed = rewrite_zip(train_zip, tmp_path / "a.zip", {TRAIN_CSV: "\n".join([rows[0], "only-one-field", *rows])})
    missing = rewrite_zip(train_zip, tmp_path / "b.zip", {TRAIN_CSV: "\n".join([*rows, "data/x.jpg,data/x.png"])})
    not_text = rewrite_zip(train_zip, tmp_path / "c.zip", {TRAIN_CSV: b"\xff\xfe\x00binary"})
    empty = rewrite_zip(train_zip, tmp_path / "d.zip", {TRAIN_CSV: "\n\n"})
    for path, needles in (
        (malformed, [f"{TRAIN_CSV} line 2 is not 'rgb_path,depth_path': 'only-one-field'"]),
        (missing, [f"{TRAIN_CSV} line 9 names data/x.jpg, which is not in", "b.zip"]),
        (not_text, [f"{TRAIN_CSV} in", "is not UTF-8 text"]),
        (empty, [f"{TRAIN_CSV} in", "lists no pairs"]),
    ):
        assert_one_clear_line(run_script(train, train_argv(path, tmp_path / "out"), capsys), *needles)


def bad_pair_zips(train_zip, tmp_path):
    """Training zips whose first pair is broken in one way each: (name, zip, expected words)."""
    rgb_name, depth_name = first_pair(train_zip)
    with zipfile.ZipFile(train_zip) as archive:
        jpeg = archive.read(rgb_name)
    height, width = TINY_SIZE
    small_depth = encode_picture(np.zeros((height // 2, width // 2), np.uint8), "PNG")
    rgb_depth = encode_picture(np.zeros((height, width, 3), np.uint8), "PNG")
    palette = io.BytesIO()
    Image.new("P", (width, height)).save(palette, format="PNG")
    # Bytes changed inside a stored member: the zip's CRC check fails when it is read.
    damaged = bytearray(train_zip.read_bytes())
    offset = damaged.index(jpeg) + len(jpeg) // 2
    damaged[offset : offset + 8] = bytes(8)
    (tmp_path / "crc.zip").write_bytes(bytes(damaged))
    return [
        ("undecodable picture", rewrite_zip(train_zip, tmp_path / "rgb.zip", {rgb_name: b"garbage"}), [rgb_name, "does not decode as a picture"]),
        ("truncated picture", rewrite_zip(train_zip, tmp_path / "cut.zip", {rgb_name: jpeg[: len(jpeg) // 2]}), [rgb_name, "truncated"]),
        ("sizes differ", rewrite_zip(train_zip, tmp_path / "size.zip", {depth_name: small_depth}), [f"{rgb_name} is {width}x{height} but its depth {depth_name} is {width // 2}x{height // 2}"]),
        ("RGB depth", rewrite_zip(train_zip, tmp_path / "mode.zip", {depth_name: rgb_depth}), [depth_name, "is an 8-bit RGB PNG; depth must be 8-bit grayscale (value / 255 x 10 m) or 16-bit grayscale (millimetres)"]),
        ("palette depth", rewrite_zip(train_zip, tmp_path / "pal.zip", {depth_name: palette.getvalue()}), [depth_name, "palette PNG"]),
        ("JPEG depth", rewrite_zip(train_zip, tmp_path / "jpg.zip", {depth_name: jpeg}), [depth_name, "is not a PNG"]),
        ("CRC error", tmp_path / "crc.zip", ["Bad CRC-32", rgb_name]),
    ]  # fmt: skip


@pytest.mark.slow  # six runs of train.py, 6 s on Zen 3
def test_a_bad_pair_stops_the_run_when_none_may_fail(tiny_zips, tmp_path, capsys):
    # 8 pairs and the default --max_bad_fraction 0.01: not one pair may fail.
    for name, path, needles in bad_pair_zips(tiny_zips[0], tmp_path):
        result = run_script(train, train_argv(path, tmp_path / name), capsys)
        assert_one_clear_line(
            result, "1 of the 8 training pairs failed to load, more than --max_bad_fraction 0.01 allows (0)"
        )
        assert all(needle in result[2] for needle in needles), (name, result[2])
        assert not (tmp_path / name / "last.pth").exists()


def test_bad_pairs_within_the_allowed_share_are_skipped_and_reported(tiny_zips, tmp_path, capsys):
    _, path, needles = bad_pair_zips(tiny_zips[0], tmp_path)[0]
    status, out, err = run_script(
        train, train_argv(path, tmp_path / "run", "--max_bad_fraction", 0.2, "--log_interval", 1, batch_size=2), capsys
    )
    assert status == 0, err
    assert out.count("skipped training pair") == 1 and all(needle in out for needle in needles)  # once, not per epoch
    checkpoint = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())


# ----------------------------------------------------------------------------- the Eigen test zip


def write_eigen_zip(path, rgb=None, depth=None, crop=None, skip=()):
    count, (height, width) = 2, TINY_SIZE
    arrays = {
        EIGEN_RGB: np.zeros((count, height, width, 3), np.uint8) if rgb is None else rgb,
        EIGEN_DEPTH: np.full((count, height, width), 2.0, np.float32) if depth is None else depth,
        EIGEN_CROP: np.array([2, 45, 2, 61]) if crop is None else crop,
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            if name not in skip:
                write_npy_member(archive, name, array)
    return path


def test_eigen_zips_with_missing_or_mismatched_arrays(tiny_checkpoint, tmp_path, capsys):
    height, width = TINY_SIZE
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(write_eigen_zip(tmp_path / "whole.zip").read_bytes()[:-100])
    cases = [
        (write_eigen_zip(tmp_path / "a.zip", skip=[EIGEN_DEPTH]), f"must hold exactly one {EIGEN_DEPTH} (found none)"),
        (
            write_eigen_zip(tmp_path / "b.zip", depth=np.ones((2, height, width - 1), np.float32)),
            f"{EIGEN_DEPTH} is float32 (2, {height}, {width - 1}); expected float (N, H, W) = (2, {height}, {width})",
        ),
        (
            write_eigen_zip(tmp_path / "c.zip", rgb=np.zeros((2, height, width, 3), np.float32)),
            f"{EIGEN_RGB} is float32 (2, {height}, {width}, 3); expected uint8 (N, H, W, 3)",
        ),
        (
            write_eigen_zip(tmp_path / "d.zip", depth=np.ones((2, height, width), np.int64)),
            f"{EIGEN_DEPTH} is int64",
        ),
        (
            write_eigen_zip(tmp_path / "e.zip", crop=np.array([2, 99, 2, 61])),
            "is not [top, bottom, left, right] inside",
        ),
        (truncated, "truncated.zip is not a zip file, or is truncated"),
        (tmp_path / "absent.zip", "--data", "absent.zip does not exist"),
    ]
    for path, *needles in cases:
        result = run_script(evaluate, ["--model", tiny_checkpoint, "--data", path, "--output_dir", tmp_path], capsys)
        assert_one_clear_line(result, *needles)
    assert not (tmp_path / "metrics.json").exists()


def test_non_finite_and_zero_depths_are_left_out_and_counted(tiny_checkpoint, tmp_path, capsys):
    depth = np.full((2, *TINY_SIZE), 2.0, np.float32)
    depth[0, 10, 10:13] = [np.nan, np.inf, 0.0]
    depth[1, 0, 0] = np.nan  # outside the crop: not counted
    path = write_eigen_zip(tmp_path / "nan.zip", depth=depth)
    status, out, err = run_script(
        evaluate, ["--model", tiny_checkpoint, "--data", path, "--output_dir", tmp_path], capsys
    )
    assert status == 0, err
    assert "3 ground-truth pixels inside the crop were not finite and > 0 and were left out" in out
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["num_invalid_pixels"] == 3 and report["num_valid_pixels"] == 2 * 44 * 60 - 3
    assert all(np.isfinite(value) for value in report["per_image"].values())


# ----------------------------------------------------------------------------- pictures and checkpoints


def test_img_that_is_not_a_picture(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    for path, needle in (
        (tmp_path / "notes.txt", "notes.txt is not a picture that can be read"),
        (tmp_path, "is a directory with no pictures in it"),
        (tmp_path / "absent.png", "--img"),
    ):
        result = run_script(evaluate, ["--model", tiny_checkpoint, "--img", path, "--output_dir", tmp_path], capsys)
        assert_one_clear_line(result, needle)


def test_depth_of_an_exif_rotated_picture_matches_the_upright_picture(tiny_checkpoint, tmp_path, capsys):
    upright = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to display": stored turned the other way
    Image.fromarray(np.rot90(upright, k=1).copy()).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    for name in ("rotated", "upright"):
        argv = ["--model", tiny_checkpoint, "--img", tmp_path / f"{name}.png", "--output_dir", tmp_path / "out"]
        assert run_script(evaluate, argv, capsys)[0] == 0
    rotated = np.asarray(Image.open(tmp_path / "out" / "rotated_depth_mm.png"))
    assert rotated.shape == (40, 30)
    assert np.array_equal(rotated, np.asarray(Image.open(tmp_path / "out" / "upright_depth_mm.png")))


def test_checkpoints_missing_truncated_foreign_or_of_another_width(tiny_checkpoint, tiny_zips, tmp_path, capsys):
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pth")
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["config"]["decoder_width"] = 0.125
    torch.save(state, tmp_path / "edited.pth")
    picture = tmp_path / "photo.png"
    Image.new("RGB", (32, 24)).save(picture)
    for path, needle in (
        (tmp_path / "absent.pth", "absent.pth does not exist"),
        (tmp_path, "is a directory, not a checkpoint file"),
        (tmp_path / "truncated.pth", "truncated.pth could not be read: it is truncated (its zip directory is missing)"),
        (tmp_path / "notes.pth", "notes.pth could not be read: it is not a PyTorch checkpoint file"),
        (tmp_path / "foreign.pth", "foreign.pth is not a checkpoint of this project"),
        (tmp_path / "edited.pth", "edited.pth does not fit a DenseDepth model on densenet169 with decoder width 0.125"),
    ):
        argv = ["--model", path, "--img", picture, "--output_dir", tmp_path / "out"]
        assert_one_clear_line(run_script(evaluate, argv, capsys), needle)
        resume = train_argv(tiny_zips[0], tmp_path / "run", "--checkpoint", path)
        assert_one_clear_line(run_script(train, resume, capsys), needle)
    other_width = train_argv(tiny_zips[0], tmp_path / "run", "--checkpoint", tiny_checkpoint, "--decoder_width", 0.5)
    assert_one_clear_line(
        run_script(train, other_width, capsys),
        "--decoder_width 0.5 differs from the 0.0625 of checkpoint",
        "leave the flag out to resume with the checkpoint's",
    )


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


def test_a_checkpoint_cannot_run_code_when_opened(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}, "config": {}, "args": {}, "payload": _RunsCode()}, tmp_path / "evil.pth")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    result = run_script(evaluate, ["--model", tmp_path / "evil.pth", "--img", "photo.png"], capsys)
    assert_one_clear_line(result, "evil.pth could not be read: it holds Python objects besides tensors")
    assert not (tmp_path / "PWNED").exists()
