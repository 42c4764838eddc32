"""The evaluation protocol (densedepth/protocol.py) in-process, on a network whose depth is known, so
that each step (resizing to the network's size, the mirror, the depth range, the crop, streaming into
the metrics) is checked against values worked out by hand in milliseconds."""

import math

import pytest
import torch

from data import FailedSample
from densedepth.depth import KITTI_DEPTH_RANGE, NYU_DEPTH_RANGE
from densedepth.kitti import kitti_list_shape
from densedepth.protocol import (
    crop_box,
    evaluate_protocol,
    network_size,
    predict_depth_m,
    resolve_crop,
    scaled_nyu_crop,
)
from densedepth.sources import pair_batches
from metrics import DepthMetrics
from utils import UserError


class LeftRightNetwork(torch.nn.Module):
    """DenseDepth's output at half the input's size: target 10 on the left half, 2.5 on the right (1 m and
    4 m in NYU's range), whatever the picture; it notes what it was given."""

    def __init__(self, depth_range=NYU_DEPTH_RANGE):
        super().__init__()
        if depth_range is not None:
            self.depth_range = depth_range
        self.calls = []

    def forward(self, images):
        self.calls.append({"shape": tuple(images.shape), "training": self.training, "max": float(images.max()),
                           "inference": torch.is_inference_mode_enabled()})  # fmt: skip
        batch, _, height, width = images.shape
        target = torch.full((batch, 1, height // 2, width // 2), 10.0)
        target[..., width // 4 :] = 2.5
        return target


# The Eigen crop (20, 459, 24, 615) of 480x640 scaled to 64x64 by hand: rows 20 * 64/480 = 2.67 -> 3 to
# 460 * 64/480 = 61.3 -> 61, minus 1; columns 24 * 0.1 = 2.4 -> 2 to 616 * 0.1 = 61.6 -> 62, minus 1.
EIGEN_CROP_64 = (3, 60, 2, 61)


def picture_batch(gt_inside_m, size=(64, 64), box=None):
    """One white picture and its ground truth: gt_inside_m inside the crop `box`, 50 m (which no metric
    would forgive) outside it."""
    images = torch.full((1, 3, *size), 255, dtype=torch.uint8)
    depth_m = torch.full((1, 1, *size), 50.0)
    top, bottom, left, right = box or EIGEN_CROP_64
    depth_m[..., top : bottom + 1, left : right + 1] = gt_inside_m
    return images, depth_m


def test_mirrored_prediction_cropped_and_scored_by_hand():
    # Mirrored and averaged in metres: (1 + 4) / 2 = 2.5 m on every pixel. Against 2.4 m: abs rel 0.1 / 2.4,
    # delta1 1; against 3.0 m: abs rel 0.5 / 3, delta1 1 (3 / 2.5 = 1.2); averaged over the two pictures.
    network = LeftRightNetwork().train()
    metrics = evaluate_protocol(network, [picture_batch(2.4), picture_batch(3.0)], (32, 64), None,
                                torch.device("cpu"), bar={"disable": True})  # fmt: skip
    values = metrics.compute("per_image")
    assert values["abs_rel"] == pytest.approx((0.1 / 2.4 + 0.5 / 3.0) / 2, rel=1e-5)
    assert values["delta1"] == 1.0
    assert values["rms"] == pytest.approx((0.1 + 0.5) / 2, rel=1e-5)
    assert values["log10"] == pytest.approx((math.log10(2.5 / 2.4) + math.log10(3.0 / 2.5)) / 2, rel=1e-4)
    assert metrics.summary()["num_valid_pixels"] == 2 * 58 * 60  # the Eigen crop, EIGEN_CROP_64
    # A 64x64 picture is not of the trained 32x64's shape: the network saw it at the trained area in its
    # own shape, sqrt(32 * 64 / 64^2) * 64 = 45 -> 32, the picture and its mirror in one batch of two,
    # in eval and inference mode, in [0, 1].
    assert [call["shape"] for call in network.calls] == [(2, 3, 32, 32)] * 2
    assert not any(call["training"] for call in network.calls)
    assert all(call["inference"] and call["max"] == 1.0 for call in network.calls)


def test_without_the_mirror_each_half_keeps_its_own_depth():
    # The left 16 columns (far from the middle, where bilinear upsampling blends) predict 1 m: against 2 m,
    # abs rel 0.5, rmse 1, delta1 0 (2 / 1 > 1.25), log10 log10(2).
    left = (0, 63, 0, 15)
    metrics = evaluate_protocol(LeftRightNetwork(), [picture_batch(2.0, box=left)], (32, 64), left,
                                torch.device("cpu"), flip=False, bar={"disable": True})  # fmt: skip
    values = metrics.compute("pooled")
    assert (values["abs_rel"], values["rms"], values["delta1"]) == pytest.approx((0.5, 1.0, 0.0), abs=1e-6)
    assert values["log10"] == pytest.approx(math.log10(2), rel=1e-5)


def test_a_batch_may_bring_its_own_crop_and_the_metrics_their_bounds():
    right = (0, 63, 48, 63)  # the right 16 columns: 4 m without the mirror
    batch = (*picture_batch(4.0, box=right), right)
    bounded = DepthMetrics(gt_range_m=(1e-3, 80.0))
    metrics = evaluate_protocol(LeftRightNetwork(), [batch], (32, 64), "none", torch.device("cpu"), flip=False,
                                metrics=bounded, bar={"disable": True})  # fmt: skip
    assert metrics is bounded
    assert metrics.compute()["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.summary()["num_valid_pixels"] == 64 * 16


def test_a_wrapper_without_a_depth_range_is_given_one():
    # KITTI's range: target 10 is 80 / 10 = 8 m, 2.5 is 32 m; mirrored and averaged, 20 m everywhere.
    metrics = evaluate_protocol(LeftRightNetwork(depth_range=None), [picture_batch(20.0)], (32, 64), None,
                                torch.device("cpu"), bar={"disable": True}, depth_range=KITTI_DEPTH_RANGE)  # fmt: skip
    assert metrics.compute()["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_a_square_network_keeps_a_wide_pictures_shape():  # no "train" in the name: mutmut -k leaves those out
    # Trained at 64x64, a 32x96 picture goes in at the trained area in its own shape: sqrt(64 * 64 / (32 * 96))
    # = 1.155; 32 * 1.155 = 37 -> 32, 96 * 1.155 = 111 -> 96 (multiples of 32).
    assert network_size((32, 96), (64, 64)) == (32, 96)
    assert network_size((128, 128), (64, 64)) == (64, 64)


def test_nyu_crops_at_another_size_by_hand():
    # Rows top..bottom scale as the span [top, bottom + 1): at 100x150, 100/480 and 150/640.
    # Eigen (20, 459, 24, 615): 20 * 0.20833 = 4.17 -> 4; 460 * 0.20833 = 95.8 -> 96, minus 1;
    # 24 * 0.234375 = 5.625 -> 6; 616 * 0.234375 = 144.4 -> 144, minus 1.
    assert scaled_nyu_crop((20, 459, 24, 615), 100, 150) == (4, 95, 6, 143)
    assert crop_box("eigen", 100, 150) == (4, 95, 6, 143)
    # BTS's (45, 470, 41, 600): 9.375 -> 9; 471 * 0.20833 = 98.1 -> 98, minus 1; 9.61 -> 10; 140.9 -> 141, minus 1.
    assert crop_box("eigen_bts", 100, 150) == (9, 97, 10, 140)
    assert crop_box("none", 100, 150) == (0, 99, 0, 149)
    assert resolve_crop(None, 100, 150) == (4, 95, 6, 143)
    assert resolve_crop([1, 2, 3, 4], 100, 150) == (1, 2, 3, 4)


def test_kitti_list_shapes_are_named():
    bts = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png None 721.5377"
    monodepth2 = "2011_09_26/2011_09_26_drive_0002_sync 69 l"
    assert (kitti_list_shape(bts), kitti_list_shape(monodepth2), kitti_list_shape("a b")) == ("bts", "monodepth2", None)


def test_pairs_are_batched_in_runs_of_one_size_and_a_failed_one_stops():
    # Three 4x6 pairs then one 5x6, in batches of up to 2: [a, b], [c], [d] (a run ends at a new size).
    def pair(height, value):
        return torch.full((3, height, 6), value, dtype=torch.uint8), torch.full((1, height, 6), float(value))

    loaded = [pair(4, 1), pair(4, 2), pair(4, 3), pair(5, 4)]
    batches = list(pair_batches(loaded, 2))
    assert [tuple(images.shape) for images, _ in batches] == [(2, 3, 4, 6), (1, 3, 4, 6), (1, 3, 5, 6)]
    assert [depth_m[:, 0, 0, 0].tolist() for _, depth_m in batches] == [[1.0, 2.0], [3.0], [4.0]]
    failed = FailedSample(("rgb/7.png", "depth/7.png"), "rgb/7.png is not a picture")
    with pytest.raises(UserError, match=r"^--data: rgb/7.png is not a picture$"):
        list(pair_batches([pair(4, 1), failed], 2))


class RecordingOnnxModel:
    """Stands for an exported model run by onnxruntime that takes uint8 (export.py's): records what it is
    given and answers 2 m everywhere, at the input's size."""

    returns_depth_m = True
    runs_in_onnxruntime = True
    uint8_input = True

    def __init__(self):
        self.given = []

    def __call__(self, images):
        self.given.append(images)
        return torch.full((images.shape[0], 1, *images.shape[-2:]), 2.0)


def test_onnxruntime_models_get_uint8_frames_at_their_size_in_nchw():
    """uint8 frames at the network's size go as they are (with their mirrors); other sizes are resized in
    float; a float-input model gets [0, 1]; none of them channels_last (onnxruntime reads NCHW)."""
    model, frames = RecordingOnnxModel(), torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    depth_m = predict_depth_m(model, frames, (32, 48), (32, 48), flip=True)
    given = model.given[-1]
    assert given.dtype == torch.uint8 and given.shape == (4, 3, 32, 48) and given.is_contiguous()
    assert torch.equal(given[:2], frames) and torch.equal(given[2:], frames.flip(-1))
    assert depth_m.shape == (2, 1, 32, 48) and torch.all(depth_m == 2.0)
    predict_depth_m(model, frames, (64, 96), (32, 48), flip=False)
    assert model.given[-1].dtype == torch.float32 and model.given[-1].shape == (2, 3, 64, 96)
    model.uint8_input = False
    predict_depth_m(model, frames, (32, 48), (32, 48), flip=False)
    assert model.given[-1].is_contiguous() and torch.equal(model.given[-1], frames.float() / 255)


class RecordingNetwork:
    """Stands for a PyTorch network (no uint8_input, not run in onnxruntime): records what it is given and
    answers DenseDepth's target at half size."""

    depth_range = NYU_DEPTH_RANGE

    def __init__(self):
        self.given = []

    def __call__(self, images):
        self.given.append(images)
        return torch.ones(images.shape[0], 1, images.shape[2] // 2, images.shape[3] // 2)


def test_pytorch_networks_get_float_pictures_in_channels_last_even_at_their_size():
    network, frames = RecordingNetwork(), torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    predict_depth_m(network, frames, (32, 48), (32, 48), flip=False)
    given = network.given[-1]
    assert given.dtype == torch.float32 and torch.equal(given, frames.float() / 255)
    assert given.is_contiguous(memory_format=torch.channels_last) and not given.is_contiguous()
