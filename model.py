"""DenseDepth: an ImageNet encoder (DenseNet-169 in the paper; any of densedepth/encoders.py's) and an
upsampling decoder with skip connections at strides 2, 4, 8 and 16, its widths derived from the
encoder's channels.

The network takes RGB images in [0, 1] (N, 3, H, W) and returns the depth target
y = max_depth / depth at half the input resolution (N, 1, H/2, W/2): for NYU Depth
v2, y = 1000 / depth_cm with depth in [10, 1000] cm. A model's `depth_range` (densedepth/depth.py) holds
that parametrisation and its inverse (`depth_m_to_target`, `target_to_depth_m`);
training, evaluation and prediction all go through them. A model's `variant` holds
the details in which the authors' released Keras models differ from this project's
own (densedepth/weights.py reads them from each file).
"""

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from densedepth.depth import NYU_DEPTH_RANGE, DepthRange
from densedepth.encoders import DEFAULT_ENCODER, ENCODERS, build_encoder
from utils import UserError


@dataclass(frozen=True)
class Variant:
    """Details in which DenseDepth models differ. The defaults are this project's model; the
    authors' released nyu.h5 and kitti.h5 take [0, 1] pictures without normalisation, have
    one LeakyReLU per up block and Keras' BatchNorm epsilon, and say in their model_config
    whether the trunk ends with a ReLU."""

    imagenet_normalization: bool = True  # inputs normalised with ImageNet's mean and std inside the model
    trunk_relu: bool = True  # a ReLU after the trunk's last BatchNorm (norm5 / Keras' bn)
    leaky_relu_after_conv_a: bool = True  # LeakyReLU after both convs of an up block, or after the second only
    batchnorm_eps: float = 1e-5  # torchvision's; Keras' DenseNet uses 1.001e-5
    align_corners: bool = True  # decoder upsampling: corner-aligned (TF1's align_corners=True) or half-pixel
    # How the decoder's 3x3 convolutions pad: with zeros (the paper's, the authors' weights') or by repeating the
    # border pixels, which spares a model trained from scratch in minutes the bright dots zeros leave in its
    # corners (docs/training.md#the-quick-starts-recipe).
    decoder_padding: str = "zeros"


DECODER_PADDINGS = ("zeros", "replicate")


# The encoders downsample 32x; other input sizes are padded up to a multiple.
SIZE_MULTIPLE = 32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UpBlock(nn.Module):
    """Bilinear upsample to the skip's size, concatenate it, then two 3x3 convs, each followed by
    LeakyReLU(0.2) (or only the second, as in the authors' released models)."""

    def __init__(self, in_channels, skip_channels, out_channels, variant=Variant()):
        super().__init__()
        self.conv_a = decoder_conv(in_channels + skip_channels, out_channels, variant)
        self.conv_b = decoder_conv(out_channels, out_channels, variant)
        self.act = nn.LeakyReLU(0.2)
        self.leaky_relu_after_conv_a = variant.leaky_relu_after_conv_a
        self.align_corners = variant.align_corners

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        x = self.conv_a(torch.cat([x, skip], dim=1))
        if self.leaky_relu_after_conv_a:
            x = self.act(x)
        return self.act(self.conv_b(x))


class DenseDepth(nn.Module):
    """DenseDepth (Alhashim & Wonka, 2018) on the encoder `encoder` (densedepth/encoders.py).

    decoder_width scales the decoder: its first convolution maps the encoder's deepest features to
    decoder_width times their channels, and each up block halves them; None: the encoder's
    recommended width. On densenet169, 1.0 is the paper's model (1664 -> 1664, about 42.6 M
    parameters in total) and 0.5 the original Keras code's default. depth_range sets the target's
    parametrisation; variant the details in which the authors' released models differ.
    """

    def __init__(self, decoder_width=None, pretrained=False, depth_range=NYU_DEPTH_RANGE, variant=Variant(),
                 encoder=DEFAULT_ENCODER):  # fmt: skip
        super().__init__()
        decoder_width = ENCODERS[encoder].decoder_width if decoder_width is None else decoder_width
        if decoder_width <= 0:
            raise ValueError(f"decoder_width must be positive, got {decoder_width}")
        if variant.decoder_padding not in DECODER_PADDINGS:
            raise ValueError(f"decoder_padding must be one of {DECODER_PADDINGS}, got {variant.decoder_padding!r}")
        self.decoder_width = decoder_width
        self.depth_range = depth_range
        self.variant = variant
        self.encoder_name = encoder
        self.encoder = build_encoder(encoder, pretrained)
        if variant.batchnorm_eps != 1e-5:
            for module in self.encoder.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eps = variant.batchnorm_eps
        *skip_channels, deepest = self.encoder.channels
        channels = int(deepest * decoder_width)
        self.bottleneck = nn.Conv2d(deepest, channels, kernel_size=1)
        blocks = []
        for skip in reversed(skip_channels):  # strides 16, 8, 4, 2
            blocks.append(UpBlock(channels, skip, channels // 2, variant))
            channels //= 2
        self.up_blocks = nn.ModuleList(blocks)
        self.head = decoder_conv(channels, 1, variant)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image):
        """image: (N, 3, H, W) in [0, 1], any H, W. Returns y: (N, 1, ceil(H/2), ceil(W/2))."""
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, SIZE_MULTIPLE)
        if self.variant.imagenet_normalization:
            # The paper fed [0, 1] images to an encoder trained on normalised ones;
            # normalising here lets the ImageNet weights see what they were trained on.
            x = (x - self.mean) / self.std
        *skips, x = self.encoder(x)
        if self.variant.trunk_relu:  # DenseNet's classifier (and Keras' DenseNet-169) applies a ReLU to norm5
            x = F.relu(x)
        x = self.bottleneck(x)
        for skip, block in zip(reversed(skips), self.up_blocks):
            x = block(x, skip)
        y = self.head(x)
        return y[..., : (height + 1) // 2, : (width + 1) // 2]


def decoder_conv(in_channels, out_channels, variant):
    """A 3x3 convolution of the decoder, keeping the size, padded as the variant says."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode=variant.decoder_padding)


# What a checkpoint config that leaves a Variant field out means by it. Configs used to hold only the
# fields that differed from the defaults of the time; these are those defaults, frozen, so that a default
# changed later cannot reinterpret them. A field added to Variant gets here the behaviour before it existed.
LEGACY_VARIANT = {
    "imagenet_normalization": True,
    "trunk_relu": True,
    "leaky_relu_after_conv_a": True,
    "batchnorm_eps": 1e-5,
    "align_corners": True,
    "decoder_padding": "zeros",
}


def settings_config(decoder_width, input_size, depth_range=NYU_DEPTH_RANGE, variant=Variant(), encoder=DEFAULT_ENCODER):
    """What a checkpoint holds to rebuild and use a model: architecture, encoder, width, training size,
    depth range, and every one of the variant's settings (so its meaning does not hang on defaults)."""
    return {
        "architecture": "DenseDepth",
        "encoder": encoder,
        "decoder_width": decoder_width,
        "input_size": list(input_size),
        "depth_target": f"{depth_range.max_m * 100:g} / depth_cm",
        "min_depth_m": depth_range.min_m,
        "max_depth_m": depth_range.max_m,
        **asdict(variant),
    }


def model_config(model, input_size):
    """settings_config() of a model trained at input_size."""
    return settings_config(model.decoder_width, input_size, model.depth_range, model.variant, model.encoder_name)


def variant_for(encoder, **settings):
    """The Variant a new model on `encoder` is built with: DenseNets keep the ReLU their classifier applies
    to the trunk's end (the paper's model has it); the other encoders' features are used as they come."""
    return Variant(trunk_relu=encoder.startswith("densenet"), **settings)


def variant_from_config(config):
    """The Variant a checkpoint's config describes; a setting left out (an older checkpoint's) is
    LEGACY_VARIANT's, what it meant when that checkpoint was written."""
    return Variant(**{item.name: config.get(item.name, LEGACY_VARIANT[item.name]) for item in fields(Variant)})


def model_from_checkpoint(checkpoint, source):
    """The DenseDepth model saved in a checkpoint dict (train.py's or convert_weights.py's format), on the
    CPU, on the encoder its config names (densenet169 for checkpoints from before there was a choice)."""
    config = checkpoint["config"]
    if config.get("architecture", "DenseDepth") != "DenseDepth":
        raise UserError(f"checkpoint {source} has architecture {config['architecture']!r}; this code's is DenseDepth")
    encoder = config.get("encoder", DEFAULT_ENCODER)
    if encoder not in ENCODERS:
        raise UserError(f"checkpoint {source} has encoder {encoder!r}, which this code does not build; it builds "
                        f"{', '.join(ENCODERS)}")  # fmt: skip
    width = config["decoder_width"]
    try:
        depth_range = DepthRange(config["min_depth_m"], config["max_depth_m"])
    except ValueError as err:
        raise UserError(f"checkpoint {source}: {err}") from err
    model = DenseDepth(width, depth_range=depth_range, variant=variant_from_config(config), encoder=encoder)
    mismatch = _state_mismatch(model.state_dict(), checkpoint["model"])
    if mismatch:
        raise UserError(f"checkpoint {source} does not fit a DenseDepth model on {encoder} with decoder width "
                        f"{width}: {mismatch}")  # fmt: skip
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
    """Replicate-pad the bottom and right edges so both sides are multiples of `multiple`.

    No shortcut for sizes that need no padding: a branch on the size would freeze the
    padding at the size an exported model (ONNX, TorchScript) was traced with.
    """
    height, width = image.shape[-2:]
    return F.pad(image, (0, -width % multiple, 0, -height % multiple), mode="replicate")


def count_parameters(module):
    """Number of parameters in a module."""
    return sum(p.numel() for p in module.parameters())


def output_size(input_size):
    """The network's output size (half, rounded up) for an input of size (height, width)."""
    return ((input_size[0] + 1) // 2, (input_size[1] + 1) // 2)
