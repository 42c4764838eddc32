"""What depth means in this project: metres everywhere outside the network, within a depth range
that is a model's setting, and DenseDepth's target y = max_depth / depth inside it.

For NYU Depth v2 that is y = 1000 / depth_cm with depth clipped to [10, 1000] cm; for KITTI
y = 80 / depth_m with depth in [1, 80] m. The targets of training, the loss's SSIM range, the
clip of every prediction and the metrics' cap all come from a model's DepthRange.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DepthRange:
    """The depths a model predicts, in metres: its target is y = max_m / depth with depth
    clipped to [min_m, max_m], so y runs from 1 to max_m / min_m."""

    min_m: float
    max_m: float

    def __post_init__(self):
        if not 0 < self.min_m < self.max_m:
            raise ValueError(f"a depth range needs 0 < min < max, got {self.min_m} .. {self.max_m} m")

    @property
    def target_range(self):
        """Value range of the target y (100 for NYU); the SSIM constants of the loss are built from it."""
        return self.max_m / self.min_m


# NYU Depth v2, as DenseDepth: 10 cm to 10 m. KITTI, as the authors trained kitti.h5: 1 m to 80 m.
NYU_DEPTH_RANGE = DepthRange(0.1, 10.0)
KITTI_DEPTH_RANGE = DepthRange(1.0, 80.0)


def depth_m_to_target(depth_m, depth_range=NYU_DEPTH_RANGE):
    """Metric depth -> network target y = max / depth, depth clipped to the range (1000 / depth_cm for NYU)."""
    # In centimetres, as DenseDepth computes it.
    min_cm, max_cm = depth_range.min_m * 100, depth_range.max_m * 100
    return max_cm / (depth_m * 100).clamp(min_cm, max_cm)


def target_to_depth_m(target, depth_range=NYU_DEPTH_RANGE):
    """Network output y -> metric depth, clipped to the range as in DenseDepth ([0.1, 10] m for NYU)."""
    min_cm, max_cm = depth_range.min_m * 100, depth_range.max_m * 100
    return (max_cm / target).clamp(min_cm, max_cm) / 100
