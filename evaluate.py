"""Evaluate a trained DenseDepth model on the Eigen test split, or predict the depth of pictures.

Evaluation on the Eigen test zip (nyu_test.zip) by the DenseDepth protocol, with a
few examples saved as pictures (input | ground truth | prediction | error):
    python evaluate.py --model checkpoints/last.pth --data nyu_test.zip --output_dir results
Depth of pictures (files, directories, globs), as colour maps, 16-bit PNGs in
millimetres and .npy in metres, and on request side by side and as point clouds:
    python evaluate.py --model checkpoints/last.pth --img photo.jpg photos/ --output_dir results \\
        --colorbar --side_by_side --ply

The authors' published Keras models work as they are (see convert_weights.py):
    python evaluate.py --model nyu.h5 --data nyu_test.zip --aggregation pooled
KITTI's Eigen split from KITTI's own files (docs/kitti.md): a BTS or monodepth2 list, the raw drives, and
ground truth from the depth benchmark's annotated PNGs or, without --kitti_depth, projected from the Velodyne:
    python evaluate.py --model kitti.h5 --data eigen_test_files_with_gt.txt --kitti_raw kitti_raw \
        --kitti_depth data_depth_annotated

The protocol: each picture is resized to the network's input size (the one it
was trained at, stored in the checkpoint; at another aspect ratio, that ratio at
about the trained area, as for --img), predicted together with its mirror
image, both converted to metres (clipped to the model's depth range, [0.1, 10] m
for NYU), upsampled to the ground truth's size and averaged; the metrics are taken
inside the Eigen crop over ground-truth pixels that are finite and > 0 (KITTI: inside
Garg's crop, over ground truth with 1e-3 < d < 80 m).
"""

import argparse
import contextlib
import glob
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data import DEPTH_SCALE_HELP, RGB_SUFFIXES
from densedepth.deploy import CALIBRATION_HELP, Work, prediction_model
from densedepth.inference import (
    OUTPUT_KINDS,
    PictureOptions,
    depth_of_pictures,
    load_model,
    network_size,
    picture_outputs,
)
from densedepth.kitti import add_kitti_arguments
from densedepth.nyu_sources import GROUND_TRUTHS
from densedepth.protocol import CROPS, NYU_PROTOCOLS, crop, evaluate_protocol, predict_depth_m, resolve_crop
from densedepth.sources import (
    EVALUATE_FLAGS,
    ZIP,
    check_data_flags,
    check_evaluation_flags,
    data_kind,
    open_test_data,
    runs_of_one_size,
)
from densedepth.video import (
    VIDEO_SUFFIXES,
    VideoOptions,
    depth_of_video,
    first_frames,
    is_video,
    require_av,
    video_frame_count,
)
from densedepth.visualize import (
    DEPTH_CMAP,
    colour_range,
    example_indices,
    example_panel,
    example_tiles,
    png_bytes,
)
from metrics import AGGREGATIONS, DepthMetrics, format_table
from utils import (
    DEVICE_HELP,
    PREDICTION_PRECISIONS,
    UserError,
    autocast,
    choose_device,
    choose_precision,
    default_workers,
    ignore_stop_signals,
    precision_name,
    run_main,
    writable_dir,
    write_bytes,
)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Evaluation of depth estimation model on either test data/own images")
    parser.add_argument(
        "--model",
        required=True,
        help="Model checkpoint path: this project's .pth, the DenseDepth authors' nyu.h5 / kitti.h5 (read as "
        "KITTI's, 1 to 80 m, when the name holds 'kitti'; else NYU's, 0.1 to 10 m), or a .onnx from export.py "
        "(run by onnxruntime)",
    )
    parser.add_argument(
        "--data",
        help="Test data zip path (if evaluation on test data): nyu_test.zip; a KITTI split list (BTS's "
        "eigen_test_files_with_gt.txt or monodepth2's test_files.txt, with --kitti_raw); or a dataset of one's own "
        "(a CSV of rgb_path,depth_path lines, or a folder with rgb/ and depth/)",
    )
    parser.add_argument(
        "--img",
        nargs="+",
        help="Image path (if evaluation on own images): one or more pictures or videos (mp4, mov, mkv, avi, webm: "
        "NAME_depth.mp4 at the video's size and frame rate; needs requirements-video.txt), directories (searched "
        "recursively) or quoted globs ('photos/*.jpg')",
    )
    parser.add_argument("--batch_size", type=int, default=4, help="Batch size to process the test data (or pictures)")
    parser.add_argument("--output_dir", default="results", help="Directory to save output depth images")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        default="per_image",
        help="how the printed table averages: per image then over images (default, as the paper's "
        "figures), or all pixels pooled (as DenseDepth's code); both are saved in the JSON",
    )
    parser.add_argument(
        "--no_flip",
        dest="flip",
        action="store_false",
        help="skip the mirror-image averaging of the protocol (twice as fast, slightly worse)",
    )
    parser.add_argument(
        "--precision",
        choices=PREDICTION_PRECISIONS,
        default="auto",
        help="autocast precision, or int8: the model quantised on the CPU (needs requirements-deploy.txt); "
        "'auto': bf16 on GPUs that have it and on CPUs where it measures faster, fp16 on older GPUs, else fp32 "
        "(on a CPU, for 32 pictures or frames or more, in onnxruntime where that measures faster: "
        "requirements-deploy.txt), and int8 on CPUs with AMX where it measures faster still; it says which and why. "
        "Metrics are computed in fp32 either way",
    )
    parser.add_argument("--calibration", help=CALIBRATION_HELP)
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (worth it on CUDA for large test sets)"
    )
    test_data = parser.add_argument_group("with --data")
    test_data.add_argument(
        "--num_examples",
        type=int,
        default=4,
        help="test pictures (evenly spaced) saved as input | ground truth | prediction | error, in "
        "output_dir/examples (default 4; 0 for none)",
    )
    test_data.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    test_data.add_argument(
        "--crop",
        choices=CROPS,
        help="where the metrics are taken: eigen (NYU's: DenseDepth's, rows 20..459, columns 24..615), eigen_bts "
        "(NYU's as BTS, AdaBins, ZoeDepth: rows 45..470, columns 41..600), garg or eigen_kitti (KITTI's, as "
        "fractions of the size), none; default: the protocol's (the crop nyu_test.zip holds; garg for KITTI), "
        "none for a dataset of one's own",
    )
    test_data.add_argument(
        "--protocol",
        choices=tuple(NYU_PROTOCOLS),
        help="NYU's evaluation protocol: densedepth (filled depth, Eigen crop rows 20..459, columns 24..615: the "
        "DenseDepth paper; the default, but for BTS's lists) or bts (raw depth with 1e-3 < d < 10 m, crop rows "
        "45..470, columns 41..600: BTS, AdaBins, NeWCRFs, ZoeDepth); sets --crop and --gt unless they are given",
    )
    test_data.add_argument(
        "--gt",
        choices=GROUND_TRUTHS,
        help="which depth of the labeled .mat is the ground truth: filled (depths, the colorization-filled depth "
        "DenseDepth scores on) or raw (rawDepths, 0 where missing: BTS, AdaBins, ZoeDepth); default: the protocol's",
    )
    test_data.add_argument(
        "--splits", help="NYU's splits.mat (MATLAB v5), for --data nyu_depth_v2_labeled.mat: its testNdxs are scored"
    )
    test_data.add_argument(
        "--data_root",
        help="for --data one of BTS's NYU lists: the folder its paths are relative to (official_splits/test/)",
    )
    test_data.add_argument("--depth_scale", type=float, help=DEPTH_SCALE_HELP)
    kitti = parser.add_argument_group("with --data a KITTI split list (docs/kitti.md)")
    add_kitti_arguments(kitti)
    kitti.add_argument(
        "--kb_crop",
        action="store_true",
        help="predict on the benchmark's 352x1216 crop (top = H - 352, left = (W - 1216) // 2) and score it in the "
        "full frame's crop, as BTS and AdaBins do",
    )
    pictures = parser.add_argument_group("with --img")
    pictures.add_argument("--colorbar", action="store_true", help="draw a colour bar in metres beside the depth")
    pictures.add_argument(
        "--depth_range",
        type=float,
        nargs=2,
        metavar=("MIN_M", "MAX_M"),
        help="fixed colour range in metres, the same for every picture (default: each picture's own range; for a "
        "video, the model's depth range, one scale for every frame)",
    )
    pictures.add_argument("--cmap", default=DEPTH_CMAP, help="matplotlib colour map for depth (default plasma)")
    pictures.add_argument(
        "--side_by_side", action="store_true", help="also write the picture and its depth side by side"
    )
    pictures.add_argument("--ply", action="store_true", help="also write a point cloud (.ply) coloured by the picture")
    pictures.add_argument(
        "--frames",
        action="store_true",
        help="for a video: also write each frame's depth as a 16-bit PNG and .npy in metres, into NAME_frames/",
    )
    pictures.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        metavar=("FX", "FY", "CX", "CY"),
        help="pinhole camera of the pictures for --ply, in their pixels (default: NYU Depth v2's camera, "
        "fx 518.86 fy 519.47 cx 325.58 cy 253.74 at 640x480, scaled to each picture's size)",
    )
    return parser


def check_args(args):
    if (args.data is None) == (args.img is None):
        raise UserError("give exactly one of --data (a test zip) and --img (pictures)")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.num_examples < 0:
        raise UserError(f"--num_examples must be 0 or more, got {args.num_examples}")
    if args.depth_range is not None and not 0 <= args.depth_range[0] < args.depth_range[1]:
        raise UserError(f"--depth_range must be two depths in metres, MIN < MAX, got {args.depth_range}")
    if args.cmap not in matplotlib.colormaps:
        raise UserError(f"--cmap {args.cmap} is not a matplotlib colour map (try plasma, viridis, magma, turbo)")
    if args.depth_scale is not None and not args.depth_scale > 0:
        raise UserError(f"--depth_scale must be positive (units per metre), got {args.depth_scale}")
    if args.data is not None:
        check_evaluation_flags(args)
    else:
        check_data_flags(args, None, "--data", EVALUATE_FLAGS)
    if args.intrinsics is not None and not (args.intrinsics[0] > 0 and args.intrinsics[1] > 0):
        raise UserError(f"--intrinsics FX and FY must be positive, got {args.intrinsics[:2]}")


def score(model, test_set, input_size, args, device, dtype):
    """Score the model on a TestSet by the protocol, streamed with a progress bar in pictures; print and
    save the metrics and the examples."""
    if test_set.intro:
        print(test_set.intro)
    cap_m = model.depth_range.max_m if test_set.capped else None
    metrics = DepthMetrics(max_depth_m=cap_m, gt_range_m=test_set.gt_range_m)
    examples = ExamplePicker(len(test_set), args.num_examples)
    batches = test_set.batches(args.batch_size, default_workers(device))
    # closed on every path, so that its DataLoader workers end with it, not at the interpreter's exit
    with contextlib.closing(batches), tqdm(total=len(test_set), unit="picture", desc="evaluating", leave=False) as bar:
        evaluate_protocol(model, counted(examples.pick(batches), bar), input_size, test_set.crop, device, dtype,
                          args.flip, metrics, bar={"disable": True})  # fmt: skip
    label, settings = test_set.label, dict(test_set.settings)
    settings["engine"] = "onnxruntime" if getattr(model, "runs_in_onnxruntime", False) else "pytorch"
    if cap_m is not None:
        label, settings["max_depth_m"] = label.replace("the model's farthest depth", f"{cap_m:g} m"), cap_m
    report_metrics(metrics, label, args, input_size, device, dtype, **settings)
    if examples.picked:
        folder = save_examples(model, examples.picked, input_size, test_set.crop, device, dtype, args, cap_m,
                               test_set.gt_range_m)  # fmt: skip
        print(f"{len(examples.picked)} examples (input | ground truth | prediction | error) saved to {folder}")


def counted(batches, bar):
    """The batches, each counted on the progress bar in pictures once it has been used."""
    for batch in batches:
        yield batch
        bar.update(len(batch[0]))


def report_metrics(metrics, crop_label, args, input_size, device, dtype, **settings):
    """Print the table (and what was left out) and save metrics.json."""
    summary = metrics.summary()
    print(
        f"{summary['num_images']} images, {crop_label}, "
        f"{'with' if args.flip else 'without'} flip averaging, {args.aggregation.replace('_', '-')} aggregation, "
        f"{precision_name(dtype)}{' in onnxruntime' if settings.get('engine') == 'onnxruntime' else ''} on {device}:"
    )
    print(format_table(summary[args.aggregation]))
    if args.markdown:
        print(format_table(summary[args.aggregation], markdown=True))
    if summary["num_invalid_pixels"]:
        left_out = summary["num_invalid_pixels"]
        bounded = settings.get("gt_range_m") or settings.get("max_depth_m")
        why = "had no measurement in range" if bounded else "were not finite and > 0"
        print(f"{left_out} ground-truth pixels inside the crop {why} and were left out")
    report = {
        "model": str(args.model),
        "data": str(args.data),
        **settings,
        "flip": args.flip,
        "precision": precision_name(dtype),
        "input_size": list(input_size),
        **summary,
    }
    path = Path(args.output_dir) / "metrics.json"
    write_bytes(path, json.dumps(report, indent=2).encode())
    print(f"metrics saved to {path}")


class ExamplePicker:
    """Keeps `count` evenly spaced test pictures out of a stream of batches as they go by."""

    def __init__(self, num_images, count):
        self.wanted = set(example_indices(num_images, count))
        self.picked = []  # (index, image (3, H, W) uint8, depth_m (1, H, W), its crop box or None)

    def pick(self, batches):
        start = 0
        for images, depth_m, box in batches:
            for index in sorted(self.wanted.intersection(range(start, start + len(images)))):
                self.picked.append((index, images[index - start].clone(), depth_m[index - start].clone(), box))
            start += len(images)
            yield images, depth_m, box


def save_examples(model, picked, input_size, crop_spec, device, dtype, args, max_depth_m=None, gt_range_m=None):
    """Predict the picked test pictures by the protocol and write, per picture, its four tiles
    (NNNN_input/_gt/_pred/_error.png) and a titled panel of them (NNNN.png)."""
    folder = Path(args.output_dir) / "examples"
    for index, image, gt_m, box in picked:
        size = network_size(image.shape[-2:], input_size)
        with torch.inference_mode(), autocast(device, dtype):
            pred_m = predict_depth_m(model, image[None].to(device), size, gt_m.shape[-2:], args.flip)
        pred_m = pred_m.float().cpu()
        crop_box = box or resolve_crop(crop_spec, *gt_m.shape[-2:])
        metrics = DepthMetrics(max_depth_m, gt_range_m)
        metrics.update(crop(pred_m, crop_box), crop(gt_m[None], crop_box))
        scores = metrics.compute()
        gt_m, pred_m = gt_m[0].numpy(), pred_m[0, 0].numpy()
        tiles = example_tiles(image.permute(1, 2, 0).numpy(), gt_m, pred_m, crop_box)
        for key, tile in tiles.items():
            write_bytes(folder / f"{index:04d}_{key}.png", png_bytes(tile))
        title = f"test picture {index}: delta1 {scores['delta1']:.3f}, rel {scores['abs_rel']:.3f}"
        write_bytes(folder / f"{index:04d}.png", example_panel(tiles, colour_range(gt_m), title))
    return folder


def load_picture(path):
    """A picture as a (1, 3, H, W) uint8 tensor, upright (EXIF orientation applied).

    Any mode becomes RGB: grayscale is repeated, alpha dropped, palette and CMYK
    converted, and 16-bit or float grayscale scaled to 8 bits (PIL would clip it).
    """
    try:
        with Image.open(path) as picture:
            rgb = rgb_array(ImageOps.exif_transpose(picture))
    except FileNotFoundError as err:
        raise UserError(f"--img {path} does not exist") from err
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(f"--img {path} is not a picture that can be read ({err})") from err
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def rgb_array(picture):
    """A PIL picture of any mode as an (H, W, 3) uint8 array."""
    if picture.mode.startswith("I") or picture.mode == "F":
        values = np.asarray(picture, dtype=np.float32)
        full_scale = 65535.0 if picture.mode.startswith("I") else max(1.0, float(values.max()))
        gray = np.clip(np.rint(values / full_scale * 255), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.array(picture.convert("RGB"))


# What --img reads from a directory or a glob (a file named explicitly is tried whatever its suffix).
PICTURE_SUFFIXES = (*RGB_SUFFIXES, ".pgm")


def find_pictures(specs, output_dir):
    """The pictures named by --img, each with its output name (a relative path without suffix):
    a file's own stem, or its path inside a directory given, so a folder of inputs gives a folder
    of outputs. Files inside output_dir are not read back as inputs."""
    found = {}
    for spec in specs:
        for path, name in _expand(spec, Path(output_dir).resolve()):
            found.setdefault(path.resolve(), (path, name))
    pictures = list(found.values())
    first_with = {}
    for path, name in pictures:
        if name in first_with:
            raise UserError(
                f"--img {first_with[name]} and {path} would both be written as {name}_depth.png; "
                "give them in separate runs with different --output_dir"
            )
        first_with[name] = path
    return pictures


def _expand(spec, output_dir):
    path = Path(spec)
    if path.is_dir():
        files = [
            file
            for file in sorted(path.rglob("*"))
            if _is_picture_file(file, output_dir) and not _hidden(file.relative_to(path))
        ]
        if not files:
            raise UserError(f"--img {spec} is a directory with no pictures in it ({' '.join(PICTURE_SUFFIXES)})")
        return [(file, file.relative_to(path).with_suffix("")) for file in files]
    if path.exists() or not any(char in spec for char in "*?["):
        if not path.exists():
            raise UserError(f"--img {spec} does not exist")
        return [(path, Path(path.stem))]
    files = [Path(match) for match in sorted(glob.glob(spec, recursive=True))]
    files = [file for file in files if _is_picture_file(file, output_dir)]
    if not files:
        raise UserError(f"--img {spec} matches no picture file")
    return [(file, Path(file.stem)) for file in files]


def _is_picture_file(path, output_dir):
    inside_output = output_dir in path.resolve().parents
    return (
        path.is_file()
        and path.suffix.lower() in PICTURE_SUFFIXES + VIDEO_SUFFIXES
        and not path.name.startswith(".")
        and not inside_output
    )


def _hidden(relative_path):
    return any(part.startswith(".") for part in relative_path.parts)


class PictureFiles(Dataset):
    """Pictures decoded in DataLoader workers: (index, (1, 3, H, W) uint8) or (index, why it failed)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return index, load_picture(self.paths[index])
        except UserError as err:
            return index, str(err)


def same_size_batches(loaded, batch_size, on_failure):
    """Group consecutive pictures of one size into batches of up to batch_size: (indices, (B, 3, H, W)).
    Pictures that failed to load go to on_failure(why)."""

    def pictures():
        for index, image in loaded:
            if isinstance(image, str):
                on_failure(image)
            else:
                yield index, image

    for run in runs_of_one_size(pictures(), batch_size, lambda item: item[1]):
        yield [index for index, _ in run], torch.cat([image for _, image in run])


def predict_pictures(model, pictures, input_size, args, device, dtype):
    """Depth of each (path, output name) picture, batched by size, written to output_dir."""
    workers = min(default_workers(device), len(pictures) - 1)
    loaded = DataLoader(
        PictureFiles([path for path, _ in pictures]), batch_size=None, num_workers=workers,
        worker_init_fn=ignore_stop_signals,
    )  # fmt: skip
    failures, written = [], []
    options = PictureOptions.from_args(args)
    bar = tqdm(total=len(pictures), unit="picture", desc="predicting", disable=len(pictures) == 1)

    def skip(why):
        failures.append(why)
        if len(pictures) > 1:  # one picture: its error is the message
            tqdm.write(f"skipped: {why}", file=sys.stderr)

    for indices, images in same_size_batches(loaded, args.batch_size, skip):
        depth_m = depth_of_pictures(model, images, input_size, device, dtype, args.flip)
        for index, image, depth in zip(indices, images, depth_m):
            stem = Path(args.output_dir) / pictures[index][1]
            files = picture_outputs(image.permute(1, 2, 0).numpy(), depth, options, model.depth_range.max_m)
            for suffix, contents in files.items():
                write_bytes(stem.with_name(stem.name + suffix), contents)
            written.append((stem, list(files), depth))
        bar.update(len(written) + len(failures) - bar.n)
    bar.close()
    report_pictures(written, failures, len(pictures), args)


def predict_video(model, path, name, input_size, args, device, dtype):
    """The depth video of one video file (and its frames' depth files with --frames), in one colour
    scale: --depth_range, else the model's range."""
    stem = Path(args.output_dir) / name
    depth_range_m = tuple(args.depth_range or (model.depth_range.min_m, model.depth_range.max_m))
    options = VideoOptions(args.flip, args.batch_size, depth_range_m, args.cmap, args.side_by_side,
                           args.frames, model.depth_range.max_m)  # fmt: skip
    frames_dir = stem.with_name(stem.name + "_frames") if args.frames else None
    report = depth_of_video(model, path, stem.with_name(stem.name + "_depth.mp4"), input_size, device, dtype,
                            options, frames_dir)  # fmt: skip
    busy = report.network_seconds / max(report.seconds, 1e-9)
    print(f"{path}: {report.frames} frames in {report.seconds:.1f} s ({report.frames / report.seconds:.2f} frames/s, "
          f"network busy {busy:.0%}); wrote {report.path} (colour {depth_range_m[0]:g} to {depth_range_m[1]:g} m)"
          + (f" and each frame's depth in {frames_dir}" if frames_dir else ""))  # fmt: skip


def report_pictures(written, failures, num_pictures, args):
    """Say what was written where; pictures that could not be read end the run with an error."""
    if len(written) == 1 and num_pictures == 1:
        stem, suffixes, depth_m = written[0]
        files = ", ".join(f"{stem}{suffix} ({OUTPUT_KINDS[suffix]})" for suffix in suffixes)
        print(f"depth {depth_m.min():.2f}..{depth_m.max():.2f} m; wrote {files}")
    elif written:
        files = ", ".join(f"NAME{suffix} ({OUTPUT_KINDS[suffix]})" for suffix in written[0][1])
        count = f"{len(written)} picture" + ("s" if len(written) > 1 else "")
        print(f"wrote the depth of {count} to {args.output_dir}, each as {files}")
    if len(failures) == num_pictures == 1:
        raise UserError(failures[0])
    if failures:
        raise UserError(
            f"{len(failures)} of the {num_pictures} pictures could not be read (named above); "
            f"the depth of the other {len(written)} was written"
        )


def picture_work(stills, videos):
    """The Work of --img for the INT8 decision: its pictures and the frames of its videos."""
    frames = sum(video_frame_count(path) for path, _ in videos)

    def first_pictures(count):
        pictures = []
        for path, _ in stills[:count]:
            with contextlib.suppress(UserError):  # an unreadable picture is reported when its turn comes
                pictures.append(load_picture(path)[0])
        for path, _ in videos:
            pictures += first_frames(path, count - len(pictures))
        return pictures[:count]

    return Work(len(stills) + frames, first_pictures)


def main(args):
    check_args(args)
    pictures = find_pictures(args.img, args.output_dir) if args.img else []  # before the model loads
    videos = [(path, name) for path, name in pictures if is_video(path)]
    stills = [(path, name) for path, name in pictures if not is_video(path)]
    if videos:
        require_av()
    if args.data is not None and data_kind(args.data) == ZIP and not Path(args.model).exists():
        raise UserError(f"checkpoint {args.model} does not exist")  # a test zip is checked after the model, as ever
    test_set = open_test_data(args) if args.data is not None else None  # its files checked before the model loads
    writable_dir(args.output_dir, "--output_dir")
    device = choose_device(args.device)
    dtype = choose_precision(args.precision, device)
    model, input_size = load_model(args.model, device)
    work = Work(len(test_set), test_set.first_pictures) if test_set is not None else picture_work(stills, videos)
    model, dtype = prediction_model(model, dtype, input_size, args.precision, device, work, args.calibration)
    if args.compile and isinstance(model, torch.nn.Module):
        model = torch.compile(model)
    elif args.compile:  # onnxruntime optimises its own graph; the INT8 model is compiled already
        engine = "in onnxruntime" if getattr(model, "runs_in_onnxruntime", False) else "in INT8, compiled already"
        print(f"--compile not used: the model runs {engine} (--precision fp32 or bf16 for PyTorch's)")
    if test_set is not None:
        score(model, test_set, input_size, args, device, dtype)
        return
    if stills:
        predict_pictures(model, stills, input_size, args, device, dtype)
    for path, name in videos:
        predict_video(model, path, name, input_size, args, device, dtype)


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
