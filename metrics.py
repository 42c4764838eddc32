"""Standard monocular depth metrics, accumulated batch by batch.

With d the ground truth and p the prediction (metres) over valid pixels
(ground truth finite and > 0, and at most a cap if one is given):
  delta_k  fraction with max(d/p, p/d) < 1.25^k      abs_rel  mean(|d - p| / d)
  sq_rel   mean((d - p)^2 / d)                          rms      sqrt(mean((d - p)^2))
  rms_log  sqrt(mean((ln d - ln p)^2))                  log10    mean(|log10 d - log10 p|)
  silog    100 sqrt(mean(e^2) - mean(e)^2), e = ln p - ln d   (scale-invariant log error, BTS's form)

Two aggregations are kept side by side:
  per_image  each metric computed per image, then averaged over images
             (the DenseDepth paper's figures, BTS, AdaBins, ZoeDepth);
  pooled     all valid pixels of the test set pooled into one set
             (DenseDepth's released evaluation code).
They differ for every metric unless all images have the same number of valid pixels, and most
for rms, rms_log and silog, which take a root (tests/test_metrics.py shows both).
"""

import math

import torch

METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "rms", "log10", "sq_rel", "rms_log", "silog")
AGGREGATIONS = ("per_image", "pooled")
README_COLUMNS = METRIC_NAMES[:6]  # the README's tables: delta1 delta2 delta3 rel rms log10
COLUMN_TITLES = {"abs_rel": "rel"}  # as the README's tables head it
LOWER_IS_BETTER = {"abs_rel", "rms", "log10", "sq_rel", "rms_log", "silog"}
# Per-pixel terms summed over valid pixels; rms, rms_log and silog are finished from their means.
_TERMS = ("delta1", "delta2", "delta3", "abs_rel", "sq_err", "log10", "sq_rel", "sq_log_err", "log_err")


def pixel_terms(pred_m, gt_m):
    """The per-pixel terms in _TERMS order, stacked on a new last axis."""
    ratio = torch.maximum(gt_m / pred_m, pred_m / gt_m)
    diff = gt_m - pred_m
    return torch.stack(
        [
            (ratio < 1.25).double(),
            (ratio < 1.25**2).double(),
            (ratio < 1.25**3).double(),
            diff.abs() / gt_m,
            diff**2,
            (torch.log10(gt_m) - torch.log10(pred_m)).abs(),
            diff**2 / gt_m,
            (torch.log(gt_m) - torch.log(pred_m)) ** 2,
            torch.log(pred_m) - torch.log(gt_m),
        ],
        dim=-1,
    )


def _finish(term_means):
    """Turn means of the _TERMS into the METRIC_NAMES (taking the roots); works on any leading shape."""
    mean = dict(zip(_TERMS, term_means.unbind(-1)))
    values = {name: mean[name] for name in ("delta1", "delta2", "delta3", "abs_rel", "log10", "sq_rel")}
    values["rms"] = mean["sq_err"].sqrt()
    values["rms_log"] = mean["sq_log_err"].sqrt()
    # mean(e^2) - mean(e)^2 is a variance: rounding can take it a hair below 0.
    values["silog"] = 100 * (mean["sq_log_err"] - mean["log_err"] ** 2).clamp(min=0).sqrt()
    return values


class DepthMetrics:
    """Streaming accumulator: memory does not grow with the number of images.

    Sums stay on the device of the inputs (no synchronisation per batch) in
    float64; compute() brings them to the CPU.
    """

    def __init__(self, max_depth_m=None, gt_range_m=None):
        self.max_depth_m = max_depth_m  # ground truth beyond it is left out, if given (datasets of one's own)
        # (low, high): only ground truth with low < d < high counts, both ends open, as KITTI's protocols
        # (monodepth2, BTS: 1e-3 < d < 80 m)
        self.gt_range_m = gt_range_m
        self.reset()

    def reset(self):
        """Forget the images added so far."""
        self.term_sums = None  # sums of the _TERMS over all valid pixels
        self.image_metric_sums = None  # sums over images of each image's METRIC_NAMES
        self.counts = None  # valid pixels, invalid pixels, images with a valid pixel

    def update(self, pred_m, gt_m):
        """Add a batch: pred_m and gt_m of the same shape (N, ...), in metres."""
        if pred_m.shape != gt_m.shape:
            raise ValueError(f"prediction shape {tuple(pred_m.shape)} != ground truth {tuple(gt_m.shape)}")
        valid = self.counted(gt_m.detach().flatten(1).to(pred_m.device))
        pred_m = pred_m.detach().flatten(1).double()
        gt_m = gt_m.detach().flatten(1).double().to(pred_m.device)
        if self.term_sums is None:
            self._start(pred_m.device)
        terms = pixel_terms(torch.where(valid, pred_m, 1.0), torch.where(valid, gt_m, 1.0))
        sums_per_image = (terms * valid.unsqueeze(-1)).sum(dim=1)  # (N, terms)
        pixels_per_image = valid.sum(dim=1)
        has_pixels = pixels_per_image > 0
        means = sums_per_image / pixels_per_image.clamp(min=1).unsqueeze(-1)
        per_image_values = _finish(means)
        per_image = torch.stack([per_image_values[name] for name in METRIC_NAMES], dim=-1)
        self.term_sums += sums_per_image.sum(dim=0)
        self.image_metric_sums += (per_image * has_pixels.unsqueeze(-1)).sum(dim=0)
        self.counts += torch.stack([pixels_per_image.sum(), (~valid).sum(), has_pixels.sum()])

    def counted(self, gt_m):
        """Which ground-truth pixels count: finite, > 0, and inside the bounds, compared in float32 as the
        protocols' own code compares (BTS's and monodepth2's float32 arrays against Python floats), so
        that ground truth of exactly 1 mm (1 / 1000 in float32) is not > 1e-3 there, nor here."""
        gt_m = gt_m.float()
        valid = torch.isfinite(gt_m) & (gt_m > 0)
        if self.max_depth_m is not None:
            valid &= gt_m <= self.max_depth_m
        if self.gt_range_m is not None:
            valid &= (gt_m > self.gt_range_m[0]) & (gt_m < self.gt_range_m[1])
        return valid

    def sums(self, device):
        """The tensors of sums and counts, on `device` if none was added yet, for processes that each
        took their own images to add up in place (World.sum_in_place): compute() then gives the
        metrics of all the images as one process would, not an average of averages."""
        if self.term_sums is None:  # no image here, but the others' sums still come
            self._start(device)
        return self.term_sums, self.image_metric_sums, self.counts

    def _start(self, device):
        self.term_sums = torch.zeros(len(_TERMS), dtype=torch.float64, device=device)
        self.image_metric_sums = torch.zeros(len(METRIC_NAMES), dtype=torch.float64, device=device)
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)

    def compute(self, aggregation="per_image"):
        """Metrics as a {name: float} dict in METRIC_NAMES order (NaN before any valid pixel)."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        num_pixels, _, num_images = self._counts()
        if num_pixels == 0:
            return {name: math.nan for name in METRIC_NAMES}
        if aggregation == "pooled":
            values = _finish(self.term_sums.cpu() / num_pixels)
        else:
            values = dict(zip(METRIC_NAMES, self.image_metric_sums.cpu() / num_images))
        return {name: float(values[name]) for name in METRIC_NAMES}

    def _counts(self):
        return (0, 0, 0) if self.counts is None else tuple(int(c) for c in self.counts.cpu())

    def summary(self):
        """Both aggregations plus the counts, ready for JSON."""
        num_pixels, num_invalid, num_images = self._counts()
        return {
            "per_image": self.compute("per_image"),
            "pooled": self.compute("pooled"),
            "num_images": num_images,
            "num_valid_pixels": num_pixels,
            "num_invalid_pixels": num_invalid,
        }


# pragma: no mutate start (outside mutation testing: the table's layout)
def format_table(values, markdown=False):
    """Metrics as a two-line table (titles, values) in the README's column order (delta1 delta2
    delta3 rel rms log10), then sq_rel, rms_log and silog; as Markdown, only the README's six columns, each
    title with its better direction, ready to paste into a README."""
    names = [name for name in (README_COLUMNS if markdown else METRIC_NAMES) if name in values]
    titles = [COLUMN_TITLES.get(name, name) for name in names]
    if markdown:  # three decimals, as the published tables
        titles = [f"{title} {'↓' if name in LOWER_IS_BETTER else '↑'}" for title, name in zip(titles, names)]
        rows = [titles, ["---"] * len(names), [f"{values[name]:.3f}" for name in names]]
        return "\n".join("| " + " | ".join(row) + " |" for row in rows)
    cells = [f"{values[name]:.4f}" for name in names]
    widths = [max(len(t), len(c)) for t, c in zip(titles, cells)]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in (titles, cells))


# pragma: no mutate end
