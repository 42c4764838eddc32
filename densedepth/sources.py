"""What `--data` (evaluate.py, fill_depth.py) and `--data_dir` (train.py) name, decided in one place,
and the data opened with the defaults of the protocol that scores it.

The kinds, told apart by the path alone and, for lists, by the shape of their first line:
  zip          nyu_test.zip for evaluation; nyu_data.zip, or a folder holding it or its data/, for training
  pairs        a dataset of one's own: a .csv of rgb_path,depth_path lines or a folder with rgb/ and depth/
  labeled_mat  NYU's nyu_depth_v2_labeled.mat (with --splits splits.mat)
  bts_list     one of BTS's NYU lists (with --data_root)
  kitti_list   a KITTI split list, BTS's or monodepth2's (with --kitti_raw)
Each data-specific flag fits some kinds only (FLAG_KINDS); given with another, it is refused in one
line rather than ignored.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data import (
    DirectoryArchive,
    EigenTestZip,
    FailedSample,
    NYUDepthDataset,
    open_nyu_training_sets,
    open_own_training_sets,
    open_rgbd_pairs,
)
from densedepth.kitti import KITTI_GT_RANGE_M, KittiDataset, kitti_list_shape, open_kitti_sets
from densedepth.nyu_sources import (
    BTS_DEPTH_SCALE,
    LabeledDataset,
    LabeledMat,
    is_bts_nyu_line,
    open_bts_sets,
    open_labeled_sets,
    read_bts_nyu_list,
    read_splits,
)
from densedepth.protocol import NYU_PROTOCOLS, crop, crop_box, eigen_batches, kb_crop_box
from utils import UserError, ignore_stop_signals

ZIP, PAIRS, LABELED_MAT, BTS_LIST, KITTI_LIST = "zip", "pairs", "labeled_mat", "bts_list", "kitti_list"
UNKNOWN_LIST = "unknown_list"  # a .txt whose first line has none of the lists' shapes

# What each kind is called in a message that names the kinds a flag is for.
KIND_NAMES = {
    ZIP: "NYU's zip",
    PAIRS: "a dataset of one's own (a CSV or rgb/ + depth/ folders)",
    LABELED_MAT: "nyu_depth_v2_labeled.mat",
    BTS_LIST: "one of BTS's NYU lists (nyudepthv2_*_files_with_gt.txt)",
    KITTI_LIST: "a KITTI split list (BTS's or monodepth2's .txt)",
}
# The data-specific flags, and the kinds of data each is for.
FLAG_KINDS = {
    "splits": (LABELED_MAT,),
    "gt": (LABELED_MAT,),
    "data_root": (BTS_LIST,),
    "val_data_root": (BTS_LIST,),
    "protocol": (ZIP, LABELED_MAT, BTS_LIST),
    "kitti_raw": (KITTI_LIST,),
    "kitti_depth": (KITTI_LIST,),
    "velodyne_depth": (KITTI_LIST,),
    "kb_crop": (KITTI_LIST,),
    "depth_scale": (PAIRS,),
}


def first_list_line(path):
    """The first non-empty line of a .txt file, its fields joined by single spaces ('' for anything
    else): what the lists are told apart by, whatever whitespace (spaces, tabs, \\r\\n) they use."""
    path = Path(path)
    if path.suffix.lower() != ".txt" or not path.is_file():
        return ""
    with open(path, encoding="utf-8", errors="replace") as file:
        return next((" ".join(line.split()) for line in file if line.strip()), "")


def data_kind(path):
    """The kind of data `path` names (ZIP, PAIRS, LABELED_MAT, BTS_LIST, KITTI_LIST or UNKNOWN_LIST)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv" or ((path / "rgb").is_dir() and (path / "depth").is_dir()):
        return PAIRS
    if suffix == ".mat":
        return LABELED_MAT
    if suffix == ".txt":
        line = first_list_line(path)
        if kitti_list_shape(line):
            return KITTI_LIST
        if is_bts_nyu_line(line):
            return BTS_LIST
        return UNKNOWN_LIST
    return ZIP


# pragma: no mutate start (outside mutation testing: flag checks and the wiring of each kind of data to its dataset)
def check_data_flags(args, kind, data_flag, flags):
    """Refuse, in one line, each of `flags` given (not None, not False) with data of a kind it is not for."""
    for flag in flags:
        if getattr(args, flag, None) in (None, False) or kind in FLAG_KINDS[flag]:
            continue
        kinds = " or ".join(KIND_NAMES[name] for name in FLAG_KINDS[flag])
        given = getattr(args, data_flag.lstrip("-"), None)
        raise UserError(f"--{flag} is for {data_flag} {kinds}" + (f"; {given} is not one" if given else ""))


def refuse_unknown_list(path, flag):
    """Stop with what the lists look like when a .txt is none of them (or is not there)."""
    if not Path(path).is_file():
        raise UserError(f"{flag} {path} does not exist")
    first = first_list_line(path)
    raise UserError(
        f"{flag} {path} is a .txt whose first line {first[:100]!r} is neither a KITTI split list's (BTS's "
        "'DATE/DRIVE/image_02/data/N.png DEPTH FOCAL', monodepth2's 'DATE/DRIVE FRAME l|r') nor one of BTS's "
        "NYU lists' ('SCENE/rgb_N.jpg SCENE/sync_depth_N.png FOCAL')"
    )


# ----------------------------------------------------------------------------- training


EVALUATE_FLAGS = ("splits", "gt", "data_root", "protocol", "kitti_raw", "kitti_depth", "velodyne_depth", "kb_crop",
                  "depth_scale")  # fmt: skip
TRAIN_FLAGS = ("splits", "gt", "data_root", "val_data_root", "kitti_raw", "kitti_depth", "velodyne_depth")


def check_training_flags(args):
    """train.py's data flags against the kind of --data_dir, before anything is read: the kind."""
    kind = data_kind(args.data_dir)
    if kind == UNKNOWN_LIST:
        refuse_unknown_list(args.data_dir, "--data_dir")
    check_data_flags(args, kind, "--data_dir", TRAIN_FLAGS)
    if args.depth_scale is not None and not (kind == PAIRS or (kind == ZIP and args.val_data is not None)):
        raise UserError(f"--depth_scale is for datasets of one's own; {args.data_dir} is {KIND_NAMES[kind]}, which has "
                        "its own depth units")  # fmt: skip
    if kind == LABELED_MAT and args.val_data is not None:
        raise UserError(f"--val_data is not for --data_dir {args.data_dir}: the labeled .mat validates on splits.mat's "
                        "testNdxs")  # fmt: skip
    if args.val_data_root is not None and args.val_data is None:
        raise UserError("--val_data_root is the folder of --val_data's BTS list: give --val_data too")
    return kind


# The kind --val_data must be for each kind of --data_dir (the labeled .mat validates on its own testNdxs).
VALIDATION_KINDS = {ZIP: PAIRS, PAIRS: PAIRS, BTS_LIST: BTS_LIST, KITTI_LIST: KITTI_LIST}


def open_training_data(args, held_out_every):
    """(training set, validation set) of --data_dir and --val_data, whatever their kind (checked by
    check_training_flags); KITTI's frames without ground truth are said."""
    kind = data_kind(args.data_dir)
    if args.val_data is not None and data_kind(args.val_data) != VALIDATION_KINDS[kind]:
        raise UserError(f"--val_data {args.val_data} is not {KIND_NAMES[VALIDATION_KINDS[kind]]}, which is what "
                        f"validates --data_dir {KIND_NAMES[kind]}")  # fmt: skip
    if kind == LABELED_MAT:
        return open_labeled_sets(args.data_dir, args.splits, args.gt or "filled")
    if kind == ZIP:
        return open_nyu_training_sets(args.data_dir, args.val_data, args.depth_scale)
    if kind == BTS_LIST:
        sets = open_bts_sets(args.data_dir, args.val_data, args.data_root, args.val_data_root, held_out_every)
    elif kind == KITTI_LIST:
        sets = open_kitti_sets(args.data_dir, args.val_data, args.kitti_raw, args.kitti_depth,
                               args.velodyne_depth or "velodyne", held_out_every)  # fmt: skip
        if sets[0].num_without_gt:
            print(f"{args.data_dir}: {sets[0].describe_without_gt()}, left out")
    else:
        sets = open_own_training_sets(args.data_dir, args.val_data, args.depth_scale)
    if args.val_data is None:
        print(f"validating on {len(sets[1])} held-out pairs of {args.data_dir} (every {held_out_every}th; --val_data)")
    return sets


# ----------------------------------------------------------------------------- evaluation


@dataclass
class TestSet:
    """Test pictures with their ground truth, and how the protocol scores them.

    `pictures` is an EigenTestZip or a PairDataset. The metrics count ground truth that is finite
    and > 0, inside `crop` (a crop's name, a box, or None for the Eigen crop scaled to the picture),
    within gt_range_m (low < d < high) if given, and at most the model's farthest depth if `capped`.
    kb_crop: the network sees KITTI's benchmark crop, and each batch comes with its own box.
    """

    kind: str
    pictures: object
    crop: object
    label: str
    gt_range_m: tuple = None
    capped: bool = False
    kb_crop: bool = False
    settings: dict = field(default_factory=dict)  # what metrics.json records beside the metrics
    intro: str = ""  # said before the scoring starts

    def __len__(self):
        return len(self.pictures)

    def batches(self, batch_size, workers):
        """(images (B, 3, H, W) uint8, depth_m (B, 1, H, W), crop box or None) batches of one size, in order."""
        if isinstance(self.pictures, EigenTestZip):
            for images, depth_m in eigen_batches(self.pictures, batch_size):
                yield images, depth_m, None
            return
        workers = min(workers, len(self.pictures) - 1)
        loaded = DataLoader(self.pictures, batch_size=None, num_workers=workers, worker_init_fn=ignore_stop_signals)
        batches = pair_batches(loaded, batch_size)
        if self.kb_crop:
            yield from kb_cropped(batches, self.crop)
            return
        for images, depth_m in batches:
            yield images, depth_m, None

    def first_pictures(self, count):
        """The first `count` pictures as (3, H, W) uint8 tensors (their ground truth unused)."""
        pictures = []
        for images, _, _ in self.batches(min(count, 8), workers=0):
            pictures += list(images[: count - len(pictures)])
            if len(pictures) >= count:
                break
        return pictures


def check_evaluation_flags(args):
    """evaluate.py's data flags against the kind of --data, before anything is read: the kind."""
    kind = data_kind(args.data)
    if kind == UNKNOWN_LIST:
        refuse_unknown_list(args.data, "--data")
    check_data_flags(args, kind, "--data", EVALUATE_FLAGS)
    if kind == LABELED_MAT and args.splits is None:
        raise UserError(f"--data {args.data} is a .mat: give --splits splits.mat, whose testNdxs are scored")
    return kind


def open_test_data(args):
    """The TestSet of --data: its files checked and opened before any model loads."""
    kind = data_kind(args.data)
    if kind == KITTI_LIST:
        return kitti_test_set(args)
    if kind in (LABELED_MAT, BTS_LIST):
        return nyu_source_test_set(args, kind)
    if kind == PAIRS:
        return pairs_test_set(args)
    return zip_test_set(args)


def zip_test_set(args):
    """The Eigen test zip, in the crop it holds (or --crop's, or --protocol's); its ground truth is
    called raw if it has holes (pixels without depth), else filled: nyu_test.zip's depth is filled,
    so BTS's protocol, which scores raw depth, is refused on it."""
    test_set = EigenTestZip(args.data)
    ground_truth = "raw" if test_set.depth_has_holes() else "filled"
    if args.protocol == "bts" and ground_truth == "filled":
        raise UserError(
            f"--protocol bts scores raw depth, which has holes; {args.data} holds filled depth (none in its first "
            "picture), as nyu_test.zip does. Score raw depth from nyu_depth_v2_labeled.mat (--splits) or BTS's "
            "list, or give --crop eigen_bts for BTS's crop on this filled depth"
        )
    protocol = NYU_PROTOCOLS[args.protocol or "densedepth"]
    crop_name = args.crop or (protocol.crop if args.protocol else None)  # the zip's own crop unless told
    label = f"{crop_name} crop" if crop_name else f"Eigen crop {list(test_set.crop)}"
    settings = {"crop": crop_name or list(test_set.crop), "ground_truth": ground_truth}
    if args.protocol:
        label += f", {ground_truth} ground truth" + range_label(protocol.gt_range_m)
        settings.update(protocol=args.protocol, gt_range_m=protocol.gt_range_m and list(protocol.gt_range_m))
    return TestSet(ZIP, test_set, crop_name or test_set.crop, label, protocol.gt_range_m, settings=settings)


def pairs_test_set(args):
    """A dataset of one's own, pictures of any size: --crop (default none), the ground truth capped at
    the model's farthest depth."""
    archive, pairs = open_rgbd_pairs(args.data, "--data")
    dataset = NYUDepthDataset(archive, pairs, augment=False, png_scale=args.depth_scale)
    crop_name = args.crop or "none"
    return TestSet(PAIRS, dataset, crop_name, f"{crop_name} crop, ground truth capped at the model's farthest depth",
                   capped=True, settings={"crop": crop_name})  # fmt: skip


def kitti_test_set(args):
    """A KITTI split list by KITTI's protocol: Garg's crop unless --crop says otherwise, ground truth
    1e-3 < d < 80 m; frames the list gives no ground truth (None) are counted and left out."""
    velodyne_depth = args.velodyne_depth or "velodyne"
    dataset = KittiDataset(args.data, args.kitti_raw, args.kitti_depth, velodyne_depth=velodyne_depth)
    crop_name = args.crop or "garg"
    where = f"{crop_name} crop" + (" of the full frame, predicted on the KB crop" if args.kb_crop else "")
    source = "annotated depth" if dataset.source == "annotated" else f"Velodyne ({dataset.velodyne_depth} depth)"
    settings = {"crop": crop_name, "gt_range_m": list(KITTI_GT_RANGE_M), "ground_truth": dataset.source,
                "frames_listed": dataset.num_listed, "frames_without_gt": dataset.num_without_gt,
                "frames": dataset.describe_counts()}  # fmt: skip
    if args.kb_crop:
        settings["kb_crop"] = True
    return TestSet(KITTI_LIST, dataset, crop_name, where + range_label(KITTI_GT_RANGE_M, ", ground truth"),
                   KITTI_GT_RANGE_M, kb_crop=args.kb_crop, settings=settings,
                   intro=f"{args.data}: {dataset.describe_counts()}, ground truth from the {source}")  # fmt: skip


def nyu_source_test_set(args, kind):
    """NYU's test pictures from the labeled .mat (its testNdxs) or BTS's extracted folder, by the protocol
    --protocol names (densedepth for the .mat, bts for BTS's list unless told); --crop and --gt override
    its parts."""
    if kind == LABELED_MAT:
        mat = LabeledMat(args.data, "--data")
        _, test_indices = read_splits(args.splits, mat.count)
        name = args.protocol or "densedepth"
        ground_truth = args.gt or NYU_PROTOCOLS[name].ground_truth
        dataset, source = LabeledDataset(mat, test_indices, ground_truth), {"ground_truth": ground_truth}
    else:
        pairs, focals = read_bts_nyu_list(args.data, args.data_root, "--data")  # raw depth, 16-bit millimetres
        dataset = NYUDepthDataset(DirectoryArchive(args.data_root), pairs, augment=False, png_scale=BTS_DEPTH_SCALE)
        name, source = args.protocol or "bts", {"ground_truth": "raw", "focal_px": sorted(set(focals))}
    protocol = NYU_PROTOCOLS[name]
    crop_name = args.crop or protocol.crop
    label = f"{crop_name} crop, {source['ground_truth']} ground truth" + range_label(protocol.gt_range_m)
    settings = {"protocol": name, "crop": crop_name,
                "gt_range_m": protocol.gt_range_m and list(protocol.gt_range_m), **source}  # fmt: skip
    return TestSet(kind, dataset, crop_name, label, protocol.gt_range_m, settings=settings)


def range_label(gt_range_m, prefix=""):
    """' 0.001 < d < 10 m' (after `prefix`) for a ground-truth range; '' for none."""
    return f"{prefix} {gt_range_m[0]:g} < d < {gt_range_m[1]:g} m" if gt_range_m else ""


# pragma: no mutate end


# ----------------------------------------------------------------------------- batches


def runs_of_one_size(items, batch_size, picture_of):
    """Consecutive items whose pictures (picture_of(item)) have one shape, in lists of up to batch_size."""
    run = []
    for item in items:
        if run and (picture_of(item).shape != picture_of(run[0]).shape or len(run) == batch_size):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def pair_batches(loaded, batch_size):
    """(images (B, 3, H, W) uint8, depth_m (B, 1, H, W)) batches of consecutive pairs of one size;
    a pair that does not load stops the evaluation with its reason."""

    def pairs():
        for sample in loaded:
            if isinstance(sample, FailedSample):
                raise UserError(f"--data: {sample.reason}")
            yield sample

    for run in runs_of_one_size(pairs(), batch_size, lambda pair: pair[0]):
        images, depths = zip(*run)
        yield torch.stack(images), torch.stack(depths)


def kb_crop_scoring_box(crop_name, height, width):
    """Where the named crop of a height x width frame lies inside its KITTI benchmark crop, as a box in
    the benchmark crop's own rows and columns: what is scored of a prediction made on that crop."""
    top, _, left, _ = kb_box = kb_crop_box(height, width)
    named = crop_box(crop_name, height, width)
    inside = (max(named[0], kb_box[0]), min(named[1], kb_box[1]), max(named[2], kb_box[2]), min(named[3], kb_box[3]))
    return (inside[0] - top, inside[1] - top, inside[2] - left, inside[3] - left)


def kb_cropped(batches, crop_name):
    """Batches cut to the KITTI benchmark crop, each with the box of the named crop of the full frame
    inside it (kb_crop_scoring_box): BTS's prediction pasted into the full frame and scored there,
    without counting the pixels outside the crop as left out."""
    for images, depth_m in batches:
        height, width = images.shape[-2:]
        try:
            box = kb_crop_box(height, width)
        except ValueError as err:
            raise UserError(f"--kb_crop: {err}") from err
        scored = kb_crop_scoring_box(crop_name, height, width)
        yield crop(images, box), crop(depth_m, box), scored
