import json
import struct
import zlib

import numpy as np
import pytest
import torch
from helpers import run_script
from PIL import Image

import evaluate
from data import EigenTestZip
from densedepth.protocol import predict_depth_m
from evaluate import find_pictures, load_picture, network_size, same_size_batches
from utils import UserError, load_checkpoint


def test_network_size_keeps_aspect_and_area_in_multiples_of_32():
    assert network_size((480, 640), (480, 640)) == (480, 640)
    assert network_size((3000, 4000), (480, 640)) == (480, 640)
    assert network_size((1080, 1920), (480, 640)) == (416, 736)
    assert network_size((20, 20), (96, 128)) == (96, 96)
    assert all(side % 32 == 0 for side in network_size((333, 777), (240, 320)))


def test_pictures_are_turned_upright_by_their_exif_orientation(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = 255  # white on the left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display it turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    image = load_picture(tmp_path / "rotated.jpg")
    assert image.shape == (1, 3, 30, 20)  # upright: taller than wide
    assert image[0, :, 2, 10].min() > 230 and image[0, :, -3, 10].max() < 25  # the white half is now on top


ORANGE = (200, 100, 50)
ORANGE_GRAY = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601-2 luma, as PIL's "L"


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("L", [ORANGE_GRAY] * 3),
        ("LA", [ORANGE_GRAY] * 3),
        ("RGBA", ORANGE),  # alpha dropped
        ("P", ORANGE),
        ("CMYK", ORANGE),
        ("I;16", [round(40000 / 65535 * 255)] * 3),  # 16-bit scaled, not clipped to white
        ("I;16 RGB", ORANGE),  # 48-bit RGB PNG
    ],
)
def test_any_picture_mode_becomes_the_right_rgb(tmp_path, mode, expected):
    if mode == "I;16":
        picture = Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16))
    elif mode == "I;16 RGB":
        picture = None
        (tmp_path / "picture.png").write_bytes(png_rgb48(np.full((6, 8, 3), ORANGE, dtype=np.uint16) * 257))
    else:
        picture = Image.new("RGB", (8, 6), ORANGE).convert(mode, palette=Image.Palette.ADAPTIVE)
    path = tmp_path / ("picture.jpg" if mode == "CMYK" else "picture.png")
    if picture is not None:
        picture.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    image = load_picture(path)
    assert image.shape == (1, 3, 6, 8) and image.dtype == torch.uint8
    assert (image[0].flatten(1).float().mean(1) - torch.tensor(expected, dtype=torch.float)).abs().max() <= 2


def png_rgb48(array):
    """A 16-bit-per-channel RGB PNG, which PIL cannot write."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_not_a_picture_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt is not a picture"):
        load_picture(tmp_path / "notes.txt")


# ----------------------------------------------------------------------------- depth of pictures (--img)


def save_random_picture(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def predict(checkpoint_path, picture_path):
    """The prediction of evaluate.py for a picture, in metres, computed here step by step in fp32."""
    model, input_size = evaluate.load_model(checkpoint_path, torch.device("cpu"))
    image = load_picture(picture_path)
    size = tuple(image.shape[-2:])
    with torch.inference_mode():
        return predict_depth_m(model, image, network_size(size, input_size), size)[0, 0].numpy()


def test_every_output_of_a_picture_in_its_units(tiny_checkpoint, tmp_path, capsys):
    picture = save_random_picture(tmp_path / "photo.jpg", 50, 70)
    out = tmp_path / "out"
    argv = ["--model", tiny_checkpoint, "--img", picture, "--output_dir", out, "--precision", "fp32"]
    status, stdout, err = run_script(evaluate, [*argv, "--ply", "--side_by_side"], capsys)
    assert status == 0, err
    assert "photo_depth_mm.png (16-bit PNG, millimetres)" in stdout
    expected_m = predict(tiny_checkpoint, picture)

    depth_m = np.load(out / "photo_depth_m.npy")
    assert depth_m.dtype == np.float32 and depth_m.shape == (50, 70)
    np.testing.assert_allclose(depth_m, expected_m, atol=1e-5)
    depth_mm = Image.open(out / "photo_depth_mm.png")
    assert (depth_mm.mode, depth_mm.size) == ("I;16", (70, 50))
    assert np.abs(np.asarray(depth_mm, dtype=np.float64) - expected_m * 1000).max() <= 1.0  # within 1 mm
    colour = Image.open(out / "photo_depth.png")
    assert (colour.mode, colour.size) == ("RGB", (70, 50))
    assert Image.open(out / "photo_side_by_side.png").size == (70 + 4 + 70, 50)

    ply = (out / "photo.ply").read_bytes()
    header, _, body = ply.partition(b"end_header\n")
    assert b"element vertex 3500\n" in header  # 50 x 70 pixels
    vertices = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    assert len(vertices) == 3500
    row, col = 20, 30
    fx, fy, cx, cy = 518.8579 * 70 / 640, 519.4696 * 50 / 480, 325.5824 * 70 / 640, 253.7362 * 50 / 480
    z = depth_m[row, col]
    np.testing.assert_allclose(
        vertices["xyz"][row * 70 + col], [(col - cx) * z / fx, (row - cy) * z / fy, z], rtol=1e-5
    )
    assert vertices["rgb"][row * 70 + col].tolist() == load_picture(picture)[0, :, row, col].tolist()

    status, _, err = run_script(evaluate, [*argv, "--ply", "--intrinsics", 100, 100, 35, 25], capsys)
    assert status == 0, err
    _, _, body = (out / "photo.ply").read_bytes().partition(b"end_header\n")
    vertices = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    np.testing.assert_allclose(
        vertices["xyz"][0], [-35 * depth_m[0, 0] / 100, -25 * depth_m[0, 0] / 100, depth_m[0, 0]]
    )


def test_colour_bar_and_fixed_range(tiny_checkpoint, tmp_path, capsys):
    picture = save_random_picture(tmp_path / "photo.png", 96, 128)
    out = tmp_path / "out"
    argv = ["--model", tiny_checkpoint, "--img", picture, "--output_dir", out]
    assert run_script(evaluate, argv, capsys)[0] == 0
    plain = np.asarray(Image.open(out / "photo_depth.png"))
    assert run_script(evaluate, [*argv, "--colorbar", "--depth_range", 0, 10], capsys)[0] == 0
    with_bar = np.asarray(Image.open(out / "photo_depth.png"))
    assert with_bar.shape[0] == 96 and with_bar.shape[1] > 128 + 40
    depth_m = np.load(out / "photo_depth_m.npy")
    darkest = np.unravel_index(with_bar[:, :128].sum(-1).argmin(), depth_m.shape)
    assert depth_m[darkest] == pytest.approx(depth_m.min(), abs=0.05)  # near is dark in either range
    assert not np.array_equal(with_bar[:, :128], plain)  # 0..10 m, not the picture's own range


def test_a_folder_of_pictures_gives_a_folder_of_outputs(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / ".hidden_parent" / "photos"  # only hidden files and folders inside photos/ are left out
    save_random_picture(photos / ".thumbs" / "x.png", 8, 8)
    for name in ("a.jpg", "b.png", "trip/c.JPG", "trip/day2/d.png", "trip/e.jpg"):
        save_random_picture(photos / name, 40 if name != "b.png" else 30, 56)
    (photos / "notes.txt").write_text("not a picture")
    other = save_random_picture(tmp_path / "elsewhere" / "f.png", 64, 48)
    save_random_picture(tmp_path / "elsewhere" / ".g.png", 8, 8)
    out = photos / "depth"  # inside the input folder: not read back as input on a second run
    argv = ["--model", tiny_checkpoint, "--img", photos, str(tmp_path / "else*" / "*.png"), "--output_dir", out]
    for _ in range(2):
        status, stdout, err = run_script(evaluate, argv, capsys)
        assert status == 0, err
        assert "wrote the depth of 6 pictures" in stdout
    names = sorted(str(path.relative_to(out)) for path in out.rglob("*_depth.png"))
    assert names == [
        "a_depth.png", "b_depth.png", "f_depth.png",
        "trip/c_depth.png", "trip/day2/d_depth.png", "trip/e_depth.png",
    ]  # fmt: skip
    assert Image.open(out / "b_depth.png").size == (56, 30) and Image.open(out / "f_depth.png").size == (48, 64)
    assert np.load(out / "trip" / "day2" / "d_depth_m.npy").shape == (40, 56)
    assert other.is_file()


def test_pictures_go_through_in_batches_of_one_size():
    sizes = [(4, 6), (4, 6), (4, 6), (5, 6), "broken", (4, 6)]
    loaded = [(i, size if isinstance(size, str) else torch.zeros(1, 3, *size)) for i, size in enumerate(sizes)]
    failures = []
    batches = [(indices, tuple(images.shape)) for indices, images in same_size_batches(loaded, 2, failures.append)]
    assert batches == [([0, 1], (2, 3, 4, 6)), ([2], (1, 3, 4, 6)), ([3], (1, 3, 5, 6)), ([5], (1, 3, 4, 6))]
    assert failures == ["broken"]


def test_pictures_that_would_overwrite_each_other_or_match_nothing(tmp_path):
    save_random_picture(tmp_path / "a.jpg", 8, 8)
    save_random_picture(tmp_path / "a.png", 8, 8)
    with pytest.raises(UserError, match="would both be written as a_depth.png"):
        find_pictures([str(tmp_path)], tmp_path / "out")
    with pytest.raises(UserError, match="matches no picture file"):
        find_pictures([str(tmp_path / "*.gif")], tmp_path / "out")
    assert len(find_pictures([str(tmp_path / "a.jpg"), str(tmp_path / "*.jpg")], tmp_path / "out")) == 1


def test_unreadable_pictures_among_many_are_named_and_the_rest_written(tiny_checkpoint, tmp_path, capsys):
    save_random_picture(tmp_path / "in" / "good.png", 32, 32)
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    argv = ["--model", tiny_checkpoint, "--img", tmp_path / "in", "--output_dir", tmp_path / "out"]
    status, _, err = run_script(evaluate, argv, capsys)
    assert status == 2
    assert "bad.png is not a picture that can be read" in err
    assert "error: 1 of the 2 pictures could not be read (named above); the depth of the other 1 was written" in err
    assert (tmp_path / "out" / "good_depth.png").is_file() and not (tmp_path / "out" / "bad_depth.png").exists()


# ----------------------------------------------------------------------------- evaluation examples (--data)


def test_evaluation_saves_examples_and_a_markdown_table(tiny_checkpoint, tiny_zips, tmp_path, capsys):
    argv = ["--model", tiny_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path, "--markdown"]
    status, stdout, err = run_script(evaluate, [*argv, "--num_examples", 3], capsys)
    assert status == 0, err
    lines = stdout.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["delta1"])
    assert header.split() == ["delta1", "delta2", "delta3", "rel", "rms", "log10", "sq_rel", "rms_log", "silog"]
    assert "| delta1 ↑ | delta2 ↑ | delta3 ↑ | rel ↓ | rms ↓ | log10 ↓ |" in lines
    examples = tmp_path / "examples"
    assert sorted(path.name for path in examples.glob("????.png")) == ["0000.png", "0002.png", "0003.png"]
    for kind in ("input", "gt", "pred", "error"):
        tile = Image.open(examples / f"0002_{kind}.png")
        assert (tile.mode, tile.size) == ("RGB", (64, 48))
    test_rgb = next(EigenTestZip(tiny_zips[1]).batches(4))[0]
    assert np.array_equal(np.asarray(Image.open(examples / "0002_input.png")), test_rgb[2])
    panel = Image.open(examples / "0002.png")
    assert panel.size[0] > 4 * 64
    assert run_script(evaluate, [*argv, "--num_examples", 0, "--output_dir", tmp_path / "none"], capsys)[0] == 0
    assert not (tmp_path / "none" / "examples").exists()
    assert load_checkpoint(tiny_checkpoint)["config"]["input_size"] == [64, 64]


def test_the_depth_written_for_a_picture_is_the_depth_scored_for_it(varied_checkpoint, tmp_path, capsys):
    """One input-size rule: at aspect ratios other than the trained one (64x64), --data scores the very depth
    --img writes. Ground truth made as 1.1 x that depth scores delta1 1 and abs rel 0.1 / 1.1."""
    data = tmp_path / "data"
    pictures = [save_random_picture(data / "rgb" / "wide.png", 64, 192, seed=1),
                save_random_picture(data / "rgb" / "tall.png", 120, 80, seed=2)]  # fmt: skip
    for picture in pictures:
        argv = ["--model", varied_checkpoint, "--img", picture, "--output_dir", tmp_path / "img", "--precision", "fp32"]
        status, _, err = run_script(evaluate, argv, capsys)
        assert status == 0, err
        depth_m = np.load(tmp_path / "img" / f"{picture.stem}_depth_m.npy")
        assert depth_m.max() / depth_m.min() > 1.2  # a depth that varies, so a stretched input would show
        (data / "depth").mkdir(exist_ok=True)
        np.save(data / "depth" / f"{picture.stem}.npy", (1.1 * depth_m.astype(np.float64)).astype(np.float32))
    for crop in ("none", "garg"):
        argv = ["--model", varied_checkpoint, "--data", data, "--crop", crop, "--output_dir", tmp_path / crop,
                "--precision", "fp32", "--num_examples", 0]  # fmt: skip
        status, _, err = run_script(evaluate, argv, capsys)
        assert status == 0, err
        report = json.loads((tmp_path / crop / "metrics.json").read_text())
        assert report["num_images"] == 2
        scores = report["per_image"]
        assert scores["delta1"] == 1.0
        assert scores["abs_rel"] == pytest.approx(0.1 / 1.1, abs=1e-6)
        assert scores["silog"] == pytest.approx(0.0, abs=1e-3)  # a constant ratio is no scale-invariant error
