"""Depth of a picture from any model file: what evaluate.py --img and demo.py share.

load_model opens this project's checkpoints, the authors' Keras .h5 files and exported .onnx
models; depth_of_picture runs the prediction step of the protocol at about the area the model
was trained at; picture_outputs makes the files written for a picture (colour map, 16-bit PNG,
.npy in metres, side by side, point cloud), so every front end writes the same files.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse
from torch.nn.utils.fusion import fuse_conv_bn_eval

from data import encode_picture, encode_test_depth_png, scaled_intrinsics
from densedepth.deploy import OnnxDepthModel
from densedepth.depth import NYU_DEPTH_RANGE
from densedepth.protocol import network_size, predict_depth_m
from densedepth.visualize import backproject, depth_picture, ply_bytes, png_bytes, side_by_side
from densedepth.weights import describe, is_keras_file, load_weights
from model import model_from_checkpoint
from utils import autocast


def load_model(path, device):
    """The model stored in a checkpoint (or the authors' Keras .h5), in eval mode and channels_last
    on `device`, or an exported .onnx run by onnxruntime; and its training input size."""
    if Path(path).suffix.lower() == ".onnx":  # an exported model, run by onnxruntime
        model = OnnxDepthModel(path)
        print(f"{path}: an exported model run by onnxruntime on the CPU, depth {model.depth_range.min_m:g} to "
              f"{model.depth_range.max_m:g} m")  # fmt: skip
        return model, model.input_size
    checkpoint = load_weights(path)
    if is_keras_file(path):
        print(describe(checkpoint))
    model = fold_batchnorms(model_from_checkpoint(checkpoint, path).eval())
    return model.to(device, memory_format=torch.channels_last), tuple(checkpoint["config"]["input_size"])


def fold_batchnorms(model):
    """`model` (in eval mode) for prediction: each BatchNorm2d of its encoder that directly follows a
    convolution folded into that convolution's weights, by torch.fx's conv-BN fusion on the encoder's
    traced graph. The same depth to rounding, one pass less over each feature map and, under bf16
    autocast, no fp32 round trip between the convolutions (MobileNet, EfficientNet, ResNet). DenseNets
    normalise before they convolve: only their first convolution's BatchNorm folds."""
    body = getattr(model.encoder, "body", None)
    if isinstance(body, torch.fx.GraphModule):  # the pairs the trace sees (ResNet's)
        model.encoder.body = fuse(body.eval(), inplace=True, no_trace=True)
    for sequence in [module for module in model.modules() if isinstance(module, torch.nn.Sequential)]:
        names = list(sequence._modules)  # the pairs inside the trace's leaves (torchvision's Conv2dNormActivation)
        for conv_name, norm_name in zip(names, names[1:]):
            conv, norm = sequence._modules[conv_name], sequence._modules[norm_name]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                sequence._modules[conv_name] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                sequence._modules[norm_name] = torch.nn.Identity()
    return model


def depth_of_pictures(model, images, input_size, device, dtype, flip=True):
    """Depth in metres (N, H, W) float32 numpy of (N, 3, H, W) uint8 pictures of one size: the
    network runs at about its trained area with the pictures' aspect ratio (network_size), and the
    depth comes back at the pictures' own size."""
    size = tuple(images.shape[-2:])
    with torch.inference_mode(), autocast(device, dtype):
        depth_m = predict_depth_m(model, images.to(device), network_size(size, input_size), size, flip)
    return depth_m[:, 0].float().cpu().numpy()


@dataclass(frozen=True)
class PictureOptions:
    """What is written for a picture besides its depth: the colour map's range in metres (None: the
    picture's own), colour map and colour bar, and on request side by side and a point cloud (with
    the camera's fx, fy, cx, cy in the picture's pixels; None: NYU's, scaled)."""

    colour_range_m: tuple | None = None
    cmap: str = "plasma"
    colorbar: bool = False
    side_by_side: bool = False
    ply: bool = False
    intrinsics: tuple | None = None

    @classmethod
    def from_args(cls, args):
        """evaluate.py's flags."""
        return cls(args.depth_range, args.cmap, args.colorbar, args.side_by_side, args.ply, args.intrinsics)


def picture_outputs(image, depth_m, options, max_depth_m=NYU_DEPTH_RANGE.max_m):
    """The files written for one picture, {suffix: contents}: colour map, millimetres (for a model whose
    depth can pass 65.5 m, as KITTI's, metres x 256 instead), metres, and as `options` (PictureOptions)
    ask, side by side and point cloud. image: (H, W, 3) uint8; depth_m: (H, W) float32."""
    vmin, vmax = options.colour_range_m or (None, None)
    colour = depth_picture(depth_m, vmin, vmax, options.cmap, with_colorbar=options.colorbar)
    buffer = io.BytesIO()
    np.save(buffer, depth_m.astype(np.float32))
    files = {"_depth.png": png_bytes(colour)}
    if max_depth_m * 1000 <= np.iinfo(np.uint16).max:
        files["_depth_mm.png"] = encode_test_depth_png(depth_m)  # NYU's test-depth format: 10 m fits
    else:  # millimetres overflow 16 bits past 65.5 m: KITTI's own convention
        files["_depth_256.png"] = encode_picture(np.clip(np.rint(depth_m * 256), 0, 65535).astype(np.uint16), "PNG")
    files["_depth_m.npy"] = buffer.getvalue()
    if options.side_by_side:
        files["_side_by_side.png"] = png_bytes(side_by_side(image, colour))
    if options.ply:
        intrinsics = options.intrinsics or scaled_intrinsics(*depth_m.shape)
        files[".ply"] = ply_bytes(backproject(depth_m, intrinsics), image.reshape(-1, 3))
    return files


OUTPUT_KINDS = {
    "_depth.png": "colour map, near = dark",
    "_depth_mm.png": "16-bit PNG, millimetres",
    "_depth_256.png": "16-bit PNG, metres x 256 as KITTI's",
    "_depth_m.npy": "float32, metres",
    "_side_by_side.png": "picture | depth",
    ".ply": "point cloud, metres",
}
