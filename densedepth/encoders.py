"""ImageNet encoders for DenseDepth's decoder: torchvision's classification networks, each giving its
features at strides 2, 4, 8, 16 and 32 of the input through one interface (an encoder module whose
forward returns that list, and whose `channels` say how deep each is).

DenseNets keep the paper's skips: the outputs of relu0 (stride 2), pool0 (4), transition1 (8) and
transition2 (16), then norm5 (32), so that densenet169 is the paper's network, weight for weight, and
reads the checkpoints and the authors' files it always read. Every other encoder is cut where
torchvision's own feature extraction (create_feature_extractor) is told: for each stride, the last of
the network's stages (its `features` children, or its children before the global pooling) that works
at that stride, found by running a small picture through them, not named by hand per model. An
encoder without a stage at stride 2 (ConvNeXt starts at 4) gets the picture itself, averaged 2x2.

ImageNet weights come through torchvision's weights API and are downloaded once into torch's cache
(torch.hub.get_dir()/checkpoints); offline, WeightsUnavailableError says which file to put where.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from utils import UserError

STRIDES = (2, 4, 8, 16, 32)
DENSENET_SKIPS = ("relu0", "pool0", "transition1", "transition2")  # strides 2, 4, 8, 16; then the trunk's end
PROBE_SIZE = 64  # the picture run through a network's stages to find each one's stride


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder's recommended decoder width (the first decoder convolution's channels over the
    encoder's deepest ones) and what it is for, in a few words."""

    decoder_width: float
    use: str


ENCODERS = {
    "densenet121": EncoderSpec(1.0, "DenseDepth's decoder on the smallest DenseNet"),
    "densenet161": EncoderSpec(0.5, "BTS's encoder"),
    "densenet169": EncoderSpec(1.0, "the paper's model (the default; reads the authors' .h5 files)"),
    "densenet201": EncoderSpec(0.5, "the deepest DenseNet"),
    "resnet50": EncoderSpec(0.5, "the common baseline"),
    "efficientnet_b0": EncoderSpec(0.5, "a light encoder of good accuracy"),
    "efficientnet_b5": EncoderSpec(0.5, "a strong encoder, slow on a CPU"),
    "efficientnet_v2_s": EncoderSpec(0.5, "a strong encoder that trains fast on a GPU"),
    # 0.134: 128 decoder channels (int(960 x 0.134)), then 64, 32, 16 and 8, each a multiple of 8, as
    # onnxruntime's blocked (NCHWc) convolutions want them: 0.125's 120, 60, 30, 15 and 7 ran slower
    "mobilenet_v3_large": EncoderSpec(0.134, "the light model: live depth on a laptop CPU"),
    "convnext_tiny": EncoderSpec(1.0, "a modern encoder of ResNet-50's cost"),
    "convnext_base": EncoderSpec(1.0, "the strongest here, for a GPU"),
}
DEFAULT_ENCODER = "densenet169"
LIGHT_ENCODER = "mobilenet_v3_large"


class WeightsUnavailableError(UserError):
    """The ImageNet encoder weights could not be downloaded."""


def check_encoder(name, source="--encoder"):
    """Stop with the list of encoders if `name` is not one of them."""
    if name not in ENCODERS:
        raise UserError(f"{source} {name!r} is not an encoder this code builds; it builds {', '.join(ENCODERS)}")


def imagenet_classifier(name, pretrained):
    """torchvision's classification network `name`, with its default ImageNet weights if asked; offline,
    a WeightsUnavailableError naming the file and where to put it."""
    check_encoder(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        return torchvision.models.get_model(name, weights=weights)
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        file_name = weights.url.rsplit("/", 1)[-1]
        cache_dir = f"{torch.hub.get_dir()}/checkpoints"
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights for {name} ({err}); copy {file_name} from {weights.url} "
            f"into {cache_dir}/ or pass --no_pretrained to train from scratch"
        ) from err


def build_encoder(name, pretrained=False):
    """The encoder `name`: a module whose forward returns the features at STRIDES, and whose
    `channels` lists their depths. Its BatchNorms keep running statistics with PyTorch's default
    momentum, 0.1: torchvision's MobileNetV3 uses 0.01, which leaves them near their start for
    thousands of steps, so that a model trained from scratch for minutes validates as a constant."""
    network = imagenet_classifier(name, pretrained)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    if name.startswith("densenet"):
        return DenseNetEncoder(network.features)
    return StageEncoder(network)


class DenseNetEncoder(nn.Sequential):
    """A DenseNet's `features` trunk (its children under their own names, as the paper's model and its
    checkpoints have them), returning the paper's skips and the trunk's end."""

    def __init__(self, features):
        super().__init__(OrderedDict(features.named_children()))
        was_training = self.training
        self.eval()  # a probe in training mode would move every BatchNorm's ImageNet statistics
        with torch.no_grad():
            self.channels = [feature.shape[1] for feature in self(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))]
        self.train(was_training)

    def forward(self, x):
        features = []
        for name, layer in self.named_children():
            x = layer(x)
            if name in DENSENET_SKIPS:
                features.append(x)
        return [*features, x]


class StageEncoder(nn.Module):
    """A classification network cut by torchvision's create_feature_extractor at the last of its stages
    working at each of STRIDES (stage_strides); the picture itself, averaged 2x2, where no stage works
    at stride 2."""

    def __init__(self, network):
        super().__init__()
        stages = stage_strides(network)
        last_at = {stride: name for name, stride, _ in stages}
        channels = {stride: depth for _, stride, depth in stages}
        missing = [stride for stride in STRIDES[1:] if stride not in last_at]
        if missing:
            raise ValueError(f"{type(network).__name__} has no stage at stride {missing[0]}")
        self.picture_at_stride_2 = 2 not in last_at
        nodes = {last_at[stride]: str(stride) for stride in STRIDES if stride in last_at}
        network.eval()  # traced in eval mode; train() and eval() still switch its layers afterwards
        self.body = create_feature_extractor(network, return_nodes=nodes)
        self.channels = [3 if self.picture_at_stride_2 and stride == 2 else channels[stride] for stride in STRIDES]

    def forward(self, x):
        features = list(self.body(x).values())
        if self.picture_at_stride_2:
            features.insert(0, F.avg_pool2d(x, 2))
        return features


def stages(network):
    """(qualified name, module) of a torchvision classification network's stages in the order they run:
    its `features` children, or else its children up to its global pooling."""
    if isinstance(getattr(network, "features", None), nn.Sequential):
        return [(f"features.{name}", module) for name, module in network.features.named_children()]
    found = []
    for name, module in network.named_children():
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return found
        found.append((name, module))
    raise ValueError(f"{type(network).__name__} has no global pooling to cut its stages at")


def stage_strides(network):
    """(name, stride, channels) of each stage of `network`, by running a PROBE_SIZE picture through them."""
    x, found = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE), []
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for name, module in stages(network):
            x = module(x)
            found.append((name, PROBE_SIZE // x.shape[-1], x.shape[1]))
    network.train(was_training)
    return found
