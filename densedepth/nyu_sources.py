"""NYU Depth v2 from the sources that still exist: NYU's labeled dataset with its splits, and BTS's lists.

nyu_depth_v2_labeled.mat  MATLAB v7.3 (HDF5), read with h5py, every array stored transposed:
                          images (1449, 3, 640, 480) uint8 -> picture i is images[i].transpose(2, 1, 0);
                          depths, rawDepths (1449, 640, 480) float32 metres -> depths[i].T.
                          depths is filled in by Levin et al.'s colorization (DenseDepth's test depth);
                          rawDepths is the projected raw depth, 0 where missing (BTS, AdaBins, ZoeDepth).
splits.mat                MATLAB v5, read with scipy: trainNdxs (795, 1), testNdxs (654, 1), 1-based;
                          the 654 test pictures are the Eigen test split.
BTS's lists               nyudepthv2_train_files_with_gt.txt (24,231 lines of the `sync` set:
                          `/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579`) and
                          nyudepthv2_test_files_with_gt.txt (654 lines of official_splits/test:
                          `bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579`), paths relative to
                          --data_root, depth 16-bit PNGs in millimetres, the focal length third.
"""

import os
import re
from pathlib import Path

import numpy as np
import torch

from data import NYU_SIZE, DecodeError, DirectoryArchive, NYUDepthDataset, PairDataset, hold_out
from utils import HDF5_SIGNATURE, UserError

GROUND_TRUTHS = ("filled", "raw")  # the labeled .mat's depths (colorization-filled) or rawDepths
_MAT_ARRAYS = {"images": "images", "filled": "depths", "raw": "rawDepths"}
BTS_NYU_LINE = re.compile(r"^/?(?P<rgb>\S+\.(?:jpg|jpeg|png)) /?(?P<depth>\S+\.png) (?P<focal>[-+.\deE]+)$")
BTS_NYU_SHAPE = "'SCENE/rgb_NNNNN.jpg SCENE/sync_depth_NNNNN.png FOCAL' (BTS's NYU lists, a leading slash or none)"
BTS_DEPTH_SCALE = 1000  # BTS's depth PNGs: uint16 millimetres


# ----------------------------------------------------------------------------- the labeled .mat


def is_hdf5(path):
    """Whether a file is HDF5: MATLAB v7.3 puts a 512-byte header before the HDF5 signature."""
    with open(path, "rb") as file:
        head = file.read(520)
    return head[:8] == HDF5_SIGNATURE or head[512:520] == HDF5_SIGNATURE


class LabeledMat:
    """NYU's labeled dataset, read picture by picture with h5py, never the whole file. The file is
    opened lazily in each process (a DataLoader worker opens its own handle; h5py handles do not
    cross processes), so workers share the page cache rather than copies."""

    def __init__(self, path, flag):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{flag} {self.path} does not exist")
        if not is_hdf5(self.path):
            raise UserError(
                f"{flag} {self.path} is not a MATLAB v7.3 (HDF5) file: the labeled dataset "
                "nyu_depth_v2_labeled.mat is one (a MATLAB v5 file such as splits.mat goes to --splits)"
            )
        self._file, self._pid = None, None
        import h5py  # a core requirement; imported here so the rest of the project loads without it

        with h5py.File(self.path, "r") as arrays:  # checked, then closed: each process opens its own
            self.count, self.has_raw = self._check(arrays, flag)

    def _check(self, arrays, flag):
        """(pictures, whether rawDepths is there) of an open file, checked to be NYU's labeled dataset."""
        missing = [name for name in ("images", "depths") if name not in arrays]
        if missing:
            raise UserError(
                f"{flag} {self.path} has no {' or '.join(missing)}: it holds {', '.join(sorted(arrays)) or 'nothing'}"
                ", not NYU's labeled dataset"
            )
        count = arrays["images"].shape[0]
        for name, wanted in (("images", (count, 3, NYU_SIZE[1], NYU_SIZE[0])), ("depths", (count, *NYU_SIZE[::-1]))):
            if arrays[name].shape != wanted:
                raise UserError(f"{self.path}: {name} is {arrays[name].shape}; expected {wanted} (MATLAB's layout)")
        return count, "rawDepths" in arrays

    def _open(self):
        """This process's handle on the file, opened on first use here (a forked worker opens its own)."""
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}  # each process opens its own handle

    def picture(self, index):
        """Picture `index` (0-based) as a (480, 640, 3) uint8 array, upright."""
        return np.ascontiguousarray(self._open()["images"][index].transpose(2, 1, 0))

    def depth_m(self, index, ground_truth):
        """Depth of picture `index` in metres, (480, 640) float32: 'filled' or 'raw' (0 where missing)."""
        return np.ascontiguousarray(self._open()[_MAT_ARRAYS[ground_truth]][index].T).astype(np.float32)


def read_splits(path, count, flag="--splits"):
    """(train, test) 0-based indices from NYU's splits.mat (MATLAB v5, trainNdxs and testNdxs 1-based),
    checked to lie within the labeled dataset's `count` pictures."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path} does not exist")
    if is_hdf5(path):
        raise UserError(f"{flag} {path} is a MATLAB v7.3 (HDF5) file; splits.mat is MATLAB v5 (the labeled dataset "
                        "itself goes to --data / --data_dir)")  # fmt: skip
    from scipy.io import loadmat  # scipy reads MATLAB v5 files, which h5py cannot
    from scipy.io.matlab import MatReadError

    try:
        contents = loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as err:
        raise UserError(f"{flag} {path} is not a MATLAB .mat file that can be read ({err})") from err
    splits = []
    for key in ("trainNdxs", "testNdxs"):
        if key not in contents:
            names = ", ".join(name for name in contents if not name.startswith("__")) or "nothing"
            raise UserError(f"{flag} {path} has no {key} (it holds {names}): not NYU's splits.mat")
        indices = np.asarray(contents[key]).astype(np.int64).ravel()
        if len(indices) and (indices.min() < 1 or indices.max() > count):
            raise UserError(f"{flag} {path}: {key} runs from {indices.min()} to {indices.max()}, but the labeled "
                            f"dataset has pictures 1 to {count} (the indices are 1-based)")  # fmt: skip
        splits.append((indices - 1).tolist())
    return tuple(splits)


# pragma: no mutate start (outside mutation testing: writers of generated data)
def write_labeled_mat(path, pictures, depths_m, raw_depths_m):
    """Write a labeled dataset as MATLAB v7.3 saves one: HDF5 after a 512-byte MATLAB header, every
    array transposed (images (N, 3, W, H) uint8, depths and rawDepths (N, W, H) float32 metres), from
    pictures (N, H, W, 3) and depths (N, H, W)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as file:
        file["images"] = np.ascontiguousarray(np.asarray(pictures, dtype=np.uint8).transpose(0, 3, 2, 1))
        file["depths"] = np.ascontiguousarray(np.asarray(depths_m, dtype=np.float32).transpose(0, 2, 1))
        file["rawDepths"] = np.ascontiguousarray(np.asarray(raw_depths_m, dtype=np.float32).transpose(0, 2, 1))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Dec  6 00:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as file:
        file.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")  # MATLAB's 128-byte header, version 0x0200


def write_splits(path, train_indices, test_indices):
    """Write splits.mat as NYU distributes it (MATLAB v5): trainNdxs, testNdxs as (n, 1) 1-based uint16."""
    from scipy.io import savemat

    def column(indices):
        return np.asarray(indices, dtype=np.uint16).reshape(-1, 1)

    savemat(path, {"trainNdxs": column(train_indices), "testNdxs": column(test_indices)})


# pragma: no mutate end


class LabeledDataset(PairDataset):
    """Pictures of the labeled .mat at the given 0-based indices, with the chosen ground truth.

    Items as data.PairDataset's, 480x640. Raw depth has holes (0), masked as in datasets of one's
    own; filled depth is dense.
    """

    def __init__(self, mat, indices, ground_truth, augment=False):
        if ground_truth == "raw" and not mat.has_raw:
            raise UserError(f"{mat.path} has no rawDepths for --gt raw")
        self.mat, self.indices, self.ground_truth, self.augment = mat, list(indices), ground_truth, augment
        self.pairs = [(f"{mat.path.name}:images[{i}]", f"{mat.path.name}:{_MAT_ARRAYS[ground_truth]}[{i}]")
                      for i in self.indices]  # fmt: skip

    @property
    def own_data(self):
        """Raw depth has holes, which training and validation mask; the filled depth is dense, as NYU's zip."""
        return self.ground_truth == "raw"

    def load_pair(self, index):
        """Picture `index` of the split and its depth; DecodeError if the file cannot be read there."""
        try:
            image = torch.from_numpy(self.mat.picture(self.indices[index])).permute(2, 0, 1)
            depth_m = torch.from_numpy(self.mat.depth_m(self.indices[index], self.ground_truth))[None]
        except (OSError, KeyError) as err:
            raise DecodeError(f"{self.pairs[index][0]} could not be read ({err})") from err
        return image, depth_m


# ----------------------------------------------------------------------------- BTS's lists


def is_bts_nyu_line(line):
    """Whether a list line (fields joined by single spaces) is one of BTS's NYU lists': 'rgb depth focal'."""
    return bool(BTS_NYU_LINE.match(line))


def read_bts_nyu_list(path, data_root, flag):
    """(rgb, depth) paths relative to data_root, and the focal lengths, of a BTS NYU list; each file
    checked to be there, a line of another shape stops with its number."""
    if data_root is None:
        raise UserError(f"{flag} {path} is one of BTS's NYU lists: give --data_root, the folder its paths are in "
                        "(sync/ for the training list, official_splits/test/ for the test list)")  # fmt: skip
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"--data_root {root} is not a folder")
    pairs, focals = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = " ".join(line.split())
        if not line:
            continue
        match = BTS_NYU_LINE.match(line)
        if match is None:
            raise UserError(f"{flag} {path} line {number} has {len(line.split())} fields and is not a list line: "
                            f"{line[:120]!r}; the shape read is {BTS_NYU_SHAPE}")  # fmt: skip
        for name in (match["rgb"], match["depth"]):
            if not (root / name).is_file():
                raise UserError(f"{flag} {path} line {number} names {root / name}, which does not exist")
        pairs.append((match["rgb"], match["depth"]))
        focals.append(float(match["focal"]))
    if not pairs:
        raise UserError(f"{flag} {path} lists no pairs")
    return pairs, focals


# pragma: no mutate start (outside mutation testing: the wiring of the sources to training sets)
def open_labeled_sets(data_dir, splits, ground_truth):
    """(training set, validation set) of the labeled .mat: its trainNdxs train, its testNdxs validate."""
    if splits is None:
        raise UserError(f"--data_dir {data_dir} is a .mat: give --splits splits.mat (trainNdxs train, testNdxs "
                        "validate)")  # fmt: skip
    mat = LabeledMat(data_dir, "--data_dir")
    train_indices, test_indices = read_splits(splits, mat.count)
    return LabeledDataset(mat, train_indices, ground_truth, True), LabeledDataset(mat, test_indices, ground_truth)


def open_bts_sets(data_dir, val_data, data_root, val_data_root, held_out_every):
    """(training set, validation set) of BTS's training list: validated on val_data (a BTS list under
    val_data_root, else data_root), or on every held_out_every-th pair."""
    pairs, _ = read_bts_nyu_list(data_dir, data_root, "--data_dir")
    if val_data is not None:
        root = val_data_root or data_root
        val_pairs, _ = read_bts_nyu_list(val_data, root, "--val_data")
    else:
        root = data_root
        pairs, val_pairs = hold_out(pairs, held_out_every)
    val_set = NYUDepthDataset(DirectoryArchive(root), val_pairs, False, BTS_DEPTH_SCALE)
    return NYUDepthDataset(DirectoryArchive(data_root), pairs, True, BTS_DEPTH_SCALE), val_set


# pragma: no mutate end
