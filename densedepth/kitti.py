"""KITTI as distributed: the raw drives, the depth benchmark's annotated depth, and the Eigen split
lists of BTS/AdaBins and of monodepth2, read as they are.

Layouts (`--kitti_raw DIR`, `--kitti_depth DIR`):
  raw          DATE/calib_cam_to_cam.txt, DATE/calib_velo_to_cam.txt,
               DATE/DRIVE/image_02/data/%010d.png (.jpg too; image_03: the right camera),
               DATE/DRIVE/velodyne_points/data/%010d.bin (float32 x, y, z, reflectance; x forward)
  annotated    data_depth_annotated as unzipped, train/DRIVE/proj_depth/groundtruth/image_02/%010d.png
               and val/..., or both merged into one folder (BTS's instructions): uint16, m x 256, 0 = none
Split lists, told apart by the shape of their lines:
  BTS/AdaBins  2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
               2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377
               (the second field None where the benchmark has no annotated depth)
  monodepth2   2011_09_26/2011_09_26_drive_0002_sync 69 l   (l: image_02, r: image_03)

Ground truth comes from the annotated PNGs when --kitti_depth is given, else it is projected from
the Velodyne scan as monodepth2's export_gt_depth.py --split eigen does (velodyne_depth_m).
"""

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import DecodeError, PairDataset, decode_depth, decode_rgb, hold_out
from utils import UserError

# KITTI's evaluation protocols (monodepth2, BTS, AdaBins) count ground truth with 1e-3 < d < 80 m.
KITTI_GT_RANGE_M = (1e-3, 80.0)
ANNOTATED_SCALE = 256  # annotated depth PNGs: uint16 metres x 256
VELODYNE_DEPTHS = ("velodyne", "camera")  # which distance a projected point writes: x (legacy) or camera z
IMAGE_SUFFIXES = (".png", ".jpg")  # monodepth2's users often convert the frames to JPEG

_DRIVE = r"(?P<date>\d{4}_\d\d_\d\d)/(?P<drive>[^/\s]+)"
_BTS_LINE = re.compile(
    _DRIVE + r"/image_0(?P<camera>[23])/data/(?P<frame>\d+)\.(?:png|jpg) (?P<depth>\S+) (?P<focal>[-+.\deE]+)$"
)
_MONODEPTH2_LINE = re.compile(_DRIVE + r" (?P<frame>\d+) (?P<side>[lr])$")
LIST_SHAPES = (
    "'DATE/DRIVE/image_02/data/NNNNNNNNNN.png DRIVE/proj_depth/groundtruth/image_02/NNNNNNNNNN.png FOCAL' (BTS), "
    "'DATE/DRIVE FRAME l|r' (monodepth2)"
)


@dataclass(frozen=True)
class KittiFrame:
    """One line of a split list: a frame of a drive, seen by camera 2 (left) or 3 (right)."""

    date: str
    drive: str
    frame: int
    camera: int
    depth_name: str = ""  # BTS's second field: the annotated depth's path under --kitti_depth; "" if not given
    no_depth: bool = False  # BTS's second field is None: the benchmark has no annotated depth for it

    @property
    def name(self):
        return f"{self.date}/{self.drive}/image_0{self.camera}/data/{self.frame:010d}"


# ----------------------------------------------------------------------------- split lists


def kitti_list_shape(line):
    """'bts' or 'monodepth2' if a list line (fields joined by single spaces) has that list's shape, else None."""
    if _BTS_LINE.match(line):
        return "bts"
    if _MONODEPTH2_LINE.match(line):
        return "monodepth2"
    return None


def read_split_list(path, flag):
    """The KittiFrames of a BTS or monodepth2 split list; a line of another shape stops with its number."""
    frames = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = " ".join(line.split())
        if not line:
            continue
        frame = _parse_line(line)
        if frame is None:
            raise UserError(
                f"{flag} {path} line {number} has {len(line.split())} fields and is not a KITTI list line: "
                f"{line[:120]!r}; the shapes read are {LIST_SHAPES}"
            )
        frames.append(frame)
    if not frames:
        raise UserError(f"{flag} {path} lists no frames")
    return frames


def _parse_line(line):
    match = _BTS_LINE.match(line)
    if match:
        depth = match["depth"]
        return KittiFrame(
            match["date"], match["drive"], int(match["frame"]), int(match["camera"]),
            depth_name="" if depth == "None" else depth, no_depth=depth == "None",
        )  # fmt: skip
    match = _MONODEPTH2_LINE.match(line)
    if match:
        return KittiFrame(match["date"], match["drive"], int(match["frame"]), 2 if match["side"] == "l" else 3)
    return None


# ----------------------------------------------------------------------------- calibration and the Velodyne


def read_calibration_file(path):
    """A KITTI calibration file as {key: float array}; lines that are not numbers (calib_time) are left out."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        key, colon, text = line.partition(":")
        if not colon:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in text.split()], dtype=np.float64)
        except ValueError:
            continue
    return values


@dataclass(frozen=True)
class Projection:
    """Velodyne points to a camera's rectified picture: P_rect_0c @ R_rect_00 @ [R|T] (3x4), and the
    picture's size (height, width) from S_rect_0c."""

    velodyne_to_image: np.ndarray
    size: tuple


def camera_projection(date_dir, camera):
    """The Projection of camera `camera` from DATE/calib_cam_to_cam.txt and calib_velo_to_cam.txt,
    each checked for the entries used (a missing file or entry stops with its name)."""
    cam_to_cam = _calibration(Path(date_dir) / "calib_cam_to_cam.txt", (f"P_rect_0{camera}", "R_rect_00",
                                                                         f"S_rect_0{camera}"))  # fmt: skip
    velo_to_cam = _calibration(Path(date_dir) / "calib_velo_to_cam.txt", ("R", "T"))
    rect = np.eye(4)
    rect[:3, :3] = cam_to_cam["R_rect_00"].reshape(3, 3)
    velo = np.eye(4)
    velo[:3, :3], velo[:3, 3] = velo_to_cam["R"].reshape(3, 3), velo_to_cam["T"]
    width, height = cam_to_cam[f"S_rect_0{camera}"].astype(int)
    matrix = cam_to_cam[f"P_rect_0{camera}"].reshape(3, 4) @ rect @ velo
    return Projection(matrix, (int(height), int(width)))


_SIZES = {"P_rect": 12, "R_rect": 9, "S_rect": 2, "R": 9, "T": 3}


def _calibration(path, keys):
    if not path.is_file():
        raise UserError(f"calibration file {path} does not exist (--kitti_raw: DATE/{path.name} is needed)")
    values = read_calibration_file(path)
    for key in keys:
        wanted = _SIZES[key[:-3] if key[-3:-1] == "_0" else key]
        if key not in values or values[key].size != wanted:
            raise UserError(f"calibration file {path} has no {key} of {wanted} numbers")
    return values


def read_velodyne(path):
    """A Velodyne scan as an (N, 4) float32 array: x (forward), y (left), z (up), reflectance."""
    data = np.fromfile(path, dtype=np.float32)
    return data.reshape(-1, 4)


def velodyne_depth_m(points, projection, depth="velodyne"):
    """Sparse depth (H, W) float32 metres, 0 where no point lands: monodepth2's generate_depth_map.

    Points with x >= 0 are projected, (u, v) = (M p)[:2] / (M p)[2]; a point lands in column
    round(u) - 1 and row round(v) - 1 (KITTI's MATLAB is 1-based) when that is inside the picture;
    where several land on one pixel the smallest depth is kept; negatives become 0. depth:
    'velodyne' writes the scanner's forward distance x, the legacy convention of the Eigen split's
    ground truth (vel_depth=True); 'camera' writes the depth along the camera's axis, (M p)[2].
    np.round rounds halves to even, as monodepth2's does. Unlike monodepth2's sub2ind, which folds
    the last column of a row onto the first of the next, each pixel keeps its own points: the two
    can differ only in columns 0 and W - 1, outside every KITTI crop.
    """
    points = points[points[:, 0] >= 0]
    homogeneous = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    projected = homogeneous @ projection.velodyne_to_image.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = projected[:, 0] / projected[:, 2], projected[:, 1] / projected[:, 2]
    values = points[:, 0].astype(np.float64) if depth == "velodyne" else projected[:, 2]
    height, width = projection.size
    column, row = np.round(u) - 1, np.round(v) - 1
    inside = (column >= 0) & (row >= 0) & (column < width) & (row < height)
    pixel = row[inside].astype(np.int64) * width + column[inside].astype(np.int64)
    values = values[inside]
    # The smallest depth of each pixel: sort by pixel, then depth, and keep each pixel's first.
    order = np.lexsort((values, pixel))
    pixel, values = pixel[order], values[order]
    first = np.ones(len(pixel), dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    depth_m = np.zeros(height * width, dtype=np.float64)
    depth_m[pixel[first]] = values[first]
    return np.maximum(depth_m, 0).reshape(height, width).astype(np.float32)


# pragma: no mutate start (outside mutation testing: writers of generated data, the dataset's file look-ups and the flags)
def write_calibration(path, values, calib_time="09-Jan-2012 13:57:47"):
    """Write a KITTI calibration file: `calib_time: ...`, then a `key: numbers` line for each of
    `values` ({key: array}), numbers as KITTI writes them (%e)."""
    lines = [f"calib_time: {calib_time}"]
    lines += [f"{key}: " + " ".join(f"{v:e}" for v in np.asarray(array, dtype=np.float64).ravel())
              for key, array in values.items()]  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


def write_velodyne(path, points):
    """Write (N, 4) points (x, y, z, reflectance) as a KITTI Velodyne .bin of float32."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.asarray(points, dtype=np.float32).tofile(path)


# ----------------------------------------------------------------------------- the dataset


class KittiDataset(PairDataset):
    """The frames of a split list, from --kitti_raw, with ground truth from --kitti_depth's annotated
    PNGs or else projected from the Velodyne.

    Items as data.PairDataset's, depth 0 where nothing was measured. Frames without ground truth
    (None in a BTS list; with --kitti_depth, a frame of monodepth2's lists that the benchmark did
    not annotate, in a drive it did) are left out and counted in `num_without_gt`. Every file a kept
    frame needs is checked to be there when the list is read.
    """

    own_data = True  # sparse: invalid depth is masked, as in datasets of one's own

    def __init__(self, list_path, kitti_raw, kitti_depth=None, augment=False, velodyne_depth="velodyne",
                 flag="--data"):  # fmt: skip
        if kitti_raw is None:
            raise UserError(f"{flag} {list_path} is a KITTI split list: give --kitti_raw, the folder of KITTI's raw "
                            "drives its pictures are in")  # fmt: skip
        self.list_path, self.flag = Path(list_path), flag
        self.raw = _existing_dir(kitti_raw, "--kitti_raw")
        self.annotated = None if kitti_depth is None else _existing_dir(kitti_depth, "--kitti_depth")
        self.augment = augment
        self.velodyne_depth = velodyne_depth
        listed = read_split_list(list_path, flag)
        self.num_listed = len(listed)
        self.source = "annotated" if self.annotated else "velodyne"
        self.drive_roots = self._find_drives(listed)
        # Only the list's own None means "no ground truth"; a file it names that is not there is an error.
        kept = [frame for frame in listed if self.source == "velodyne" or not frame.no_depth]
        self.num_unannotated = 0
        if self.source == "annotated":
            kept = self._annotated_frames(kept)
        self.num_without_gt = len(listed) - len(kept)
        if not kept:
            raise UserError(f"{flag} {list_path}: none of its {len(listed)} frames has ground truth")
        self.frames = kept
        self.depth_files = self._ground_truth_files(kept)
        self.images = [self._image_file(frame) for frame in self.frames]
        self.pairs = [(str(image), str(depth)) for image, depth in zip(self.images, self.depth_files)]
        if self.source == "velodyne":
            self.projections = {key: camera_projection(self.raw / key[0], key[1])
                                for key in sorted({(f.date, f.camera) for f in self.frames})}  # fmt: skip
            for path in self.depth_files:
                if path.stat().st_size % 16:
                    raise UserError(f"Velodyne scan {path} is {path.stat().st_size} bytes, not a whole number of "
                                    "16-byte points (float32 x, y, z, reflectance)")  # fmt: skip

    def _find_drives(self, frames):
        """{drive: the folder of --kitti_depth it is in (itself, train/ or val/)}; stops if none is there."""
        if self.annotated is None:
            return {}
        drives = sorted({frame.drive for frame in frames})
        roots = {}
        for drive in drives:
            for sub in ("", "train", "val"):
                if (self.annotated / sub / drive).is_dir():
                    roots[drive] = self.annotated / sub
                    break
        if not roots:
            raise UserError(f"--kitti_depth {self.annotated} holds none of the {len(drives)} drives of "
                            f"{self.list_path} (looked for {drives[0]} in it, in train/ and in val/)")  # fmt: skip
        return roots

    def _annotated_frames(self, frames):
        """`frames` less those of monodepth2's lists (which name no ground-truth file) that KITTI did not
        annotate in a drive --kitti_depth holds (each drive's first and last frames), counted in
        num_unannotated. A drive it does not hold is left to _ground_truth_files' error."""
        kept = [frame for frame in frames
                if frame.depth_name or frame.drive not in self.drive_roots or self._depth_file(frame).is_file()]  # fmt: skip
        self.num_unannotated = len(frames) - len(kept)
        return kept

    def _ground_truth_files(self, frames):
        """The ground truth's file of each frame (the annotated PNG, or the Velodyne scan); stops naming
        the first that is not there and how many are missing."""
        paths = [self._depth_file(frame) for frame in frames]
        missing = [path for path in paths if not path.is_file()]
        if not missing:
            return paths
        if self.source == "velodyne":
            raise UserError(f"Velodyne scan {missing[0]} does not exist (listed in {self.list_path}; "
                            f"{len(missing)} of its {len(paths)} scans are missing)")  # fmt: skip
        raise UserError(
            f"{len(missing)} of the {len(paths)} ground-truth files of {self.list_path} are not under --kitti_depth "
            f"{self.annotated} (nor its train/ or val/), the first: {missing[0]}; data_depth_annotated has both "
            "train/ and val/ (BTS merges them)"
        )

    def _depth_file(self, frame):
        """Where the ground truth of a frame is: the annotated PNG, or the Velodyne scan."""
        if self.annotated is None:
            return self.raw / frame.date / frame.drive / "velodyne_points" / "data" / f"{frame.frame:010d}.bin"
        relative = frame.depth_name or (
            f"{frame.drive}/proj_depth/groundtruth/image_0{frame.camera}/{frame.frame:010d}.png"
        )
        return self.drive_roots.get(relative.split("/")[0], self.annotated) / relative

    def describe_without_gt(self):
        """'45 of its 697 frames have no ground truth (None in the list)', for the screen."""
        if self.num_unannotated:
            return (f"{self.num_without_gt} of its {self.num_listed} frames have no ground truth (not annotated by "
                    "KITTI's depth benchmark)")  # fmt: skip
        return f"{self.num_without_gt} of its {self.num_listed} frames have no ground truth (None in the list)"

    def _image_file(self, frame):
        stem = self.raw / frame.name
        for suffix in IMAGE_SUFFIXES:
            if stem.with_suffix(suffix).is_file():
                return stem.with_suffix(suffix)
        raise UserError(f"picture {stem}.png (or .jpg) does not exist (listed in {self.list_path})")

    def subset(self, indices):
        """The same dataset with only the frames at `indices` (the counts of the list stay as they were)."""
        part = copy.copy(self)
        for name in ("frames", "depth_files", "images", "pairs"):
            setattr(part, name, [getattr(self, name)[index] for index in indices])
        return part

    def describe_counts(self):
        """'652 of 697 frames scored; 45 without ground truth', for the screen and metrics.json."""
        text = f"{len(self)} of {self.num_listed} frames scored"
        return text + (f"; {self.num_without_gt} without ground truth" if self.num_without_gt else "")

    def load_pair(self, index):
        """The decoded frame `index` and its ground truth; DecodeError naming the file that is wrong."""
        image = _decoded(decode_rgb, self.images[index])
        depth_m = self._ground_truth(index)
        if image.shape[-2:] != depth_m.shape[-2:]:
            raise DecodeError(
                f"{self.images[index]} is {image.shape[-1]}x{image.shape[-2]} but its ground truth "
                f"{self.depth_files[index]} is {depth_m.shape[-1]}x{depth_m.shape[-2]}"
            )
        return image, depth_m

    def _ground_truth(self, index):
        path = self.depth_files[index]
        if self.source == "annotated":
            return _decoded(lambda data: decode_depth(data, ANNOTATED_SCALE), path)
        frame = self.frames[index]
        points = read_velodyne(path)
        depth_m = velodyne_depth_m(points, self.projections[(frame.date, frame.camera)], self.velodyne_depth)
        return torch.from_numpy(depth_m)[None]


def _decoded(decode, path):
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DecodeError(f"{path} could not be read ({err.strerror})") from err
    try:
        return decode(data)
    except DecodeError as err:
        raise DecodeError(f"{path} {err}") from err


def _existing_dir(path, flag):
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{flag} {path} is not a folder")
    return path


def add_kitti_arguments(group):
    """--kitti_raw, --kitti_depth and --velodyne_depth, for the scripts that read KITTI's lists."""
    group.add_argument(
        "--kitti_raw",
        help="KITTI's raw drives as unzipped: DATE/calib_*.txt, DATE/DRIVE/image_02/data, velodyne_points",
    )
    group.add_argument(
        "--kitti_depth",
        help="ground truth from KITTI's annotated depth (data_depth_annotated: train/ and val/, or merged), as "
        "BTS, AdaBins and monodepth2's eigen_benchmark; default: projected from the Velodyne, as monodepth2's eigen",
    )
    group.add_argument(
        "--velodyne_depth",
        choices=VELODYNE_DEPTHS,
        help="depth a projected Velodyne point writes: the scanner's forward distance x (velodyne, the default: "
        "the legacy convention of the Eigen split's ground truth, monodepth2's) or the camera's z",
    )


def open_kitti_sets(list_path, val_list, kitti_raw, kitti_depth, velodyne_depth, held_out_every):
    """(training set, validation set) of KITTI split lists: the training list augmented, validated on
    val_list (a KITTI list too), or else on every held_out_every-th of its frames."""
    train_set = KittiDataset(list_path, kitti_raw, kitti_depth, True, velodyne_depth, "--data_dir")
    if val_list is not None:
        return train_set, KittiDataset(val_list, kitti_raw, kitti_depth, False, velodyne_depth, "--val_data")
    if len(train_set) < 2:
        raise UserError(f"--data_dir {list_path} has {len(train_set)} frame with ground truth; give --val_data")
    kept, held = hold_out(range(len(train_set)), held_out_every)
    val_set = train_set.subset(held)
    val_set.augment = False
    return train_set.subset(kept), val_set


# pragma: no mutate end
