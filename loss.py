"""The DenseDepth loss: 0.1 * L1 + image-gradient loss + (1 - SSIM) / 2, on the target y.

Follows the original Keras/TensorFlow definitions: gradients as in
`tf.image.image_gradients` (forward differences, zero in the last row/column)
and SSIM as in `tf.image.ssim` (11x11 Gaussian window, sigma 1.5, 'valid'
filtering, mean over the image, then (1 - SSIM) / 2 clipped to [0, 1] per image).
"""

import torch
import torch.nn.functional as F
from torch import nn

from depth import NYU_DEPTH_RANGE

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


def gradient_loss(pred, target):
    """Mean over pixels of |dy_pred - dy_target| + |dx_pred - dx_target|."""
    dy_pred, dx_pred = image_gradients(pred)
    dy_target, dx_target = image_gradients(target)
    return ((dy_pred - dy_target).abs() + (dx_pred - dx_target).abs()).mean()


class DepthLoss(nn.Module):
    """L = l1_weight * L1(y, y_hat) + gradient_weight * L_grad + clip((1 - SSIM) / 2, 0, 1) on the
    targets y of depth_range (whose value range sets the SSIM constants); computed in fp32. The
    weights default to the paper's, 0.1 and 1.

    mask_invalid (datasets of one's own): NaN targets mark pixels without depth. L1 leaves them
    out; the gradient and SSIM terms, which need whole images, see the prediction itself there,
    so those pixels pull the network nowhere.
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
            valid = torch.isfinite(target)
            target = torch.where(valid, target, pred.detach())
            l1 = (pred - target).abs().sum() / valid.sum().clamp(min=1)
        else:
            l1 = (pred - target).abs().mean()
        ssim_term = ((1 - ssim(pred, target, self.value_range)) / 2).clamp(0, 1).mean()
        return self.l1_weight * l1 + self.gradient_weight * gradient_loss(pred, target) + ssim_term
