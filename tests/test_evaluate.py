import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate import load_picture, network_size
from utils import UserError


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
