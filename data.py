"""NYU Depth v2 as distributed for DenseDepth, read straight from its zip files, and RGB-D pairs of one's own.

Training zip (`nyu_data.zip`), or a directory holding its extracted `data/` folder:
  data/nyu2_train.csv  lines `rgb_path,depth_path` (\\n or \\r\\n, no header)
  training pairs       JPEG RGB + 8-bit PNG depth, depth_m = value / 255 * 10
  data/nyu2_test.csv   test pairs: PNG RGB + 16-bit PNG depth in millimetres
Eigen test zip (`nyu_test.zip`):
  eigen_test_rgb.npy (N, H, W, 3) uint8, eigen_test_depth.npy (N, H, W) float32
  metres, eigen_test_crop.npy [top, bottom, left, right], both ends inclusive.

Pairs of one's own (a CSV of `rgb_path,depth_path` lines relative to the CSV, or a
folder with `rgb/` and `depth/` subfolders of matching names): any picture, and depth
as an 8- or 16-bit PNG with a scale in units per metre (1000: millimetres; 256:
KITTI; 5000: TUM), a float .npy or a 32-bit float TIFF in metres; 0 or NaN where
there is no measurement.

The writers here produce exactly these formats; sample_data.py uses them.
"""

import io
import math
import mmap
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler, default_collate
from torchvision.io import ImageReadMode, decode_image

from densedepth.depth import NYU_DEPTH_RANGE, depth_m_to_target, target_to_depth_m
from utils import UserError

# torchvision.io decodes several times faster than PIL; it is deprecated in torchvision 0.29 in favour
# of TorchCodec, and still there.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

TRAIN_CSV = "data/nyu2_train.csv"
TEST_CSV = "data/nyu2_test.csv"
EIGEN_RGB = "eigen_test_rgb.npy"
EIGEN_DEPTH = "eigen_test_depth.npy"
EIGEN_CROP = "eigen_test_crop.npy"
NYU_SIZE = (480, 640)  # height, width
# NYU Depth v2's RGB camera at 640x480, in pixels: fx, fy, cx, cy.
NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)
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
        try:
            self.names = set(self._open().namelist())
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise UserError(f"{self.path} is a damaged zip file ({err})") from err

    def _open(self):
        if self._zip is None:
            with open(self.path, "rb") as file:
                mapped = _MappedFile(file.fileno(), 0, access=mmap.ACCESS_READ)
            self._zip = zipfile.ZipFile(mapped)
        return self._zip

    def read(self, name):
        return self._open().read(name)

    def __contains__(self, name):
        return name in self.names

    def __getstate__(self):
        # A worker started by 'spawn' maps the file again instead of receiving a copy.
        return {**self.__dict__, "_zip": None}


class DirectoryArchive:
    """The extracted form: entries are files under the directory `path`."""

    def __init__(self, path):
        self.path = Path(path)

    def read(self, name):
        return (self.path / name).read_bytes()

    def __contains__(self, name):
        return (self.path / name).is_file()


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
        raise UserError(f"--data_dir {path} is not a zip file, or is truncated (its table of contents is missing)")
    archive = ZipArchive(path)
    if TRAIN_CSV not in archive.names:
        raise UserError(f"{path} has no {TRAIN_CSV}: it is not the NYU Depth v2 training zip")
    return archive


def read_pairs(archive, csv_name):
    """(rgb_name, depth_name) pairs listed in a CSV of the archive, each entry checked to be there."""
    try:
        text = archive.read(csv_name).decode("utf-8")
    except (zipfile.BadZipFile, zlib.error, OSError) as err:
        raise UserError(f"{csv_name} could not be read from {archive.path} ({err})") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{csv_name} in {archive.path} is not UTF-8 text") from err
    pairs = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not all(fields):
            raise UserError(f"{csv_name} line {line_number} is not 'rgb_path,depth_path': {line!r}")
        missing = [name for name in fields if name not in archive]
        if missing:
            raise UserError(f"{csv_name} line {line_number} names {missing[0]}, which is not in {archive.path}")
        pairs.append(tuple(fields))
    if not pairs:
        raise UserError(f"{csv_name} in {archive.path} lists no pairs")
    return pairs


# ----------------------------------------------------------------------------- decoding and encoding


class DecodeError(ValueError):
    """Bytes that are not a picture of the kind expected."""


def decode_picture(data, rgb):
    """Encoded picture bytes -> (C, H, W) tensor: RGB uint8 if `rgb`, else the stored channels and depth.

    Raises DecodeError for bytes that do not decode.
    """
    try:
        mode = ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except (RuntimeError, OSError, ValueError) as err:
        # torchvision prefixes its messages with its source file and line: keep the reason only.
        reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err)).split(". ")[0].strip() or type(err).__name__
        raise DecodeError(f"does not decode as a picture ({reason})") from err


def decode_rgb(data):
    """Encoded picture bytes -> (3, H, W) uint8 tensor (16-bit pictures scaled to 8 bits)."""
    image = decode_picture(data, rgb=True)
    if image.dtype == torch.uint16:
        image = (image.to(torch.int32) * 255 + 32767).div(65535, rounding_mode="floor").to(torch.uint8)
    return image


DEPTH_PNG_MODES = "8-bit grayscale (value / 255 x 10 m) or 16-bit grayscale (millimetres)"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# png_scale of decode_depth for NYU's own files: 8-bit value / 255 x 10 m, 16-bit millimetres.
NYU_PNG = "nyu"
DEPTH_SCALE_HELP = (
    "a dataset of one's own: depth PNG units per metre (1000 for millimetres, 256 for KITTI, 5000 for TUM); "
    ".npy and float TIFF depth is in metres"
)
DEPTH_FORMATS = (
    "an 8- or 16-bit grayscale PNG (with --depth_scale, its units per metre), a float .npy or a "
    "32-bit float TIFF in metres"
)
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale with alpha", 6: "RGBA"}


def decode_depth_png(data):
    """Depth PNG bytes -> (1, H, W) float32 metres: 8-bit as value / 255 * 10, 16-bit as millimetres.

    Raises DecodeError for anything but an 8-bit or 16-bit grayscale PNG.
    """
    depth = _decode_gray_png(data, DEPTH_PNG_MODES)
    if depth.dtype == torch.uint8:
        return depth.float() * (TRAIN_DEPTH_MAX_M / 255)
    return depth.to(torch.int32).float() / 1000


def _decode_gray_png(data, wanted):
    """An 8- or 16-bit grayscale PNG as a (1, H, W) uint8 or uint16 tensor; DecodeError saying `wanted` otherwise."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise DecodeError(f"is not a PNG; depth must be a PNG, {wanted}")
    bit_depth, colour_type = data[24], data[25]
    if colour_type != 0 or bit_depth not in (8, 16):
        kind = f"{bit_depth}-bit {_PNG_COLOUR_TYPES.get(colour_type, f'colour type {colour_type}')}"
        article = "an" if bit_depth == 8 else "a"  # PNG bit depths are 1, 2, 4, 8 and 16
        raise DecodeError(f"is {article} {kind} PNG; depth must be {wanted}")
    return decode_picture(data, rgb=False)


def decode_depth(data, png_scale=NYU_PNG):
    """Depth file bytes -> (1, H, W) float32 metres; 0 or NaN where there is no measurement.

    PNG: 8- or 16-bit grayscale, value / png_scale (units per metre), or NYU's conventions for
    png_scale NYU_PNG; None means no scale was given, which a PNG cannot do without.
    .npy: float (H, W) metres. TIFF: one 32-bit float channel, metres.
    Raises DecodeError for anything else.
    """
    if png_scale == NYU_PNG:
        return decode_depth_png(data)
    if data[:8] == PNG_SIGNATURE:
        if png_scale is None:
            raise DecodeError(
                "is a depth PNG, whose unit the file does not say: give --depth_scale, its units per metre "
                "(1000 for millimetres, 256 for KITTI, 5000 for TUM)"
            )
        depth = _decode_gray_png(data, "8- or 16-bit grayscale")
        return depth.to(torch.int32).float() / png_scale
    if data[:6] == b"\x93NUMPY":
        return _depth_array(_load_npy(data), "a .npy")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            with Image.open(io.BytesIO(data)) as picture:
                if picture.mode != "F":
                    raise DecodeError(f"is a TIFF of mode {picture.mode}; a depth TIFF must be 32-bit float metres")
                return _depth_array(np.asarray(picture), "a TIFF")
        except (OSError, ValueError) as err:
            raise DecodeError(f"does not decode as a TIFF ({err})") from err
    raise DecodeError(f"is not a depth file this code reads: {DEPTH_FORMATS}")


def _load_npy(data):
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DecodeError(f"does not load as a .npy array ({err})") from err


def _depth_array(array, kind):
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype.kind != "f":
        raise DecodeError(f"is {kind} of {array.dtype} {array.shape}; depth must be float (H, W) metres")
    return torch.from_numpy(array.astype(np.float32))[None]


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


def encode_depth_file(depth_m, kind, png_scale=1000):
    """(H, W) metres -> the bytes of a depth file decode_depth reads: kind 'png16' or 'png8' (value =
    depth x png_scale, 0 where depth is 0 or NaN), 'npy' (float32) or 'tiff' (32-bit float)."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if kind in ("png16", "png8"):
        dtype = np.uint16 if kind == "png16" else np.uint8
        value = np.rint(np.nan_to_num(depth_m, nan=0.0) * png_scale)
        return encode_picture(np.clip(value, 0, np.iinfo(dtype).max).astype(dtype), "PNG")
    buffer = io.BytesIO()
    if kind == "npy":
        np.save(buffer, depth_m)
    elif kind == "tiff":
        Image.fromarray(depth_m, mode="F").save(buffer, format="TIFF")
    else:
        raise ValueError(f"depth file kind must be png16, png8, npy or tiff, got {kind!r}")
    return buffer.getvalue()


def scaled_intrinsics(height, width, intrinsics=NYU_INTRINSICS, size=NYU_SIZE):
    """Pinhole intrinsics (fx, fy, cx, cy) given at `size` (H, W), scaled to a height x width picture
    (the same field of view)."""
    scale_y, scale_x = height / size[0], width / size[1]
    fx, fy, cx, cy = intrinsics
    return fx * scale_x, fy * scale_y, cx * scale_x, cy * scale_y


def resize(images, size):
    """Bilinear resize of (N, C, H, W) images to size (h, w); antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def to_unit_range(images):
    """uint8 pictures -> float in [0, 1]; float ones are taken to be in [0, 1] already."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


# ----------------------------------------------------------------------------- datasets


def downsample_depth_m(depth_m, size, depth_range=NYU_DEPTH_RANGE):
    """Resize (N, 1, H, W) depth to `size` the way DenseDepth does: in the target space of
    depth_range (y = 1000 / depth_cm for NYU)."""
    return target_to_depth_m(resize(depth_m_to_target(depth_m, depth_range), size), depth_range)


class PairDataset(Dataset):
    """What every dataset of (picture, depth) pairs shares: an item is (image (3, H, W) uint8, depth_m
    (1, H, W) float metres), with DenseDepth's augmentation if `augment`; a pair that cannot be loaded
    comes back as a FailedSample instead, for collate_pairs to leave out and report. Indices may come
    with a seed for the augmentation (see TrainingOrder). Subclasses give `pairs` (names, for the
    report), `augment` and load_pair(index), which raises DecodeError naming what is wrong.

    With `measured_up_to_m` set (training on sparse depth: datasets of one's own, KITTI, raw NYU), a
    pair with no measured depth in 0 < d <= measured_up_to_m is a FailedSample too: it would give the
    loss nothing to learn from, and is skipped and reported as a pair that does not load, though not
    counted against --max_bad_fraction (sparse data has such pictures; they are not damage)."""

    measured_up_to_m = None

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, item):
        index, augment_seed = item if isinstance(item, tuple) else (item, None)
        try:
            image, depth_m = self.load_pair(index)
        except DecodeError as err:
            return FailedSample(self.pairs[index], str(err))
        if self.measured_up_to_m is not None and not has_measured_depth(depth_m, self.measured_up_to_m):
            reason = f"has no measured depth in 0 < d <= {self.measured_up_to_m:g} m"
            return FailedSample(self.pairs[index], reason, unreadable=False)
        if self.augment:
            generator = None if augment_seed is None else torch.Generator().manual_seed(augment_seed)
            image, depth_m = augment(image, depth_m, generator)
        return image, depth_m


def has_measured_depth(depth_m, max_m):
    """Whether any pixel of depth_m is measured (finite, > 0) and at most max_m."""
    return bool(((depth_m > 0) & (depth_m <= max_m)).any())  # NaN compares False


class NYUDepthDataset(PairDataset):
    """RGB/depth pairs from the training archive (or a dataset of one's own), at their stored resolution
    (items as PairDataset's).

    Workers only decode and augment: resizing to the network's sizes happens
    batched on the device (training.training_batch), so each worker feeds about
    twice as many pictures a second, and uint8 images are a quarter of the
    bytes to hand over and copy.
    """

    def __init__(self, archive, pairs, augment, png_scale=NYU_PNG):
        self.archive = archive
        self.pairs = pairs
        self.augment = augment
        self.png_scale = png_scale  # see decode_depth: NYU_PNG for NYU's own files

    @property
    def own_data(self):
        """Whether this is a dataset of one's own rather than NYU's zip: its invalid depth is masked."""
        return self.png_scale != NYU_PNG

    def load_pair(self, index):
        """The decoded pair `index`; raises DecodeError naming the entry that is wrong."""
        rgb_name, depth_name = self.pairs[index]
        image = self._decoded(decode_rgb, rgb_name)
        depth_m = self._decoded(lambda data: decode_depth(data, self.png_scale), depth_name)
        if image.shape[-2:] != depth_m.shape[-2:]:
            raise DecodeError(
                f"{rgb_name} is {image.shape[-1]}x{image.shape[-2]} but its depth {depth_name} is "
                f"{depth_m.shape[-1]}x{depth_m.shape[-2]}; a pair must have one size"
            )
        return image, depth_m

    def _decoded(self, decode, name):
        """decode() of entry `name`; a damaged entry or one that does not decode is a DecodeError naming it."""
        try:
            data = self.archive.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
            raise DecodeError(f"{name} could not be read from {self.archive.path} ({err})") from err
        try:
            return decode(data)
        except DecodeError as err:
            raise DecodeError(f"{name} {err}") from err


class FailedSample(NamedTuple):
    """A pair that could not be loaded (or loaded with nothing to learn from: not `unreadable`), and why."""

    names: tuple
    reason: str
    unreadable: bool = True  # what --max_bad_fraction counts


def collate_pairs(samples):
    """Batch the pairs that loaded: (images, depth_m, failures), images and depth_m None if none did.

    Pairs whose size differs from the batch's first are resized to it (depth in
    DenseDepth's target space), so pictures of several sizes can be mixed.
    """
    failures = [sample for sample in samples if isinstance(sample, FailedSample)]
    pairs = [sample for sample in samples if not isinstance(sample, FailedSample)]
    if not pairs:
        return None, None, failures
    size = pairs[0][0].shape[-2:]
    pairs = [
        (image, depth_m) if image.shape[-2:] == size else _resize_pair(image, depth_m, size) for image, depth_m in pairs
    ]
    images, depth_m = default_collate(pairs)
    return images, depth_m, failures


def _resize_pair(image, depth_m, size):
    image = resize(image[None].float(), size).round().clamp(0, 255).to(torch.uint8)[0]
    return image, resize_measured_depth_m(depth_m[None], size).nan_to_num(0.0)[0]  # 0: not measured, as stored


def resize_measured_depth_m(depth_m, size, max_m=math.inf):
    """Resize (N, 1, H, W) depth with holes (0 or NaN: not measured; beyond max_m: left out) to
    `size`, each output pixel averaging the measured depth under it in inverse depth (DenseDepth's
    target space); NaN where nothing was measured. Sparse LiDAR-like depth keeps its points."""
    measured = torch.isfinite(depth_m) & (depth_m > 0) & (depth_m <= max_m)
    inverse = torch.where(measured, 1 / depth_m, 0.0)
    weight = resize(measured.float(), size)
    inverse = resize(inverse, size) / weight.clamp(min=1e-6)
    return torch.where(weight > 1e-3, 1 / inverse, torch.nan)


def augment(image, depth_m, generator=None):
    """DenseDepth's augmentation: horizontal flip (p = 0.5) and an RGB channel permutation (p = 0.5)."""
    if torch.rand((), generator=generator) < 0.5:
        image, depth_m = image.flip(-1), depth_m.flip(-1)
    if torch.rand((), generator=generator) < 0.5:
        # index_select is 20x faster than image[permutation]
        image = image.index_select(0, torch.randperm(3, generator=generator))
    return image, depth_m


class TrainingOrder(Sampler):
    """An epoch's shuffled order, each index paired with a seed for its augmentation, cut into
    batches of `batch_size` (the global batch: the last, partial one is dropped).

    Both follow from (seed, epoch) alone, so the batches and their augmentation do not
    depend on the number of workers, on whether the run was stopped and resumed, or on the
    number of processes: process `rank` of `world_size` takes its share of each batch, as
    torch's DistributedSampler would, with mid-epoch starts. start() picks the epoch and how
    many of its samples (counted over all processes) are done already.
    """

    def __init__(self, num_samples, seed, batch_size, rank=0, world_size=1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        self.num_samples = num_samples
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.samples_done = 0

    @property
    def steps_per_epoch(self):
        return self.num_samples // self.batch_size

    def start(self, epoch, samples_done=0):
        self.epoch, self.samples_done = epoch, samples_done

    def _steps_left(self):
        return (self.num_samples - self.samples_done) // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        augment_seeds = torch.randint(2**62, (self.num_samples,), generator=generator).tolist()
        share = self.batch_size // self.world_size
        for step in range(self._steps_left()):
            first = self.samples_done + step * self.batch_size + self.rank * share
            yield from zip(order[first : first + share], augment_seeds[first : first + share])

    def __len__(self):
        return self._steps_left() * (self.batch_size // self.world_size)


# ----------------------------------------------------------------------------- datasets of one's own

RGB_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
DEPTH_SUFFIXES = (".png", ".npy", ".tif", ".tiff")
# Without --val_data, every HELD_OUT_EVERY-th pair of a dataset of one's own validates instead of training.
HELD_OUT_EVERY = 20


def hold_out(items, every):
    """(kept, held) lists of a sequence: every `every`-th item from the every-th is held out to validate
    (the last one when there are fewer than `every`), the others kept, both in order. By position, in
    one pass: no item is looked up or compared."""
    items = list(items)
    if len(items) < every:
        return items[:-1], items[-1:]
    return [item for number, item in enumerate(items, start=1) if number % every], items[every - 1 :: every]


def open_rgbd_pairs(path, flag):
    """(archive, pairs) of a dataset of one's own: the lines of a CSV (paths relative to it), or the
    pictures of folder/rgb each with the depth file of the same name in folder/depth."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise UserError(f"{flag} {path} does not exist")
        archive = DirectoryArchive(path.parent)
        return archive, read_pairs(archive, path.name)
    return DirectoryArchive(path), folder_pairs(path)


def folder_pairs(path):
    """(rgb/NAME.ext, depth/NAME.ext) pairs of a folder, matched by name (subfolders included)."""
    rgb_dir, depth_dir = Path(path) / "rgb", Path(path) / "depth"
    depth_files = {}
    for file in sorted(depth_dir.rglob("*")):
        if file.is_file() and file.suffix.lower() in DEPTH_SUFFIXES:
            depth_files.setdefault(file.relative_to(depth_dir).with_suffix(""), file)
    pairs = []
    for file in sorted(rgb_dir.rglob("*")):
        if not (file.is_file() and file.suffix.lower() in RGB_SUFFIXES) or file.name.startswith("."):
            continue
        depth = depth_files.get(file.relative_to(rgb_dir).with_suffix(""))
        if depth is None:
            stem = file.relative_to(rgb_dir).with_suffix("")
            raise UserError(f"{file} has no depth file {depth_dir / stem}.* ({', '.join(DEPTH_SUFFIXES)})")
        pairs.append((file.relative_to(path).as_posix(), depth.relative_to(path).as_posix()))
    if not pairs:
        raise UserError(f"{rgb_dir} holds no pictures ({' '.join(RGB_SUFFIXES)})")
    return pairs


def open_nyu_training_sets(data_dir, val_data=None, depth_scale=None):
    """(training set, validation set) of NYU's training zip (or its extracted folder): validated on its
    test split, or on val_data, pairs of one's own (depth PNGs read with depth_scale)."""
    archive = open_training_data(data_dir)
    train_set = NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=True)
    if val_data is None:
        return train_set, NYUDepthDataset(archive, read_pairs(archive, TEST_CSV), augment=False)
    val_archive, val_pairs = open_rgbd_pairs(val_data, "--val_data")
    return train_set, _checked(NYUDepthDataset(val_archive, val_pairs, False, depth_scale), "--val_data")


def open_own_training_sets(data_dir, val_data=None, depth_scale=None):
    """(training set, validation set) of a dataset of one's own (depth PNGs read with depth_scale),
    validated on val_data, or else on every HELD_OUT_EVERY-th of its pairs. The first pair of each is
    decoded here, so a setting that does not fit the files (no --depth_scale for PNGs, a picture and
    depth of two sizes) stops the run now."""
    archive, pairs = open_rgbd_pairs(data_dir, "--data_dir")
    if val_data is not None:
        val_archive, val_pairs = open_rgbd_pairs(val_data, "--val_data")
    elif len(pairs) < 2:
        raise UserError(f"--data_dir {data_dir} has {len(pairs)} pair; give --val_data or more pairs")
    else:
        pairs, val_pairs = hold_out(pairs, HELD_OUT_EVERY)
        val_archive = archive
    train_set = _checked(NYUDepthDataset(archive, pairs, True, depth_scale), "--data_dir")
    return train_set, _checked(NYUDepthDataset(val_archive, val_pairs, False, depth_scale), "--val_data")


def _checked(dataset, flag):
    try:
        dataset.load_pair(0)
    except DecodeError as err:
        raise UserError(f"{flag}: {err}") from err
    return dataset


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
            raise UserError(f"--data {self.path} is not a zip file, or is truncated (its table of contents is missing)")
        try:
            with zipfile.ZipFile(self.path) as archive:
                self._read_headers(archive)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise UserError(f"{self.path} is a damaged zip file ({err})") from err
        self._check()

    def _read_headers(self, archive):
        names = archive.namelist()
        self.rgb_name = _find_member(names, EIGEN_RGB, self.path)
        self.depth_name = _find_member(names, EIGEN_DEPTH, self.path)
        crop_name = _find_member(names, EIGEN_CROP, self.path)
        try:
            crop = np.load(io.BytesIO(archive.read(crop_name))).ravel()
            self.crop = tuple(int(v) for v in crop)
        except (ValueError, TypeError) as err:
            raise UserError(f"{self.path}: {crop_name} is not an array of 4 integers ({err})") from err
        self.rgb_shape, self.rgb_dtype = self._header(archive, self.rgb_name)
        self.depth_shape, self.depth_dtype = self._header(archive, self.depth_name)

    def _header(self, archive, name):
        try:
            with archive.open(name) as stream:
                shape, fortran_order, dtype = _read_npy_header(stream)
        except ValueError as err:
            raise UserError(f"{self.path}: {name} is not a .npy array ({err})") from err
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

    def depth_has_holes(self, count=8):
        """Whether the depth of the first `count` pictures has pixels without a measurement (not finite,
        or <= 0): raw depth does (the Kinect's shadows, its empty border); the filled depth of
        nyu_test.zip does not."""
        if len(self) == 0:
            return False
        batches = self.batches(count)
        _, depth_m = next(batches)
        batches.close()
        return not bool((np.isfinite(depth_m) & (depth_m > 0)).all())

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
                rgb = np.frombuffer(self._read(rgb_stream, count * rgb_bytes), dtype=self.rgb_dtype)
                depth = np.frombuffer(self._read(depth_stream, count * depth_bytes), dtype=self.depth_dtype)
                yield (
                    rgb.reshape(count, *self.rgb_shape[1:]),
                    depth.reshape(count, *self.depth_shape[1:]).astype(np.float32),
                )

    def _read(self, stream, size):
        """Exactly `size` bytes of an array member; a damaged or short member is the user's error."""
        try:
            data = stream.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise UserError(f"{self.path} is a damaged zip file ({err})") from err
        if len(data) != size:
            raise UserError(f"{self.path} ends early: an array in it is shorter than its header says")
        return bytearray(data)  # writable, as torch.from_numpy wants


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
