import math

import numpy as np
import pytest
import torch

from densedepth.protocol import crop
from metrics import METRIC_NAMES, DepthMetrics, format_table


def test_metrics_of_one_image_by_hand():
    gt = torch.tensor([[1.0, 2.0, 4.0]])
    pred = torch.tensor([[1.0, 1.0, 8.0]])  # ratios 1, 2, 2
    metrics = DepthMetrics()
    metrics.update(pred, gt)
    values = metrics.compute("pooled")
    assert values["delta1"] == pytest.approx(1 / 3)
    assert values["delta2"] == pytest.approx(1 / 3)  # 2 > 1.25^2
    assert values["delta3"] == pytest.approx(1 / 3)  # 2 > 1.25^3 = 1.953
    assert values["abs_rel"] == pytest.approx((0 + 1 / 2 + 4 / 4) / 3)
    assert values["sq_rel"] == pytest.approx((0 + 1 / 2 + 16 / 4) / 3)
    assert values["rms"] == pytest.approx(math.sqrt(17 / 3))
    assert values["rms_log"] == pytest.approx(math.sqrt(2 * math.log(2) ** 2 / 3))
    assert values["log10"] == pytest.approx(2 * math.log10(2) / 3)
    assert metrics.compute("per_image") == pytest.approx(values)  # one image: both agree


def test_abs_rel_is_relative_to_the_ground_truth():
    metrics = DepthMetrics()
    metrics.update(torch.tensor([[3.0]]), torch.tensor([[2.0]]))
    assert metrics.compute()["abs_rel"] == pytest.approx(0.5)  # |2 - 3| / 2, not / 3


def test_pooled_and_per_image_aggregation_differ_as_expected():
    # image 1: 4 valid pixels all 1 m off; image 2: 1 valid pixel 3 m off (3 pixels invalid)
    gt = torch.tensor([[2.0, 2.0, 2.0, 2.0], [4.0, 0.0, float("nan"), float("inf")]])
    pred = torch.tensor([[3.0, 3.0, 3.0, 3.0], [1.0, 5.0, 5.0, 5.0]])
    metrics = DepthMetrics()
    metrics.update(pred, gt)
    pooled, per_image = metrics.compute("pooled"), metrics.compute("per_image")
    assert pooled["rms"] == pytest.approx(math.sqrt((4 * 1 + 9) / 5))
    assert per_image["rms"] == pytest.approx((1 + 3) / 2)
    assert pooled["abs_rel"] == pytest.approx((4 * 0.5 + 0.75) / 5)
    assert per_image["abs_rel"] == pytest.approx((0.5 + 0.75) / 2)
    summary = metrics.summary()
    assert (summary["num_images"], summary["num_valid_pixels"], summary["num_invalid_pixels"]) == (2, 5, 3)
    assert (summary["pooled"], summary["per_image"]) == (pooled, per_image)


def test_streaming_batches_equal_one_batch_and_empty_images_are_skipped():
    torch.manual_seed(0)
    gt = torch.rand(6, 1, 8, 8) * 9 + 0.5
    pred = gt * (1 + 0.3 * torch.randn_like(gt)).abs()
    gt[5] = 0  # an image without valid pixels counts for neither aggregation
    whole, streamed = DepthMetrics(), DepthMetrics()
    whole.update(pred, gt)
    for start, stop in ((0, 2), (2, 5), (5, 6)):
        streamed.update(pred[start:stop], gt[start:stop])
    for aggregation in ("pooled", "per_image"):
        assert streamed.compute(aggregation) == pytest.approx(whole.compute(aggregation))
    assert whole.summary()["num_images"] == 5


def test_sums_of_processes_add_up_to_one_process_even_one_without_pictures():
    # As torchrun's processes do (World.sum_in_place): each adds its sums into the others' in place. A
    # process that saw no picture (an uneven last batch) still brings zeros of the right shapes.
    gt = torch.tensor([[2.0, 2.0, 2.0, 2.0], [4.0, 0.0, 4.0, 4.0]])
    pred = torch.tensor([[3.0, 3.0, 3.0, 3.0], [1.0, 5.0, 5.0, 5.0]])
    one, first, second, idle = DepthMetrics(), DepthMetrics(), DepthMetrics(), DepthMetrics()
    one.update(pred, gt)
    first.update(pred[:1], gt[:1])
    second.update(pred[1:], gt[1:])
    zeros = idle.sums(torch.device("cpu"))
    assert [tuple(part.shape) for part in zeros] == [tuple(part.shape) for part in one.sums(torch.device("cpu"))]
    assert all(not part.any() for part in zeros)
    for other in (first, second):  # the idle process sums the two others' pictures
        for mine, theirs in zip(idle.sums(torch.device("cpu")), other.sums(torch.device("cpu"))):
            mine += theirs
    for mine, theirs in zip(first.sums(torch.device("cpu")), second.sums(torch.device("cpu"))):
        mine += theirs
    for process in (first, idle):
        for aggregation in ("pooled", "per_image"):
            assert process.compute(aggregation) == pytest.approx(one.compute(aggregation))
    assert idle.summary()["num_images"] == 2 and first.summary()["num_valid_pixels"] == 7


def test_no_valid_pixels_gives_nan_and_shape_mismatch_is_refused():
    assert all(math.isnan(v) for v in DepthMetrics().compute().values())
    empty = DepthMetrics().summary()
    assert (empty["num_images"], empty["num_valid_pixels"], empty["num_invalid_pixels"]) == (0, 0, 0)
    with pytest.raises(ValueError, match=r"^prediction shape \(1, 4\) != ground truth \(1, 5\)$"):
        DepthMetrics().update(torch.ones(1, 4), torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"^aggregation must be one of \('per_image', 'pooled'\), got 'mean'$"):
        DepthMetrics().compute("mean")


def test_delta_thresholds_are_strict_at_each_power_of_1_25():
    # 1.25, 1.25^2 = 1.5625 and 1.25^3 = 1.953125 are exact in binary: a ratio equal to a threshold is outside it.
    metrics = DepthMetrics()
    metrics.update(torch.tensor([[1.25, 1.5625, 1.953125]]), torch.ones(1, 3))
    values = metrics.compute("pooled")
    assert (values["delta1"], values["delta2"], values["delta3"]) == pytest.approx((0, 1 / 3, 2 / 3))


def test_the_cap_counts_depth_equal_to_it_and_holds_beside_a_range():
    # "at most a cap": 10 m counts under a 10 m cap, 10.5 m does not, even with a range that would take it.
    metrics = DepthMetrics(max_depth_m=10.0, gt_range_m=(1e-3, 80.0))
    metrics.update(torch.full((1, 3), 10.0), torch.tensor([[10.0, 10.5, 5.0]]))
    assert metrics.summary()["num_valid_pixels"] == 2


def test_sums_are_kept_in_float64_and_counts_in_int64():
    metrics = DepthMetrics()
    metrics.update(torch.ones(1, 4), torch.full((1, 4), 2.0))
    term_sums, image_metric_sums, counts = metrics.sums(torch.device("cpu"))
    assert (term_sums.dtype, image_metric_sums.dtype, counts.dtype) == (torch.float64, torch.float64, torch.int64)


def test_crop_keeps_both_ends():
    image = torch.arange(100).view(10, 10)
    cropped = crop(image, (2, 4, 3, 8))
    assert cropped.shape == (3, 6)
    assert cropped[0, 0] == 23 and cropped[-1, -1] == 48


def test_table_lists_the_seed_columns_first():
    values = dict.fromkeys(METRIC_NAMES, 0.5)
    header = format_table(values).splitlines()[0].split()
    assert header == ["delta1", "delta2", "delta3", "rel", "rms", "log10", "sq_rel", "rms_log", "silog"]
    markdown = format_table(values, markdown=True).splitlines()
    assert markdown[0] == "| delta1 ↑ | delta2 ↑ | delta3 ↑ | rel ↓ | rms ↓ | log10 ↓ |"
    assert markdown[2] == "| 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |"


def test_silog_by_hand_and_blind_to_scale():
    gt = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    pred = torch.tensor([[1.0, 4.0, 4.0, 4.0]])  # e = ln p - ln d = 0, ln 2, 0, -ln 2
    metrics = DepthMetrics()
    metrics.update(pred, gt)
    e = torch.tensor([0.0, math.log(2), 0.0, -math.log(2)], dtype=torch.float64)
    expected = 100 * math.sqrt((e**2).mean() - e.mean() ** 2)
    assert metrics.compute("pooled")["silog"] == pytest.approx(expected)
    scaled = DepthMetrics()
    scaled.update(pred * 3, gt)  # a global scale changes every e by ln 3: silog stays, rms_log does not
    assert scaled.compute()["silog"] == pytest.approx(expected)
    assert scaled.compute()["rms_log"] > metrics.compute()["rms_log"]


def test_ground_truth_range_leaves_out_both_ends_as_kitti_does():
    gt = torch.tensor([[0.0, 0.0009, 5.0, 80.0, 90.0]])
    metrics = DepthMetrics(gt_range_m=(1e-3, 80.0))
    metrics.update(torch.full_like(gt, 5.0), gt)
    summary = metrics.summary()
    assert summary["num_valid_pixels"] == 1 and summary["per_image"]["delta1"] == 1.0


def test_the_range_is_compared_in_float32_as_bts_and_monodepth2_do():
    """BTS reads 16-bit millimetres as float32 / 1000 and compares with 1e-3 in float32: 1 mm is not > 1e-3
    there (float32(0.001) == float32(1e-3)). The same ground truth in float64 would count it."""
    millimetres = np.array([1, 2, 9999, 10000, 5000], dtype=np.uint16)
    gt32 = millimetres.astype(np.float32) / 1000.0
    expected = int(np.logical_and(gt32 > 1e-3, gt32 < 10).sum())  # BTS's own test, in numpy's float32
    assert expected == 3  # 2, 9999 and 5000 mm
    assert int(np.logical_and(gt32.astype(np.float64) > 1e-3, gt32.astype(np.float64) < 10).sum()) == 4
    metrics = DepthMetrics(gt_range_m=(1e-3, 10.0))
    gt = torch.from_numpy(gt32)[None]
    metrics.update(torch.ones_like(gt), gt)
    assert metrics.summary()["num_valid_pixels"] == expected
