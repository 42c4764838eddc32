"""DenseDepth: a DenseNet-169 encoder and an upsampling decoder with skip connections.

The network takes RGB images in [0, 1] (N, 3, H, W) and returns the depth target
y = MAX_DEPTH_CM / depth_cm at half the input resolution (N, 1, H/2, W/2).
`target_to_depth_m` and `depth_m_to_target` are the one place where that
parametrisation and its inverse live; training, evaluation and prediction all
go through them.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet169_Weights, densenet169

from utils import UserError

MIN_DEPTH_CM = 10.0
MAX_DEPTH_CM = 1000.0
MIN_DEPTH_M = MIN_DEPTH_CM / 100
MAX_DEPTH_M = MAX_DEPTH_CM / 100
# Value range of the target y (1 .. 100); the SSIM constants are built from it.
TARGET_RANGE = MAX_DEPTH_CM / MIN_DEPTH_CM

ENCODER_CHANNELS = 1664
# DenseNet-169 trunk layers whose outputs feed the decoder, deepest first, with
# their channel counts: 1/16, 1/8, 1/4 and 1/2 of the input resolution.
SKIP_LAYERS = (("transition2", 256), ("transition1", 128), ("pool0", 64), ("relu0", 64))
SKIP_NAMES = {name for name, _ in SKIP_LAYERS}
# The encoder downsamples 32x; other input sizes are padded up to a multiple.
SIZE_MULTIPLE = 32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(UserError):
    """The ImageNet encoder weights could not be downloaded."""


def depth_m_to_target(depth_m):
    """Metric depth -> network target y = 1000 / depth_cm, depth clipped to [10, 1000] cm."""
    depth_cm = (depth_m * 100).clamp(MIN_DEPTH_CM, MAX_DEPTH_CM)
    return MAX_DEPTH_CM / depth_cm


def target_to_depth_m(target):
    """Network output y -> metric depth, clipped to [0.1, 10] m as in DenseDepth."""
    depth_cm = (MAX_DEPTH_CM / target).clamp(MIN_DEPTH_CM, MAX_DEPTH_CM)
    return depth_cm / 100


class UpBlock(nn.Module):
    """Bilinear upsample to the skip's size, concatenate it, then two 3x3 conv + LeakyReLU(0.2)."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1)
        self.conv_b = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x, skip):
        # align_corners=True as in the DenseDepth authors' own PyTorch port.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = self.act(self.conv_a(torch.cat([x, skip], dim=1)))
        return self.act(self.conv_b(x))


class DenseDepth(nn.Module):
    """DenseDepth (Alhashim & Wonka, 2018).

    decoder_width scales the decoder: 1.0 is the paper's model (first decoder
    conv 1664 -> 1664, about 42.6 M parameters in total); the original Keras
    code's default is 0.5.
    """

    def __init__(self, decoder_width=1.0, pretrained=False):
        super().__init__()
        if decoder_width <= 0:
            raise ValueError(f"decoder_width must be positive, got {decoder_width}")
        self.decoder_width = decoder_width
        self.encoder = build_encoder(pretrained)
        channels = int(ENCODER_CHANNELS * decoder_width)
        self.bottleneck = nn.Conv2d(ENCODER_CHANNELS, channels, kernel_size=1)
        blocks = []
        for _, skip_channels in SKIP_LAYERS:
            blocks.append(UpBlock(channels, skip_channels, channels // 2))
            channels //= 2
        self.up_blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels, 1, 3, padding=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image):
        """image: (N, 3, H, W) in [0, 1], any H, W. Returns y: (N, 1, ceil(H/2), ceil(W/2))."""
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, SIZE_MULTIPLE)
        # The paper fed [0, 1] images to an encoder trained on normalised ones;
        # normalising here lets the ImageNet weights see what they were trained on.
        x = (x - self.mean) / self.std
        skips = {}
        for name, layer in self.encoder.named_children():
            x = layer(x)
            if name in SKIP_NAMES:
                skips[name] = x
        # Keras' DenseNet-169, which the paper used, ends with a ReLU after norm5.
        x = self.bottleneck(F.relu(x))
        for (skip_name, _), block in zip(SKIP_LAYERS, self.up_blocks):
            x = block(x, skips[skip_name])
        y = self.head(x)
        return y[..., : (height + 1) // 2, : (width + 1) // 2]


def build_encoder(pretrained):
    """DenseNet-169 `features` trunk from torchvision, with ImageNet weights if asked."""
    weights = DenseNet169_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        return densenet169(weights=weights).features
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        file_name = weights.url.rsplit("/", 1)[-1]
        cache_dir = f"{torch.hub.get_dir()}/checkpoints"
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights for DenseNet-169 ({err}); "
            f"copy {file_name} from {weights.url} into {cache_dir}/ "
            "or pass --no_pretrained to train from scratch"
        ) from err


def model_config(model, input_size):
    """What a checkpoint holds to rebuild and use the model: architecture, width, training size, depth range."""
    return {
        "architecture": "DenseDepth",
        "encoder": "densenet169",
        "decoder_width": model.decoder_width,
        "input_size": list(input_size),
        "depth_target": "1000 / depth_cm",
        "min_depth_m": MIN_DEPTH_M,
        "max_depth_m": MAX_DEPTH_M,
    }


def model_from_checkpoint(checkpoint, source):
    """The DenseDepth model saved in a checkpoint dict (train.py's format), on the CPU."""
    config = checkpoint["config"]
    expected = {
        "architecture": "DenseDepth",
        "encoder": "densenet169",
        "min_depth_m": MIN_DEPTH_M,
        "max_depth_m": MAX_DEPTH_M,
    }
    for key, value in expected.items():
        if config.get(key, value) != value:  # older checkpoints leave these out
            raise UserError(f"checkpoint {source} has {key} {config[key]!r}; this code's model has {value!r}")
    width = config["decoder_width"]
    model = DenseDepth(width)
    mismatch = _state_mismatch(model.state_dict(), checkpoint["model"])
    if mismatch:
        raise UserError(f"checkpoint {source} does not fit a DenseDepth model with decoder width {width}: {mismatch}")
    model.load_state_dict(checkpoint["model"])
    return model


def _state_mismatch(expected, found):
    """What first differs between two state dicts, in words; '' if they match in names and shapes."""
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    if missing or unexpected:
        example = f"{min(missing)} is missing" if missing else f"{min(unexpected)} is not in the model"
        return f"{len(missing)} weights missing and {len(unexpected)} unexpected, e.g. {example}"
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            return f"{name} is {tuple(found[name].shape)} in the checkpoint, {tuple(tensor.shape)} in the model"
    return ""


def pad_to_multiple(image, multiple):
    """Replicate-pad the bottom and right edges so both sides are multiples of `multiple`."""
    height, width = image.shape[-2:]
    pad_bottom = -height % multiple
    pad_right = -width % multiple
    if pad_bottom == 0 and pad_right == 0:
        return image
    return F.pad(image, (0, pad_right, 0, pad_bottom), mode="replicate")


def count_parameters(module):
    """Number of parameters in a module."""
    return sum(p.numel() for p in module.parameters())


def output_size(input_size):
    """The network's output size (half, rounded up) for an input of size (height, width)."""
    return ((input_size[0] + 1) // 2, (input_size[1] + 1) // 2)


def resize(images, size):
    """Bilinear resize of (N, C, H, W) images to size (h, w); antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def to_unit_range(images):
    """uint8 pictures -> float in [0, 1]; float ones are taken to be in [0, 1] already."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def predict_depth_m(model, images, input_size, out_size, flip=True, channels_last=True):
    """Metric depth (N, 1, *out_size) for images (N, 3, H, W), uint8 or in [0, 1]: the DenseDepth protocol.

    The images are resized to the network's input size; with flip=True the
    mirrored copies go through the network in the same batch and their
    predictions, mirrored back, are averaged with the originals. Each
    prediction is converted to metres (clipped to [0.1, 10] m) and upsampled
    bilinearly to out_size before averaging, as in DenseDepth's evaluation.
    Run it inside the caller's autocast context; the depth comes out in float32.
    """
    images = resize(to_unit_range(images), input_size)
    batch = torch.cat([images, images.flip(-1)]) if flip else images
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    depth_m = resize(target_to_depth_m(model(batch).float()), out_size)
    if flip:
        depth_m, mirrored = depth_m.chunk(2)
        depth_m = (depth_m + mirrored.flip(-1)) / 2
    return depth_m
