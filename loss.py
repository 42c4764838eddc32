"""The DenseDepth loss: 0.1 * L1 + image-gradient loss + (1 - SSIM) / 2, on the target y.

Follows the original Keras/TensorFlow definitions: gradients as in
`tf.image.image_gradients` (forward differences, zero in the last row/column)
and SSIM as in `tf.image.ssim` (11x11 Gaussian window, sigma 1.5, 'valid'
filtering, mean over the image, then (1 - SSIM) / 2 clipped to [0, 1] per image).

Sparse ground truth (NaN where nothing was measured, as LiDAR's 5 % of pixels) has its own form of
each term, in which an unmeasured pixel takes no part at all (masked_ssim, masked_gradient_loss).
"""

import torch
import torch.nn.functional as F
from torch import nn

from densedepth.depth import NYU_DEPTH_RANGE

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_kernel_1d(size=SSIM_WINDOW, sigma=SSIM_SIGMA, dtype=torch.float32, device=None):
    """Normalised 1-D Gaussian taps; the 2-D SSIM window is their outer product."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def gaussian_filter_valid(images, taps):
    """Separable 'valid' Gaussian filter of (N, C, H, W) images: one vertical and one horizontal pass."""
    channels = images.shape[1]
    size = taps.numel()
    vertical = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    horizontal = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    filtered = F.conv2d(images, vertical, groups=channels)
    return F.conv2d(filtered, horizontal, groups=channels)


def ssim(x, y, value_range, window=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """Mean SSIM of each image pair, as tf.image.ssim: returns shape (N,).

    x, y: (N, C, H, W) with H, W >= window.
    """
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    taps = gaussian_kernel_1d(window, sigma, x.dtype, x.device)
    # One filter call for all five local statistics.
    stats = gaussian_filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5, dim=1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov_xy = xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return (luminance * contrast_structure).flatten(1).mean(dim=1)


def image_gradients(images):
    """Forward differences (dy, dx), zero-padded in the last row / column to keep the shape."""
    dy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1, 0, 0))
    return dy, dx


def masked_ssim(x, y, weight, value_range, window=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """SSIM of each image pair where only pixels of weight 1 count (weight: 0 or 1, shape of x): shape (N,).

    Each window's statistics are Gaussian averages over its measured pixels alone (a normalised
    convolution: G*(w x) / G*(w), and so for x^2, y^2 and xy), and the image's SSIM is the mean of its
    windows' SSIM weighted by how much of each window is measured, G*(w); windows with nothing
    measured drop out. A pixel of weight 0 enters nothing, so the gradient there is exactly 0;
    with every pixel measured, G*(w) is 1 and this is ssim() (to rounding). An image with no
    measured pixel gives NaN, for the caller to leave out, and no gradient at all: its windows'
    mass is 0, which divides nothing (a 0 / 0 there would make the whole batch's gradient NaN even
    behind a torch.where, which hides a value but not its gradient).
    """
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    taps = gaussian_kernel_1d(window, sigma, x.dtype, x.device)
    stats = gaussian_filter_valid(torch.cat([weight, weight * x, weight * y, weight * x * x, weight * y * y,
                                             weight * x * y], dim=1), taps)  # fmt: skip
    mass, sums = stats[:, :1], stats[:, 1:]
    mu_x, mu_y, xx, yy, xy = (sums / mass.clamp(min=1e-12)).chunk(5, dim=1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov_xy = xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    total_mass = mass.flatten(1).sum(dim=1)
    weighted = (mass * luminance * contrast_structure).flatten(1).sum(dim=1) / total_mass.clamp(min=1e-12)
    return torch.where(total_mass > 0, weighted, torch.nan)


def masked_gradient_loss(pred, target, valid):
    """gradient_loss where only differences between two measured neighbours count: their sum over
    the batch divided by the number of measured pixels (as gradient_loss divides by all pixels), so
    with every pixel measured it is gradient_loss. target must be finite (0 where not measured)."""
    pair_y = valid[..., 1:, :] & valid[..., :-1, :]
    pair_x = valid[..., :, 1:] & valid[..., :, :-1]
    diff_y = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    diff_x = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    total = torch.where(pair_y, diff_y.abs(), 0).sum() + torch.where(pair_x, diff_x.abs(), 0).sum()
    return total / valid.sum().clamp(min=1)


def gradient_loss(pred, target):
    """Mean over pixels of |dy_pred - dy_target| + |dx_pred - dx_target|."""
    dy_pred, dx_pred = image_gradients(pred)
    dy_target, dx_target = image_gradients(target)
    return ((dy_pred - dy_target).abs() + (dx_pred - dx_target).abs()).mean()


class DepthLoss(nn.Module):
    """L = l1_weight * L1(y, y_hat) + gradient_weight * L_grad + clip((1 - SSIM) / 2, 0, 1) on the
    targets y of depth_range (whose value range sets the SSIM constants); computed in fp32. The
    weights default to the paper's, 0.1 and 1.

    mask_invalid (datasets of one's own, KITTI): NaN targets mark pixels without depth, and no term
    sees them: L1 over measured pixels, the gradient term over pairs of measured neighbours
    (masked_gradient_loss), SSIM over the measured pixels of each window (masked_ssim), averaged
    over the images that have any. The gradient at an unmeasured pixel is exactly 0; with every
    pixel measured the loss is the dense one (to rounding).
    """

    def __init__(self, depth_range=NYU_DEPTH_RANGE, l1_weight=0.1, gradient_weight=1.0, mask_invalid=False):
        super().__init__()
        self.depth_range = depth_range
        self.value_range = depth_range.target_range
        self.l1_weight = l1_weight
        self.gradient_weight = gradient_weight
        self.mask_invalid = mask_invalid

    def forward(self, pred, target):
        pred, target = pred.float(), target.float()
        if self.mask_invalid:
            return self._masked(pred, target)
        l1 = (pred - target).abs().mean()
        ssim_term = ((1 - ssim(pred, target, self.value_range)) / 2).clamp(0, 1).mean()
        return self.l1_weight * l1 + self.gradient_weight * gradient_loss(pred, target) + ssim_term

    def _masked(self, pred, target):
        valid = torch.isfinite(target)
        target = torch.where(valid, target, 0.0)  # no NaN anywhere, even in a branch left unused
        l1 = torch.where(valid, (pred - target).abs(), 0).sum() / valid.sum().clamp(min=1)
        image_ssim = masked_ssim(pred, target, valid.float(), self.value_range)
        has_depth = torch.isfinite(image_ssim)
        ssim_terms = ((1 - torch.where(has_depth, image_ssim, 1.0)) / 2).clamp(0, 1)
        ssim_term = ssim_terms.sum() / has_depth.sum().clamp(min=1)
        return self.l1_weight * l1 + self.gradient_weight * masked_gradient_loss(pred, target, valid) + ssim_term
