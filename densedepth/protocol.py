"""The DenseDepth evaluation protocol, used alike by training's validation, evaluate.py and the benchmark.

Each picture is resized to the network's size for it (network_size: the trained size for a
picture of the trained aspect ratio, else the picture's aspect ratio at about the trained area,
the same rule as the depth of any picture) and predicted together with its mirror image in the same batch; both predictions are
converted to metres (clipped to the model's depth range), upsampled bilinearly to the
ground truth's size and averaged. The metrics (metrics.py) are taken inside a crop (NYU's
Eigen crop by default, or KITTI's) over ground-truth pixels that are finite and > 0.
"""

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from data import EIGEN_CROP_NYU, NYU_SIZE, resize, to_unit_range
from densedepth.depth import target_to_depth_m
from metrics import DepthMetrics
from model import SIZE_MULTIPLE
from utils import autocast


def network_size(picture_size, trained_size):
    """The network's input size for a picture of picture_size (H, W): the trained size itself for a
    picture of the trained aspect ratio; else the picture's aspect ratio at about the trained area,
    sides multiples of 32. evaluate.py --img, --data and the demo all predict at this size, so the
    depth written for a picture is the depth scored for it."""
    if picture_size[0] * trained_size[1] == picture_size[1] * trained_size[0]:
        return tuple(trained_size)
    scale = math.sqrt(trained_size[0] * trained_size[1] / (picture_size[0] * picture_size[1]))
    return tuple(max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in picture_size)


def predict_depth_m(model, images, input_size, out_size, flip=True, channels_last=True, depth_range=None):
    """Metric depth (N, 1, *out_size) for images (N, 3, H, W), uint8 or in [0, 1]: the DenseDepth protocol.

    The images are resized to the network's input size; with flip=True the
    mirrored copies go through the network in the same batch and their
    predictions, mirrored back, are averaged with the originals. Each
    prediction is converted to metres (clipped to the model's depth range,
    [0.1, 10] m for NYU) and upsampled bilinearly to out_size before
    averaging, as in DenseDepth's evaluation. depth_range: the model's own
    (model.depth_range) unless given, as it must be for a wrapper that hides it.
    A model with returns_depth_m (an exported one) gives metres at its input's
    size itself; they are resized to out_size.
    Run it inside the caller's autocast context; the depth comes out in float32.
    """
    if not takes_as_they_are(model, images, input_size):
        images = resize(to_unit_range(images), input_size)
    batch = torch.cat([images, images.flip(-1)]) if flip else images
    if channels_last and not getattr(model, "runs_in_onnxruntime", False):
        batch = batch.contiguous(memory_format=torch.channels_last)
    if getattr(model, "returns_depth_m", False):  # densedepth/deploy.py's exports: metres at the input's size
        depth_m = resize(model(batch).float(), out_size)
    else:
        depth_m = resize(target_to_depth_m(model(batch).float(), depth_range or model.depth_range), out_size)
    if flip:
        depth_m, mirrored = depth_m.chunk(2)
        depth_m = (depth_m + mirrored.flip(-1)) / 2
    return depth_m


def takes_as_they_are(model, images, input_size):
    """Whether a model run by onnxruntime that takes uint8 pictures can be given `images` without a
    pass through float: they are uint8 and already at the network's size (video frames, mostly)."""
    at_size = tuple(images.shape[-2:]) == tuple(input_size)
    return getattr(model, "uint8_input", False) and images.dtype == torch.uint8 and at_size


# Crops of the evaluation protocols, as [top, bottom, left, right] rows and columns, both ends inclusive.
CROPS = ("eigen", "garg", "eigen_kitti", "none", "eigen_bts")
# NYU's, at 480x640: DenseDepth's Eigen crop (nyu_test.zip's), and the one of BTS, AdaBins and ZoeDepth
# (their eval_with_pngs.py slices [45:471, 41:601]).
NYU_CROPS = {"eigen": EIGEN_CROP_NYU, "eigen_bts": (45, 470, 41, 600)}


@dataclass(frozen=True)
class NyuProtocol:
    """An NYU evaluation protocol: its crop, which ground truth of the labeled .mat it scores
    (filled or raw), and the ground-truth depths it counts (low < d < high), if bounded."""

    crop: str
    ground_truth: str
    gt_range_m: tuple = None


# DenseDepth's: filled depth in the Eigen crop. BTS's (AdaBins, ZoeDepth, NeWCRFs): raw depth, 1e-3 < d < 10 m,
# in their crop.
NYU_PROTOCOLS = {"densedepth": NyuProtocol("eigen", "filled"), "bts": NyuProtocol("eigen_bts", "raw", (1e-3, 10.0))}
# The KITTI benchmark's crop of BTS and AdaBins (--kb_crop): the bottom 352 rows, the middle 1216 columns.
KB_CROP_SIZE = (352, 1216)
# KITTI's, as fractions of the picture's height and width (Garg et al. 2016; Eigen et al. 2014).
_KITTI_CROP_FRACTIONS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen_kitti": (0.3324324, 0.91351351, 0.03594771, 0.96405229),
}


def crop_box(name, height, width):
    """The named crop for a height x width picture: 'eigen' or 'eigen_bts' (NYU's, scaled from 480x640), 'garg' or
    'eigen_kitti' (KITTI's, fractions of the size, end-exclusive as published), 'none' (all)."""
    if name in NYU_CROPS:
        return scaled_nyu_crop(NYU_CROPS[name], height, width)
    if name == "none":
        return (0, height - 1, 0, width - 1)
    top, bottom, left, right = _KITTI_CROP_FRACTIONS[name]
    return (int(top * height), int(bottom * height) - 1, int(left * width), int(right * width) - 1)


def scaled_eigen_crop(height, width):
    """The Eigen crop for a height x width image, scaled from its 480x640 definition."""
    return scaled_nyu_crop(EIGEN_CROP_NYU, height, width)


def scaled_nyu_crop(box, height, width):
    """A crop box defined on NYU's 480x640 pictures, scaled to a height x width one."""
    top, bottom, left, right = box
    scale_y, scale_x = height / NYU_SIZE[0], width / NYU_SIZE[1]
    return (
        round(top * scale_y),
        round((bottom + 1) * scale_y) - 1,
        round(left * scale_x),
        round((right + 1) * scale_x) - 1,
    )


def kb_crop_box(height, width):
    """The KITTI benchmark crop of a height x width frame, as a box: top = H - 352, left = (W - 1216) // 2."""
    top, left = height - KB_CROP_SIZE[0], (width - KB_CROP_SIZE[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"a {width}x{height} frame is smaller than the benchmark crop's 1216x352")
    return (top, height - 1, left, left + KB_CROP_SIZE[1] - 1)


def crop(tensor, crop_box):
    """Keep rows top..bottom and columns left..right (both ends inclusive) of (..., H, W)."""
    top, bottom, left, right = crop_box
    return tensor[..., top : bottom + 1, left : right + 1]


def evaluate_protocol(
    model, batches, input_size, crop_box, device, dtype=torch.float32, flip=True, metrics=None, bar=None,
    depth_range=None,
):  # fmt: skip
    """Run the evaluation protocol over (images (B, 3, H, W) uint8 or in [0, 1], depth_m (B, 1, H, W))
    batches, streaming the cropped predictions and ground truth into `metrics` (a DepthMetrics, with
    its bounds on the ground truth; a bare one if None), which it returns. A batch may come with a
    third item, the crop box of its own pictures (KITTI's benchmark crop), in place of crop_box.

    The network runs under autocast to `dtype` at network_size(picture, input_size), clipped to the
    model's depth range; the metrics are computed in fp32, so memory does not grow with the number
    of images. crop_box: a box, a crop's name (CROPS) or None for the Eigen crop, each for the
    ground truth's size (resolve_crop). bar: tqdm's settings for the progress bar in batches
    (total, desc, disable), or None for one called "evaluating". depth_range: the model's, given
    when `model` is a wrapper that hides it.
    """
    metrics = DepthMetrics() if metrics is None else metrics
    bar = {"desc": "evaluating", "unit": "batch", "leave": False, **(bar or {})}  # pragma: no mutate (the bar's look)
    model.eval()
    with torch.inference_mode():
        for images, depth_m, *own_box in tqdm(batches, **bar):
            # not mutated: on a CPU (no GPU here) every device move below is the same
            images, depth_m = images.to(device, non_blocking=True), depth_m.to(device, non_blocking=True)  # pragma: no mutate
            with autocast(device, dtype):
                size = network_size(images.shape[-2:], input_size)
                pred_m = predict_depth_m(model, images, size, depth_m.shape[-2:], flip, depth_range=depth_range)
            box = own_box[0] if own_box and own_box[0] is not None else resolve_crop(crop_box, *depth_m.shape[-2:])
            metrics.update(crop(pred_m, box), crop(depth_m, box))
    return metrics


def resolve_crop(spec, height, width):
    """The crop box for a height x width ground truth: `spec` itself if a box, the named crop
    (crop_box) if a name, the Eigen crop scaled to the size if None."""
    if spec is None:
        return scaled_eigen_crop(height, width)
    if isinstance(spec, str):
        return crop_box(spec, height, width)
    return tuple(spec)


def eigen_batches(test_set, batch_size):
    """Batches of the Eigen test zip as tensors: images (B, 3, H, W) uint8, depth (B, 1, H, W) in metres."""
    for rgb, depth_m in test_set.batches(batch_size):
        yield torch.from_numpy(rgb).permute(0, 3, 1, 2), torch.from_numpy(depth_m)[:, None]
