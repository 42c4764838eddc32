"""torch.hub entry point: DenseDepth with the settings of the weights it is given.

    import torch
    model = torch.hub.load("OWNER/REPO", "densedepth", weights="nyu.h5")            # a local file
    model = torch.hub.load("OWNER/REPO", "densedepth", weights="https://host/model.pth")  # or a URL
    depth = torch.hub.load("OWNER/REPO", "densedepth", weights="nyu.pth", metres=True)
    depth_m = depth(pictures)  # (N, 3, H, W) RGB in [0, 1], any size -> (N, 1, H, W) metres
    light = torch.hub.load("OWNER/REPO", "densedepth", encoder="mobilenet_v3_large")  # random weights

weights: a checkpoint of this project (train.py, convert_weights.py) or the DenseDepth
authors' nyu.h5 / kitti.h5, as a path or a URL (downloaded once into torch.hub's cache);
this repository hosts none; the checkpoint says its encoder. Without weights the model is
randomly initialised on `encoder` (densenet169, the paper's, by default).
"""

from pathlib import Path
from urllib.parse import urlparse

import torch

dependencies = ["torch", "torchvision", "numpy", "h5py"]


def densedepth(weights=None, metres=False, dataset=None, encoder="densenet169"):
    """DenseDepth in eval mode: the network (pictures in [0, 1] -> its target y at half size,
    model.depth_range converts), or with metres=True one module from pictures to depth in metres
    at their size. dataset ('nyu' or 'kitti') names an .h5's depth range when its name does not."""
    from densedepth.deploy import DepthInMetres
    from densedepth.weights import load_weights
    from model import DenseDepth, model_from_checkpoint, variant_for

    if weights is None:
        model = DenseDepth(encoder=encoder, variant=variant_for(encoder))  # as train.py builds it
    else:  # the checkpoint records its encoder
        path = _local_copy(str(weights))
        model = model_from_checkpoint(load_weights(path, dataset), path)
    model.eval()
    return DepthInMetres(model, uint8_input=False).eval() if metres else model


def _local_copy(weights):
    """A URL's file in torch.hub's cache (downloaded if not there yet); a path as it is."""
    if urlparse(weights).scheme not in ("http", "https"):
        return weights
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights).path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights, str(target), progress=True)
    return str(target)
