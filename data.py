"""NYU Depth v2 as distributed for DenseDepth, read straight from its zip files.

Training zip (`nyu_data.zip`), or a directory holding its extracted `data/` folder:
  data/nyu2_train.csv  lines `rgb_path,depth_path` (\\n or \\r\\n, no header)
  training pairs       JPEG RGB + 8-bit PNG depth, depth_m = value / 255 * 10
  data/nyu2_test.csv   test pairs: PNG RGB + 16-bit PNG depth in millimetres
Eigen test zip (`nyu_test.zip`):
  eigen_test_rgb.npy (N, H, W, 3) uint8, eigen_test_depth.npy (N, H, W) float32
  metres, eigen_test_crop.npy [top, bottom, left, right], both ends inclusive.

The writers here produce exactly these formats; sample_data.py uses them.
"""

import io
import mmap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

try:  # several times faster than PIL; deprecated in torchvision 0.29 in favour of TorchCodec
    from torchvision.io import ImageReadMode, decode_image

    warnings.filterwarnings(
        "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
    )
except ImportError:  # a torchvision without it: decode with PIL
    decode_image = None

from model import depth_m_to_target, resize, target_to_depth_m
from utils import UserError

TRAIN_CSV = "data/nyu2_train.csv"
TEST_CSV = "data/nyu2_test.csv"
EIGEN_RGB = "eigen_test_rgb.npy"
EIGEN_DEPTH = "eigen_test_depth.npy"
EIGEN_CROP = "eigen_test_crop.npy"
NYU_SIZE = (480, 640)  # height, width
EIGEN_CROP_NYU = (20, 459, 24, 615)  # rows 20..459, columns 24..615 of a 480x640 image
TRAIN_DEPTH_MAX_M = 10.0  # 8-bit training depth: 255 means 10 m


# ----------------------------------------------------------------------------- archives


class _MappedFile(mmap.mmap):
    """A read-only memory map that zipfile can use as a file (Python < 3.13 mmaps lack seekable())."""

    def seekable(self):
        return True


class ZipArchive:
    """A zip read straight from memory: the file is memory-mapped, so DataLoader
    workers (and several processes on one machine) share one copy in the page cache."""

    def __init__(self, path):
        self.path = Path(path)
        self._zip = None
        self.names = set(self._open().namelist())

    def _open(self):
        if self._zip is None:
            with open(self.path, "rb") as file:
                mapped = _MappedFile(file.fileno(), 0, access=mmap.ACCESS_READ)
            self._zip = zipfile.ZipFile(mapped)
        return self._zip

    def read(self, name):
        return self._open().read(name)

    def __getstate__(self):
        # A worker started by 'spawn' maps the file again instead of receiving a copy.
        return {**self.__dict__, "_zip": None}


class DirectoryArchive:
    """The extracted form: entries are files under `root`."""

    def __init__(self, root):
        self.root = Path(root)

    def read(self, name):
        return (self.root / name).read_bytes()


def open_training_data(path):
    """The training zip, a directory with the extracted `data/` folder, or a directory holding nyu_data.zip."""
    path = Path(path)
    if path.is_dir():
        if (path / TRAIN_CSV).is_file():
            return DirectoryArchive(path)
        if (path / "nyu_data.zip").is_file():
            path = path / "nyu_data.zip"
        else:
            raise UserError(f"--data_dir {path} holds neither {TRAIN_CSV} nor nyu_data.zip")
    if not path.is_file():
        raise UserError(f"--data_dir {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UserError(f"--data_dir {path} is not a zip file")
    archive = ZipArchive(path)
    if TRAIN_CSV not in archive.names:
        raise UserError(f"{path} has no {TRAIN_CSV}: it is not the NYU Depth v2 training zip")
    return archive


def read_pairs(archive, csv_name):
    """(rgb_name, depth_name) pairs listed in a CSV of the archive."""
    text = archive.read(csv_name).decode("utf-8")
    pairs = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not all(fields):
            raise UserError(f"{csv_name} line {line_number} is not 'rgb_path,depth_path': {line!r}")
        pairs.append(tuple(fields))
    return pairs


# ----------------------------------------------------------------------------- decoding and encoding


def decode_picture(data, rgb):
    """Encoded picture bytes -> (C, H, W) tensor: RGB uint8 if `rgb`, else the stored channels and depth."""
    if decode_image is None:
        with Image.open(io.BytesIO(data)) as picture:
            array = np.asarray(picture.convert("RGB") if rgb else picture)
        return torch.from_numpy(array.copy()).view(*array.shape[:2], -1).permute(2, 0, 1)
    mode = ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)


def decode_rgb(data):
    """Encoded picture bytes -> (3, H, W) uint8 tensor."""
    return decode_picture(data, rgb=True)


def decode_depth_png(data):
    """Depth PNG bytes -> (1, H, W) float32 metres: 8-bit as value / 255 * 10, 16-bit as millimetres."""
    depth = decode_picture(data, rgb=False)
    if depth.shape[0] != 1:
        raise ValueError(f"depth PNG has {depth.shape[0]} channels; expected one (8-bit or 16-bit grayscale)")
    if depth.dtype == torch.uint8:
        return depth.float() * (TRAIN_DEPTH_MAX_M / 255)
    return depth.to(torch.int32).float() / 1000


def encode_picture(array, format):
    """An (H, W, 3) uint8, (H, W) uint8 or (H, W) uint16 array -> JPEG ('JPEG', quality 95) or PNG bytes."""
    buffer = io.BytesIO()
    options = {"quality": 95} if format == "JPEG" else {}
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def encode_train_depth_png(depth_m):
    """(H, W) metres -> 8-bit PNG bytes, value = depth / 10 m * 255 (saturating at 10 m)."""
    value = np.clip(np.rint(depth_m / TRAIN_DEPTH_MAX_M * 255), 0, 255).astype(np.uint8)
    return encode_picture(value, "PNG")


def encode_test_depth_png(depth_m):
    """(H, W) metres -> 16-bit PNG bytes in millimetres."""
    value = np.clip(np.rint(depth_m * 1000), 0, 65535).astype(np.uint16)
    return encode_picture(value, "PNG")


def scaled_eigen_crop(height, width):
    """The Eigen crop for a height x width image, scaled from its 480x640 definition."""
    top, bottom, left, right = EIGEN_CROP_NYU
    scale_y, scale_x = height / NYU_SIZE[0], width / NYU_SIZE[1]
    return (
        round(top * scale_y),
        round((bottom + 1) * scale_y) - 1,
        round(left * scale_x),
        round((right + 1) * scale_x) - 1,
    )


# ----------------------------------------------------------------------------- datasets


def downsample_depth_m(depth_m, size):
    """Resize (N, 1, H, W) depth to `size` the way DenseDepth does: in the target space y = 1000 / depth_cm."""
    return target_to_depth_m(resize(depth_m_to_target(depth_m), size))


class NYUDepthDataset(Dataset):
    """RGB/depth pairs from the training archive, at their stored resolution.

    Returns (image (3, H, W) uint8, depth_m (1, H, W) float metres), with
    DenseDepth's augmentation if `augment`. Workers only decode and augment:
    resizing to the network's sizes happens batched on the device
    (train.training_batch), so each worker feeds about twice as many pictures a
    second, and uint8 images are a quarter of the bytes to hand over and copy.
    """

    def __init__(self, archive, pairs, augment):
        self.archive = archive
        self.pairs = pairs
        self.augment = augment

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        rgb_name, depth_name = self.pairs[index]
        image = decode_rgb(self.archive.read(rgb_name))
        depth_m = decode_depth_png(self.archive.read(depth_name))
        if self.augment:
            image, depth_m = augment(image, depth_m)
        return image, depth_m


def augment(image, depth_m):
    """DenseDepth's augmentation: horizontal flip (p = 0.5) and an RGB channel permutation (p = 0.5)."""
    if torch.rand(()) < 0.5:
        image, depth_m = image.flip(-1), depth_m.flip(-1)
    if torch.rand(()) < 0.5:
        image = image.index_select(0, torch.randperm(3))  # 20x faster than image[permutation]
    return image, depth_m


# ----------------------------------------------------------------------------- the Eigen test zip


def _find_member(names, base_name, path):
    matches = [name for name in names if name == base_name or name.endswith("/" + base_name)]
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(matches)
        raise UserError(f"{path} must hold exactly one {base_name} (found {found}): not the Eigen test zip")
    return matches[0]


def _read_npy_header(stream):
    """(shape, fortran_order, dtype) of a .npy stream, leaving it at the start of the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


class EigenTestZip:
    """The Eigen test split as distributed in nyu_test.zip, streamed batch by batch from the zip."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"--data {self.path} does not exist")
        if not zipfile.is_zipfile(self.path):
            raise UserError(f"--data {self.path} is not a zip file")
        with zipfile.ZipFile(self.path) as archive:
            names = archive.namelist()
            self.rgb_name = _find_member(names, EIGEN_RGB, self.path)
            self.depth_name = _find_member(names, EIGEN_DEPTH, self.path)
            crop_name = _find_member(names, EIGEN_CROP, self.path)
            crop = np.load(io.BytesIO(archive.read(crop_name))).ravel()
            self.crop = tuple(int(v) for v in crop)
            self.rgb_shape, self.rgb_dtype = self._header(archive, self.rgb_name)
            self.depth_shape, self.depth_dtype = self._header(archive, self.depth_name)
        self._check()

    def _header(self, archive, name):
        with archive.open(name) as stream:
            shape, fortran_order, dtype = _read_npy_header(stream)
        if fortran_order:
            raise UserError(f"{self.path}: {name} is stored in Fortran order; expected C order")
        return shape, dtype

    def _check(self):
        if len(self.rgb_shape) != 4 or self.rgb_shape[3] != 3 or self.rgb_dtype != np.uint8:
            raise UserError(
                f"{self.path}: {EIGEN_RGB} is {self.rgb_dtype} {self.rgb_shape}; expected uint8 (N, H, W, 3)"
            )
        if self.depth_shape != self.rgb_shape[:3] or self.depth_dtype.kind != "f":
            raise UserError(
                f"{self.path}: {EIGEN_DEPTH} is {self.depth_dtype} {self.depth_shape}; "
                f"expected float (N, H, W) = {self.rgb_shape[:3]} to match {EIGEN_RGB}"
            )
        height, width = self.rgb_shape[1:3]
        top, bottom, left, right = self.crop if len(self.crop) == 4 else (-1, -1, -1, -1)
        if not (0 <= top <= bottom < height and 0 <= left <= right < width):
            raise UserError(
                f"{self.path}: {EIGEN_CROP} {list(self.crop)} is not [top, bottom, left, right] inside {height}x{width}"
            )

    def __len__(self):
        return self.rgb_shape[0]

    @property
    def image_size(self):
        return tuple(self.rgb_shape[1:3])

    def batches(self, batch_size):
        """Yield (rgb (B, H, W, 3) uint8, depth_m (B, H, W) float32) numpy arrays, in order."""
        rgb_bytes = int(np.prod(self.rgb_shape[1:])) * self.rgb_dtype.itemsize
        depth_bytes = int(np.prod(self.depth_shape[1:])) * self.depth_dtype.itemsize
        with (
            zipfile.ZipFile(self.path) as archive,
            archive.open(self.rgb_name) as rgb_stream,
            archive.open(self.depth_name) as depth_stream,
        ):
            _read_npy_header(rgb_stream)
            _read_npy_header(depth_stream)
            for start in range(0, len(self), batch_size):
                count = min(batch_size, len(self) - start)
                rgb = np.frombuffer(_read_exactly(rgb_stream, count * rgb_bytes, self.path), dtype=self.rgb_dtype)
                depth = np.frombuffer(
                    _read_exactly(depth_stream, count * depth_bytes, self.path), dtype=self.depth_dtype
                )
                yield (
                    rgb.reshape(count, *self.rgb_shape[1:]),
                    depth.reshape(count, *self.depth_shape[1:]).astype(np.float32),
                )


def _read_exactly(stream, size, path):
    data = stream.read(size)
    if len(data) != size:
        raise UserError(f"{path} ends early: an array in it is shorter than its header says")
    return data


def _member_info(name):
    # A fixed date and mode, so the same content always gives the same zip bytes.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def write_member(archive, name, data):
    """Write bytes or text into an open zipfile.ZipFile (mode 'w') as member `name`."""
    archive.writestr(_member_info(name), data)


def write_npy_member(archive, name, array):
    """Write a numpy array into an open zipfile.ZipFile (mode 'w') as a .npy member."""
    with archive.open(_member_info(name), "w", force_zip64=True) as stream:
        np.lib.format.write_array(stream, np.ascontiguousarray(array), allow_pickle=False)
