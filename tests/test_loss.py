import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from loss import DepthLoss, gradient_loss, image_gradients, masked_gradient_loss, masked_ssim, ssim


def numpy_ssim(x, y, value_range, size=11, sigma=1.5):
    """Mean SSIM of two 2-D images with the full 2-D Gaussian window, 'valid' positions (as tf.image.ssim)."""
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(image):
        return np.einsum("ijkl,kl->ij", sliding_window_view(image, (size, size)), window)

    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean()


def test_ssim_matches_an_independent_2d_computation():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 100, (2, 1, 24, 30))
    y = np.clip(x + rng.normal(0, 15, x.shape), 1, 100)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), value_range=100)
    expected = [numpy_ssim(x[i, 0], y[i, 0], 100) for i in range(2)]
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # the float32 path used in training agrees within float tolerance
    got32 = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float(), value_range=100)
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-4)


def test_ssim_of_identical_images_is_one_and_the_loss_zero():
    y = torch.rand(3, 1, 32, 40) * 99 + 1
    assert torch.allclose(ssim(y, y, 100), torch.ones(3))
    assert DepthLoss()(y, y).item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_and_gradient_loss_by_hand():
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    dy, dx = image_gradients(pred)
    assert dy.tolist() == [[[[2.0, 2.0], [0.0, 0.0]]]]
    assert dx.tolist() == [[[[1.0, 0.0], [1.0, 0.0]]]]
    # |dy| + |dx| summed is 6 over 4 pixels
    assert gradient_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(1.5)


def noisy_pair_and_terms():
    """A target, a noisy prediction of it, and the loss's three unweighted terms for them."""
    torch.manual_seed(0)
    target = torch.rand(2, 1, 24, 32) * 99 + 1
    pred = target + torch.randn_like(target) * 5
    l1, grad = (pred - target).abs().mean(), gradient_loss(pred, target)
    ssim_term = ((1 - ssim(pred, target, 100)) / 2).clamp(0, 1).mean()
    return pred, target, (l1, grad, ssim_term)


def test_loss_is_the_weighted_sum_of_its_terms():
    pred, target, (l1, grad, ssim_term) = noisy_pair_and_terms()
    expected = 0.1 * l1 + grad + ssim_term
    assert DepthLoss()(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < ssim_term < 1


def test_loss_gradients_flow():
    target = torch.rand(1, 1, 16, 16) * 99 + 1
    pred = torch.full_like(target, 50.0, requires_grad=True)
    DepthLoss()(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_the_terms_weights_are_the_papers_unless_given():
    pred, target, (l1, grad, ssim_term) = noisy_pair_and_terms()
    weighted = DepthLoss(l1_weight=0.5, gradient_weight=0.25)(pred, target)
    assert weighted.item() == pytest.approx((0.5 * l1 + 0.25 * grad + ssim_term).item(), rel=1e-6)
    assert DepthLoss(gradient_weight=0)(pred, target).item() == pytest.approx((0.1 * l1 + ssim_term).item(), rel=1e-6)


def test_sparse_loss_gives_no_gradient_where_nothing_was_measured():
    torch.manual_seed(1)
    target = torch.rand(2, 1, 32, 40) * 99 + 1
    missing = torch.rand_like(target) < 0.9
    pred = (target + torch.randn_like(target) * 5).requires_grad_()
    loss = DepthLoss(mask_invalid=True)(pred, target.masked_fill(missing, float("nan")))
    loss.backward()
    assert torch.isfinite(loss)
    assert (pred.grad[missing] == 0).all()  # exactly: no term sees an unmeasured pixel
    assert (pred.grad[~missing] != 0).float().mean() > 0.9


def test_sparse_loss_with_everything_measured_is_the_dense_loss():
    pred, target, _ = noisy_pair_and_terms()
    for weights in ({}, {"l1_weight": 0.5, "gradient_weight": 0.25}):
        dense, masked = DepthLoss(**weights)(pred, target), DepthLoss(mask_invalid=True, **weights)(pred, target)
        assert masked.item() == pytest.approx(dense.item(), abs=1e-6)


def test_sparse_terms_see_only_measured_neighbours_and_windows():
    """A prediction that is right at every measured pixel and wild elsewhere costs nothing."""
    torch.manual_seed(2)
    target = torch.rand(1, 1, 24, 24) * 99 + 1
    missing = torch.zeros_like(target, dtype=torch.bool)
    missing[..., ::3, :] = True
    missing[..., :, 5:9] = True
    pred = torch.where(missing, torch.rand_like(target) * 1000, target)
    assert DepthLoss(mask_invalid=True)(pred, target.masked_fill(missing, float("nan"))).item() == pytest.approx(
        0.0, abs=1e-5
    )
    everything_missing = torch.full_like(target, float("nan"))
    assert DepthLoss(mask_invalid=True)(pred, everything_missing).item() == 0.0


def test_a_picture_with_nothing_measured_adds_nothing_and_no_nan_to_the_gradient():
    """Sparse ground truth where one picture of the batch has no measured pixel at all (all 0, or all beyond
    --max_depth: NaN targets): the loss is that of the other pictures, and the backward pass is finite,
    exactly 0 over that picture (a NaN gradient there would make Adam turn every weight NaN)."""
    torch.manual_seed(0)
    pred = (torch.rand(3, 1, 24, 32) * 90 + 10).requires_grad_()
    target = torch.rand(3, 1, 24, 32) * 90 + 10
    target[target < 30] = torch.nan  # sparse
    target[1] = torch.nan  # nothing measured
    criterion = DepthLoss(mask_invalid=True)
    loss = criterion(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert (pred.grad[1] == 0).all() and (pred.grad[0] != 0).any()
    others = [0, 2]
    kept = pred.detach()[others].requires_grad_()
    expected = criterion(kept, target[others])
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(pred.grad[others], kept.grad, rtol=1e-5, atol=1e-9)


def test_ssim_of_flat_pictures_is_its_luminance_term_by_hand():
    """Two flat pictures, 0.4 and 0.8 with a value range of 2, have no contrast: SSIM is
    (2 mx my + c1) / (mx^2 + my^2 + c1) with c1 = (0.01 L)^2 = 4e-4, that is 0.6404 / 0.8004. The masked
    SSIM gives the same under any scale of the weights (even summing to less than 1), and both work in
    float64 as in float32 (whose flat variances are rounding noise: 1e-5)."""
    expected = (2 * 0.4 * 0.8 + 4e-4) / (0.4**2 + 0.8**2 + 4e-4)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-9)):
        x = torch.full((2, 1, 16, 16), 0.4, dtype=dtype)
        y = torch.full_like(x, 0.8)
        wanted = torch.full((2,), expected, dtype=dtype)
        torch.testing.assert_close(ssim(x, y, 2.0), wanted, rtol=rtol, atol=0)
        for scale in (1.0, 1e-3):  # 1e-3: 36 windows of mass 1e-3, 0.036 in all
            torch.testing.assert_close(masked_ssim(x, y, torch.full_like(x, scale), 2.0), wanted, rtol=rtol, atol=0)


def test_one_picture_with_depth_beside_one_without_is_that_pictures_loss():
    """The SSIM term averages over the pictures that have depth: one of two here, so it is that one's."""
    torch.manual_seed(1)
    pred = torch.rand(2, 1, 24, 32) * 90 + 10
    target = torch.rand(2, 1, 24, 32) * 90 + 10
    target[1] = torch.nan
    criterion = DepthLoss(mask_invalid=True)
    valid = torch.isfinite(target[:1])
    measured = torch.where(valid, target[:1], 0.0)
    l1 = (pred[:1] - measured).abs()[valid].mean()
    ssim_term = (1 - masked_ssim(pred[:1], measured, valid.float(), criterion.value_range)) / 2
    expected = 0.1 * l1 + masked_gradient_loss(pred[:1], measured, valid) + ssim_term  # the paper's sum
    assert criterion(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_step_scores_depth_as_targets_of_the_losss_own_range():
    # KITTI's range: 20 m is the target 80 / 20 = 4 (NYU's would make it 1000 / 2000 cm, clipped: 1). A network
    # that predicts 4 everywhere has nothing to learn there: loss 0 and no gradient.
    from densedepth.depth import KITTI_DEPTH_RANGE
    from densedepth.training import Learner, train_step

    constant = torch.nn.Conv2d(3, 1, 1, stride=2)
    with torch.no_grad():
        constant.weight.zero_()
        constant.bias.fill_(4.0)
    criterion = DepthLoss(KITTI_DEPTH_RANGE)
    optimizer = torch.optim.SGD(constant.parameters(), lr=1.0)
    learner = Learner(constant, constant, constant, criterion, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                      torch.device("cpu"), torch.float32)  # fmt: skip
    loss, pred = train_step(learner, torch.rand(2, 3, 32, 32), torch.full((2, 1, 16, 16), 20.0))
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and pred.shape == (2, 1, 16, 16)
    assert float(constant.bias.detach()) == pytest.approx(4.0, abs=1e-6)
