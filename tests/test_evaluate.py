import numpy as np
import pytest
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
    assert image[0, :, 2, 10].mean() > 0.9 and image[0, :, -3, 10].mean() < 0.1  # the white half is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_any_picture_mode_becomes_rgb(tmp_path, mode):
    picture = Image.new("RGB", (8, 6), (200, 100, 50)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        picture = Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16))
    path = tmp_path / ("picture.jpg" if mode == "CMYK" else "picture.png")
    picture.save(path)
    image = load_picture(path)
    assert image.shape == (1, 3, 6, 8) and 0 <= image.min() and image.max() <= 1


def test_not_a_picture_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt is not a picture"):
        load_picture(tmp_path / "notes.txt")
