"""The NYU Depth v2 toolbox's fill of sparse depth (fill_depth_colorization.m, Levin et al.'s
colorization), as the DenseDepth authors filled KITTI's training depth, and linear interpolation
inside the measured points' hull as an alternative. fill_depth.py runs these over a dataset.

The toolbox's grey values come from MATLAB's rgb2gray, whose code weighs R, G and B by the first
row of the inverse of the NTSC (YIQ) matrix: 0.298936021293775, 0.587043074451121, 0.114020904255103.
They sum to 1; the rounded 0.2989, 0.5870, 0.1140 of its documentation do not, and change the fill
by about 1e-4 relative.
"""

import functools
import math

import numpy as np
import torch
from scipy.interpolate import griddata
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import splu
from scipy.spatial import QhullError

from data import resize, resize_measured_depth_m

# MATLAB's rgb2gray, as its code computes it (not the rounded weights of its documentation).
RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def colorization_system(gray, known, alpha=1.0):
    """The sparse matrix of the NYU toolbox's fill_depth_colorization.m (Levin et al.'s colorization):
    for each pixel r, its 3x3 neighbours s (inside the picture) get weights
    w_rs = exp(-(g_s - g_r)^2 / csig), normalised to sum to 1, where csig = 0.6 * var (the variance of
    the grey values of the window, r included), raised to -min_s (g_s - g_r)^2 / ln(0.01) and to at
    least 2e-6; row r of the matrix is 1 at r, -w_rs at s, plus alpha at r where r is measured. The
    filled depth x solves M x = alpha * known * depth (depth divided by its maximum)."""
    height, width = gray.shape
    size = height * width
    padded = np.pad(gray.astype(np.float64), 1, constant_values=np.nan)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    neighbours = np.stack([padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in offsets])
    inside = np.isfinite(neighbours)
    centre = gray.astype(np.float64)
    window = np.concatenate([neighbours, centre[None]])
    count = inside.sum(axis=0) + 1
    mean = np.nansum(window, axis=0) / count
    variance = np.nansum((window - mean) ** 2, axis=0) / count
    squared = np.where(inside, (neighbours - centre) ** 2, np.inf)
    csig = np.maximum(np.maximum(0.6 * variance, -squared.min(axis=0) / math.log(0.01)), 2e-6)
    weights = np.exp(-squared / csig)  # 0 outside the picture
    weights /= weights.sum(axis=0)
    index = np.arange(size).reshape(height, width)
    rows, cols = [index.ravel()], [index.ravel()]
    values = [1.0 + alpha * known.ravel().astype(np.float64)]
    for k, (dy, dx) in enumerate(offsets):
        rows.append(index[inside[k]])
        cols.append((index + dy * width + dx)[inside[k]])
        values.append(-weights[k][inside[k]])
    return csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))


# pragma: no mutate start (outside mutation testing: an order for speed; every order solves the same system)
@functools.lru_cache(maxsize=4)
def nested_dissection_order(height, width, leaf_size=16):
    """An elimination order of the pixels of a height x width picture (row-major indices) that keeps
    a direct solve of a 3x3-stencil system cheap: each rectangle's two halves first, then the
    one-pixel line that separates them (George's nested dissection). SuperLU's own orderings
    (COLAMD, minimum degree) do not see the grid and fill in three to ten times more."""
    index = np.arange(height * width).reshape(height, width)
    order = []

    def dissect(block):
        rows, cols = block.shape
        if rows * cols <= leaf_size or min(rows, cols) < 3:
            order.append(block.ravel())
        elif cols >= rows:
            middle = cols // 2
            dissect(block[:, :middle])
            dissect(block[:, middle + 1 :])
            order.append(block[:, middle])
        else:
            middle = rows // 2
            dissect(block[:middle])
            dissect(block[middle + 1 :])
            order.append(block[middle])

    dissect(index)
    return np.concatenate(order)


# pragma: no mutate end


def solve_on_grid(system, rhs, height, width, refinements=2):
    """x with system @ x = rhs for a 3x3-stencil system over a height x width picture: SuperLU in
    nested-dissection order, without pivoting, which the system does not need (every row's diagonal
    is at least the sum of its other entries' magnitudes). The factors are single precision, half
    the time and memory of double's; each refinement step (residual in double, correction from the
    same factors) takes the error from about 2e-4 of the largest depth to 3e-8, then to 5e-12 (measured
    on a KITTI frame)."""
    order = nested_dissection_order(height, width)
    ordered = system[order][:, order].tocsc()
    factors = splu(
        ordered.astype(np.float32), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    ordered_rhs = rhs[order]
    solution = factors.solve(ordered_rhs.astype(np.float32)).astype(np.float64)
    for _ in range(refinements):
        residual = ordered_rhs - ordered @ solution
        solution += factors.solve(residual.astype(np.float32))
    result = np.empty_like(solution)
    result[order] = solution
    return result


def fill_depth_colorization(rgb, depth_m, alpha=1.0):
    """The toolbox's fill of (H, W) depth in metres (0 or NaN: not measured) guided by an (H, W, 3)
    uint8 picture: (H, W) float64 metres. One sparse direct solve (solve_on_grid). ValueError if
    nothing was measured. The toolbox also takes depth of exactly 10 (NYU's Kinect cap) as unmeasured;
    here only 0 and NaN are, since 10 m is a real measurement outdoors."""
    depth_m = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    known = depth_m > 0
    if not known.any():
        raise ValueError("has no measured pixel")
    largest = depth_m[known].max()
    gray = np.asarray(rgb, dtype=np.float64) @ RGB2GRAY / 255
    system = colorization_system(gray, known, alpha)
    filled = solve_on_grid(system, alpha * known.ravel() * depth_m.ravel() / largest, *depth_m.shape)
    return filled.reshape(depth_m.shape) * largest


def fill_depth_linear(rgb, depth_m, alpha=1.0):
    """Linear interpolation between the measured pixels (over their Delaunay triangulation) inside
    their convex hull, and outside it the toolbox's colorization of the hull's pixels: (H, W)
    float64 metres. On rendered rooms it is 40 times closer to the exact depth than the colorization
    alone inside the hull (docs/kitti.md), whose soft constraint lets measured pixels move."""
    depth_m = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    known = depth_m > 0
    if not known.any():
        raise ValueError("has no measured pixel")
    pixels = np.indices(depth_m.shape).reshape(2, -1).T
    try:
        linear = griddata(np.argwhere(known), depth_m[known], pixels, method="linear").reshape(depth_m.shape)
    except QhullError:  # too few points, or all on one line: no triangle to interpolate in
        return fill_depth_colorization(rgb, depth_m, alpha)
    inside = np.isfinite(linear)
    if inside.all():
        return linear
    outside = fill_depth_colorization(rgb, np.where(inside, linear, 0.0), alpha)
    return np.where(inside, linear, outside)


FILL_METHODS = {"colorization": fill_depth_colorization, "linear": fill_depth_linear}


# pragma: no mutate start (outside mutation testing: the sizes a pair is filled at, not the system)
def fill_pair(image, depth_m, size="full", alpha=1.0, method="colorization"):
    """Filled depth (H, W) float32 metres for a (3, H, W) uint8 picture and (1, H, W) depth: solved at
    the picture's size, or at half of it (depth averaged in inverse depth) and upsampled back."""
    fill = FILL_METHODS[method]
    if size == "half":
        half = ((image.shape[-2] + 1) // 2, (image.shape[-1] + 1) // 2)
        small = resize(image[None].float(), half)[0].round().clamp(0, 255).to(torch.uint8)
        sparse = resize_measured_depth_m(depth_m[None].float(), half)[0]
        filled = fill(small.permute(1, 2, 0).numpy(), sparse[0].numpy(), alpha)
        return resize(torch.from_numpy(filled).float()[None, None], image.shape[-2:])[0, 0].numpy()
    filled = fill(image.permute(1, 2, 0).numpy(), depth_m[0].numpy(), alpha)
    return filled.astype(np.float32)


# pragma: no mutate end
