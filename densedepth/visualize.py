"""Pictures, plots and point clouds of depth: the files people open to look at results.

Depth is drawn with a perceptually uniform colour map (plasma: near = dark,
far = bright) and errors with another (magma), so the two are not confused;
pixels without a valid depth are white. Pictures are (H, W, 3) uint8 arrays
at their exact pixel size; figures with text (colour bars, panels, plots) are
drawn by matplotlib without pyplot, so nothing global is touched. Point
clouds are in the OpenCV camera frame: x right, y down, z forward, metres.
"""

import io
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from data import FailedSample, encode_picture
from densedepth.protocol import network_size, predict_depth_m
from metrics import METRIC_NAMES
from utils import autocast, write_bytes

DEPTH_CMAP = "plasma"
ERROR_CMAP = "magma"
MAX_REL_ERROR = 0.5  # the error colour map saturates at 50% abs rel error
INVALID_RGB = (255, 255, 255)  # ground truth that is not finite and > 0
OUTSIDE_CROP_RGB = (160, 160, 160)  # where the metrics do not look
# NYU Depth v2's RGB camera (fx, fy, cx, cy in pixels, first pixel's centre at 0) at 640x480.


def valid_depth(depth_m):
    """Mask of the pixels with a usable depth: finite and > 0."""
    return np.isfinite(depth_m) & (depth_m > 0)


def colour_range(depth_m, vmin=None, vmax=None):
    """A colour map's range (vmin, vmax) for a depth map: the ends given, the others the min and
    max of its valid pixels."""
    if vmin is not None and vmax is not None:
        return vmin, vmax
    values = np.asarray(depth_m)[valid_depth(depth_m)]
    own_min, own_max = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return (own_min if vmin is None else vmin), (own_max if vmax is None else vmax)


def example_indices(num_items, count):
    """Indices of `count` items spread evenly over num_items, first and last included: the examples shown."""
    return sorted(set(np.linspace(0, num_items - 1, min(count, num_items)).round().astype(int).tolist()))


def colorize(values, vmin, vmax, cmap, mask=None, mask_rgb=INVALID_RGB):
    """(H, W) values -> (H, W, 3) uint8 through a matplotlib colour map over [vmin, vmax];
    pixels outside `mask` (if given) get mask_rgb."""
    scaled = (np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-6)
    rgb = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(scaled), 0, 1), bytes=True)[..., :3]
    if mask is not None:
        rgb[~mask] = mask_rgb
    return rgb


def colorize_depth(depth_m, vmin=None, vmax=None, cmap=DEPTH_CMAP):
    """(H, W) depth -> (H, W, 3) uint8 colour picture, near = dark; the range defaults to the
    map's own valid min..max; pixels without a valid depth are white."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    vmin, vmax = colour_range(depth_m, vmin, vmax)
    return colorize(depth_m, vmin, vmax, cmap, mask=valid_depth(depth_m))


def error_picture(pred_m, gt_m, crop_box, max_error=MAX_REL_ERROR):
    """abs rel error |pred - gt| / gt as (H, W, 3) uint8 (magma, 0 to max_error), inside the
    metrics' crop (top, bottom, left, right, inclusive) and where the ground truth is valid."""
    gt_m = np.asarray(gt_m, dtype=np.float32)
    valid = valid_depth(gt_m)
    error = np.abs(pred_m - gt_m) / np.where(valid, gt_m, 1)
    rgb = colorize(error, 0, max_error, ERROR_CMAP, mask=valid)
    top, bottom, left, right = crop_box
    inside = np.zeros(gt_m.shape, dtype=bool)
    inside[top : bottom + 1, left : right + 1] = True
    rgb[~inside] = OUTSIDE_CROP_RGB
    return rgb


def side_by_side(*pictures, gap_px=4):
    """Pictures of one height, (H, W_i, 3) uint8, left to right with white gaps."""
    height = pictures[0].shape[0]
    gap = np.full((height, gap_px, 3), 255, dtype=np.uint8)
    parts = [part for picture in pictures for part in (gap, picture)][1:]
    return np.concatenate(parts, axis=1)


def _font_size(height_px):
    return float(np.clip(height_px / 32, 6, 14))


def _render(figure):
    """A matplotlib figure as an (H, W, 3) uint8 array."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def colorbar(height_px, vmin, vmax, cmap=DEPTH_CMAP, label="depth (m)"):
    """A vertical colour bar with ticks and a label, (height_px, W, 3) uint8, to put beside a colour map."""
    dpi, font = 100, _font_size(height_px)
    width_px = round(7 * font * dpi / 72)
    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    axes = figure.add_axes((0.08, 0.04, 0.16, 0.92))
    bar = figure.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), cax=axes)
    bar.set_label(label, fontsize=font)
    bar.ax.tick_params(labelsize=font)
    return _render(figure)


def depth_picture(depth_m, vmin=None, vmax=None, cmap=DEPTH_CMAP, with_colorbar=False):
    """The colour map of a depth map at its own size, with a colour bar in metres on its right if asked."""
    vmin, vmax = colour_range(depth_m, vmin, vmax)
    picture = colorize_depth(depth_m, vmin, vmax, cmap)
    if with_colorbar:
        picture = side_by_side(picture, colorbar(picture.shape[0], vmin, vmax, cmap))
    return picture


def png_bytes(picture):
    """An (H, W, 3) uint8, (H, W) uint8 or (H, W) uint16 array as PNG file contents."""
    return encode_picture(np.ascontiguousarray(picture), "PNG")


def figure_png(figure):
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def example_tiles(image, gt_m, pred_m, crop_box):
    """The four pictures of an evaluation example: input, ground truth, prediction (both in the
    ground truth's range, so their colours compare) and the abs rel error map."""
    vmin, vmax = colour_range(gt_m)
    return {
        "input": image,
        "gt": colorize_depth(gt_m, vmin, vmax),
        "pred": colorize_depth(pred_m, vmin, vmax),
        "error": error_picture(pred_m, gt_m, crop_box),
    }


def example_panel(tiles, gt_range, title=""):
    """PNG bytes of input | ground truth | prediction | error, titled, with colour bars for depth and error."""
    height, width = tiles["input"].shape[:2]
    tile_in = 3.2
    figure = Figure(figsize=(4 * tile_in + 1.0, tile_in * height / width + 0.9), dpi=100, layout="constrained")
    axes = figure.subplots(1, 4)
    titles = {"input": "input", "gt": "ground truth", "pred": "prediction", "error": "abs rel error"}
    for ax, (key, name) in zip(axes, titles.items()):
        ax.imshow(tiles[key], interpolation="antialiased")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    depth_bar = figure.colorbar(ScalarMappable(Normalize(*gt_range), DEPTH_CMAP), ax=axes[1:3], shrink=0.8)
    depth_bar.set_label("depth (m)", fontsize=9)
    error_bar = figure.colorbar(ScalarMappable(Normalize(0, MAX_REL_ERROR), ERROR_CMAP), ax=axes[3], shrink=0.8)
    error_bar.set_label("|pred - gt| / gt", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure_png(figure)


def prediction_grid(samples, title):
    """(H, W, 3) uint8 picture of a grid, one row per (image, gt_m, pred_m) sample: input | ground truth |
    prediction, each row in its ground truth's depth range; for watching a training run epoch by epoch."""
    height, width = samples[0][0].shape[:2]
    tile_w, gap, top = 2.2, 0.06, 0.6  # inches
    tile_h = tile_w * height / width
    rows = len(samples)
    fig_w, fig_h = 3 * tile_w + 4 * gap, rows * tile_h + (rows + 1) * gap + top
    figure = Figure(figsize=(fig_w, fig_h), dpi=100)
    for row, (image, gt_m, pred_m) in enumerate(samples):
        vmin, vmax = colour_range(gt_m)
        pictures = (image, colorize_depth(gt_m, vmin, vmax), colorize_depth(pred_m, vmin, vmax))
        for col, (picture, name) in enumerate(zip(pictures, ("input", "ground truth", "prediction"))):
            left, bottom = gap + col * (tile_w + gap), fig_h - top - (row + 1) * tile_h - row * gap
            ax = figure.add_axes((left / fig_w, bottom / fig_h, tile_w / fig_w, tile_h / fig_h))
            ax.imshow(picture, interpolation="antialiased")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=10, y=1 - 0.08 / fig_h, va="top")
    return _render(figure)


def preview_samples(dataset, count=4):
    """A few fixed pairs of a validation split, evenly spaced, to draw a model's predictions on each epoch."""
    samples = (dataset[index] for index in example_indices(len(dataset), count))
    return [sample for sample in samples if not isinstance(sample, FailedSample)]


def preview_grid(model, samples, input_size, device, dtype, epoch):
    """The prediction_grid picture of the preview samples, predicted by the evaluation protocol
    (None without samples)."""
    if not samples:
        return None
    rows = []
    model.eval()
    with torch.inference_mode():
        for image, depth_m in samples:
            with autocast(device, dtype):
                size = network_size(image.shape[-2:], input_size)
                pred_m = predict_depth_m(model, image[None].to(device), size, depth_m.shape[-2:])
            rows.append((image.permute(1, 2, 0).numpy(), depth_m[0].numpy(), pred_m[0, 0].float().cpu().numpy()))
    return prediction_grid(rows, f"epoch {epoch}: test-split pictures, prediction in the ground truth's range")


def plot_curves(history):
    """PNG bytes of a run's curves by epoch: training loss, delta accuracies, relative errors, rms.

    `history` is a list of per-epoch dicts with 'epoch', 'train_loss' and the metric names.
    """
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    panels = [
        ("training loss", ["train_loss"]),
        ("test split: accuracy (higher is better)", ["delta1", "delta2", "delta3"]),
        ("test split: relative errors (lower is better)", ["abs_rel", "log10", "sq_rel"]),
        ("test split: rms errors in m / log m (lower is better)", ["rms", "rms_log"]),
    ]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True, min_n_ticks=1))
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    return figure_png(figure)


def backproject(depth_m, intrinsics):
    """(H*W, 3) float32 camera-frame points (x right, y down, z forward, metres) of a z-depth map,
    row by row: pixel (row v, column u) becomes ((u - cx) z / fx, (v - cy) z / fy, z)."""
    fx, fy, cx, cy = intrinsics
    height, width = depth_m.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    z = np.asarray(depth_m, dtype=np.float32)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1).reshape(-1, 3)


def ply_bytes(points, colors):
    """A binary little-endian PLY point cloud: float x, y, z and uchar red, green, blue per vertex."""
    vertex = np.dtype([(name, "<f4") for name in "xyz"] + [(name, "u1") for name in ("red", "green", "blue")])
    vertices = np.empty(len(points), dtype=vertex)
    for index, name in enumerate("xyz"):
        vertices[name] = points[:, index]
    for index, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors[:, index]
    properties = "".join(f"property float {name}\n" for name in "xyz")
    properties += "".join(f"property uchar {name}\n" for name in ("red", "green", "blue"))
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n{properties}end_header\n"
    return header.encode("ascii") + vertices.tobytes()


CSV_COLUMNS = ("epoch", "train_loss", "seconds", *METRIC_NAMES)


def history_csv(history):
    """Per-epoch rows (dicts with CSV_COLUMNS) as CSV text with a header line."""
    lines = [",".join(CSV_COLUMNS)]
    lines += [",".join(f"{row[key]:.6g}" for key in CSV_COLUMNS) for row in history]
    return "\n".join(lines) + "\n"


class TrainingLog:
    """What a training run writes beside its checkpoints, rewritten whole each epoch from the run's
    history (so a resumed run's files go on where it left off): log.csv, curves.png, and
    predictions/epoch_NNN.png; plus TensorBoard events in tensorboard/ when the package is installed."""

    def __init__(self, directory, first_sample):
        self.directory = Path(directory)
        self.tensorboard = _tensorboard_writer(self.directory / "tensorboard", first_sample)

    def add_loss(self, samples_seen, loss):
        """The training loss over a log interval, at the number of training samples seen so far."""
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, samples_seen)

    def end_epoch(self, history, grid, samples_seen):
        """Write the files for the epoch that ends `history`; grid is its prediction_grid picture, or None."""
        row = history[-1]
        write_bytes(self.directory / "log.csv", history_csv(history).encode())
        write_bytes(self.directory / "curves.png", plot_curves(history))
        if grid is not None:
            write_bytes(self.directory / "predictions" / f"epoch_{row['epoch']:03d}.png", png_bytes(grid))
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/epoch_loss", row["train_loss"], samples_seen)
            for name in METRIC_NAMES:
                self.tensorboard.add_scalar(f"test/{name}", row[name], samples_seen)
            if grid is not None:
                self.tensorboard.add_image("predictions", grid, samples_seen, dataformats="HWC")
            self.tensorboard.flush()

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(log_dir, first_sample):
    """A SummaryWriter that drops events past first_sample (left by the run a resumed one continues);
    None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=first_sample or None)
