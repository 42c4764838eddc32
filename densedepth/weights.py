"""Model weights from files: this project's checkpoints and the DenseDepth authors' Keras models.

The authors published their trained models as Keras HDF5 files, nyu.h5 (NYU Depth v2)
and kitti.h5 (KITTI). They are read here with h5py alone: the arrays, and the
`model_config` JSON that says how the layers connect. Nothing in the file is run (no
Keras deserialisation, no pickle), and neither Keras nor TensorFlow is needed.

What is read from each file rather than assumed:
- that it is DenseDepth on a DenseNet-169 trunk (its layer names and dense block sizes);
- the decoder width (conv2's filters: 1664 in the released files, 832 in the code's default);
- whether the trunk ends with a ReLU after `bn` (newer keras_applications add one);
- whether each up block has a LeakyReLU after convA too, or after convB only (the
  released files: after convB only);
- the BatchNorm epsilon, the upsampling (the authors' BilinearUpSampling2D, TF1
  `resize_images(align_corners=True)`, or Keras' bilinear UpSampling2D, half-pixel),
  and that nothing normalises the [0, 1] input before the encoder.
What a file does not say: the depth range it was trained for. NYU's is 0.1 to 10 m, KITTI's
1 to 80 m (the first author, DenseDepth tracker issue #69); a file whose name holds "kitti"
is taken to be KITTI's, any other NYU's, unless the caller names the dataset.

Layer names: keras_applications of Keras 2.2.4 writes `conv1/conv`, `conv1/bn`,
`conv1/relu`; Keras 3 `conv1_conv` and so on. Both are read. Conv kernels are stored
(kh, kw, in, out) and become torch's (out, in, kh, kw); BatchNorm is stored as gamma,
beta, moving_mean, moving_variance.
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from densedepth.depth import KITTI_DEPTH_RANGE, NYU_DEPTH_RANGE
from model import Variant, settings_config, variant_from_config
from utils import HDF5_SIGNATURE, UserError, load_checkpoint

# The channels at the end of the authors' DenseNet-169 trunk (its `bn`), which their decoder's conv2 widens from.
TRUNK_CHANNELS = 1664

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras_h5")

# The datasets the authors released models for: the depth range each was trained with, and the
# input size a picture is brought to (NYU's 640x480; KITTI's 1242x375 frames rounded up to
# multiples of 32: our choice, their code does not say).
DATASETS = {
    "nyu": {"depth_range": NYU_DEPTH_RANGE, "input_size": (480, 640), "title": "NYU Depth v2"},
    "kitti": {"depth_range": KITTI_DEPTH_RANGE, "input_size": (384, 1248), "title": "KITTI"},
}

DENSENET169_BLOCKS = (6, 12, 32, 32)
# The decoder's skip connections, block by block: the Keras layer each up block concatenates.
KERAS_SKIPS = ("pool3_pool", "pool2_pool", "pool1", "conv1_relu")
DECODER_LAYERS = ("conv2", *(f"up{i}_conv{ab}" for i in range(1, 5) for ab in "AB"), "conv3")
# Keras weight names (the last part, without ':0') -> the name of the torch parameter or buffer.
KERAS_TO_TORCH_WEIGHT = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
BATCHNORM_WEIGHTS = {"gamma", "beta", "moving_mean", "moving_variance"}


def keras_to_torch_names():
    """Keras layer name (with '_' for '/') -> the DenseDepth module holding its weights."""
    names = {"conv1_conv": "encoder.conv0", "conv1_bn": "encoder.norm0", "bn": "encoder.norm5"}
    for block, size in enumerate(DENSENET169_BLOCKS, start=1):
        for layer in range(1, size + 1):
            keras, torch_name = f"conv{block + 1}_block{layer}", f"encoder.denseblock{block}.denselayer{layer}"
            names[f"{keras}_0_bn"] = f"{torch_name}.norm1"
            names[f"{keras}_1_conv"] = f"{torch_name}.conv1"
            names[f"{keras}_1_bn"] = f"{torch_name}.norm2"
            names[f"{keras}_2_conv"] = f"{torch_name}.conv2"
        if block < len(DENSENET169_BLOCKS):
            names[f"pool{block + 1}_bn"] = f"encoder.transition{block}.norm"
            names[f"pool{block + 1}_conv"] = f"encoder.transition{block}.conv"
    names["conv2"] = "bottleneck"
    for block in range(1, 5):
        names[f"up{block}_convA"] = f"up_blocks.{block - 1}.conv_a"
        names[f"up{block}_convB"] = f"up_blocks.{block - 1}.conv_b"
    names["conv3"] = "head"
    return names


def torch_conv_weight(kernel):
    """A Keras conv kernel (kh, kw, in, out) as torch's weight (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


# ----------------------------------------------------------------------------- reading any model file


def is_keras_file(path):
    """Whether `path` is (or, by its name, claims to be) an HDF5 file rather than a torch checkpoint."""
    path = Path(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return True
    try:
        with open(path, "rb") as file:
            return file.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def load_weights(path, dataset=None):
    """A checkpoint dict (model weights, config, args) from this project's checkpoint or the
    authors' Keras .h5 (converted on the fly; `dataset` as in keras_checkpoint)."""
    if is_keras_file(path):
        return keras_checkpoint(path, dataset)
    return load_checkpoint(path)


def guess_dataset(path):
    """The dataset a Keras file was trained on, from its name: 'kitti' if the name says so, else 'nyu'."""
    return "kitti" if "kitti" in Path(path).name.lower() else "nyu"


def keras_checkpoint(path, dataset=None):
    """The authors' Keras DenseDepth file as a checkpoint dict of this project (weights only,
    no optimizer), read without running anything from it.

    dataset: 'nyu' or 'kitti', which sets the depth range and input size; None guesses it
    from the file's name (guess_dataset).
    """
    path = Path(path)
    dataset = dataset or guess_dataset(path)
    h5py = _import_h5py(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as file:
        if file.read(8) != HDF5_SIGNATURE:
            raise UserError(f"{path} is not an HDF5 file, so not a Keras .h5 model (it lacks the HDF5 signature)")
    try:
        with h5py.File(path, "r") as file:
            layers = keras_layers(file, path)
            variant = read_variant(layers, path)
            arrays = read_arrays(file, path)
            versions = {key: _text(file.attrs.get(key, "?")) for key in ("keras_version", "backend")}
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py's errors for damaged or cut files
        raise UserError(f"{path} is damaged or truncated: HDF5 could not read it ({_first_line(err)})") from err
    decoder_width = read_decoder_width(arrays, path)
    settings = DATASETS[dataset]
    return {
        "model": torch_state(arrays, path),
        "config": settings_config(decoder_width, settings["input_size"], settings["depth_range"], variant),
        "args": {},
        "source": {"file": str(path), "format": "Keras HDF5", "dataset": dataset, **versions},
    }


def _import_h5py(path):
    try:
        import h5py
    except ImportError as err:
        raise UserError(f"reading {path} needs h5py, which is not installed: pip install h5py") from err
    return h5py


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


# ----------------------------------------------------------------------------- the model's structure


class KerasLayer:
    """One layer of a Keras model_config: its class, settings and the layers that feed it."""

    def __init__(self, entry):
        self.name = keras_name(entry.get("name") or entry["config"]["name"])
        self.class_name = entry["class_name"].split(">")[-1]  # Keras 3 writes custom classes as "package>Name"
        self.config = entry.get("config", {})
        self.inputs = [keras_name(name) for name in _inbound_names(entry.get("inbound_nodes", []))]

    def is_leaky_relu(self, slope=0.2):
        if self.class_name != "LeakyReLU":
            return False
        value = self.config.get("alpha", self.config.get("negative_slope"))  # Keras 2 / Keras 3
        return value is not None and abs(value - slope) < 1e-6


def keras_name(name):
    """keras_applications' `conv1/conv` and Keras 3's `conv1_conv` as one name."""
    return name.replace("/", "_")


def _inbound_names(nodes):
    """The names of the layers feeding a layer, from inbound_nodes in Keras 2's form
    ([[name, node, tensor, kwargs], ...] per node) or Keras 3's ({'args': [keras tensors]})."""
    names = []

    def walk(item):
        if isinstance(item, dict):
            history = (
                item.get("config", {}).get("keras_history") if item.get("class_name") == "__keras_tensor__" else None
            )
            if history:
                names.append(history[0])
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                names.append(item[0])
                return
            for value in item:
                walk(value)

    walk(nodes)
    return names


def keras_layers(file, path):
    """{name: KerasLayer} of the file's model_config, in the file's order."""
    raw = file.attrs.get("model_config")
    if raw is None:
        if "layer_names" in file.attrs:
            raise UserError(
                f"{path} holds Keras weights only (saved with save_weights), without the model_config that says "
                "which DenseDepth it is; use a file saved whole with model.save, as the authors' nyu.h5 and kitti.h5"
            )
        raise UserError(f"{path} is an HDF5 file but not a Keras model (it has no model_config)")
    try:
        config = json.loads(_text(raw))
        entries = config["config"]["layers"]
        layers = [KerasLayer(entry) for entry in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} has a model_config that is not a Keras functional model's ({err!r})") from err
    return {layer.name: layer for layer in layers}


def read_variant(layers, path):
    """The Variant of the DenseDepth model described by `layers`, checked to be one this code runs."""
    missing = [name for name in ("conv1_conv", "bn", *DECODER_LAYERS) if name not in layers]
    if missing:
        raise UserError(
            f"{path} is a Keras model, but not DenseDepth: it has no layer {missing[0]} (DenseDepth has a "
            "DenseNet trunk ending in bn, then conv2, up1_convA ... up4_convB and conv3)"
        )
    consumers = defaultdict(list)
    for layer in layers.values():
        for name in layer.inputs:
            consumers[name].append(layer)
    _check_input(layers, path)
    _check_decoder_convs(layers, path)
    _check_skips(layers, path)
    epsilons = {layer.config.get("epsilon") for layer in layers.values() if layer.class_name == "BatchNormalization"}
    if len(epsilons) != 1 or None in epsilons:
        raise UserError(f"{path}: its BatchNorm layers have epsilons {sorted(map(str, epsilons))}; expected one value")
    return Variant(
        imagenet_normalization=False,
        trunk_relu=_trunk_relu(layers, path),
        leaky_relu_after_conv_a=_leaky_relu_after_conv_a(layers, consumers, path),
        batchnorm_eps=float(epsilons.pop()),
        align_corners=_align_corners(layers, path),
    )


def _check_input(layers, path):
    """Nothing but zero padding between the input and the first convolution: DenseDepth's
    files take RGB in [0, 1] straight in."""
    layer = layers["conv1_conv"]
    while layer.inputs:
        layer = layers[layer.inputs[0]]
        if layer.class_name not in ("ZeroPadding2D", "InputLayer"):
            raise UserError(
                f"{path} passes its input through {layer.name} ({layer.class_name}) before the encoder; "
                "DenseDepth's files take RGB in [0, 1] straight in, and this code reads only those"
            )


def _trunk_relu(layers, path):
    """Whether conv2 takes the trunk's bn through a ReLU (newer keras_applications) or directly."""
    feeds = layers["conv2"].inputs
    if feeds == ["bn"]:
        return False
    if len(feeds) == 1:
        layer = layers[feeds[0]]
        if layer.class_name == "Activation" and layer.config.get("activation") == "relu" and layer.inputs == ["bn"]:
            return True
    raise UserError(f"{path}: its conv2 takes {feeds}, not the DenseNet trunk's bn or its ReLU, as DenseDepth's does")


def _leaky_relu_after_conv_a(layers, consumers, path):
    """Whether every up block has a LeakyReLU(0.2) after convA as well as after convB (checked)."""
    found = set()
    for block in range(1, 5):
        conv_a, conv_b = f"up{block}_convA", f"up{block}_convB"
        after_a = consumers[conv_a]
        if len(after_a) == 1 and after_a[0].name == conv_b:
            found.add(False)
        elif len(after_a) == 1 and after_a[0].is_leaky_relu() and layers[conv_b].inputs == [after_a[0].name]:
            found.add(True)
        else:
            raise UserError(
                f"{path}: {conv_a} feeds {[layer.name for layer in after_a]}, not {conv_b} or a LeakyReLU(0.2)"
            )
        after_b = consumers[conv_b]
        if len(after_b) != 1 or not after_b[0].is_leaky_relu():
            raise UserError(f"{path}: {conv_b} is not followed by a LeakyReLU(0.2), as in every DenseDepth model")
    if len(found) != 1:
        raise UserError(f"{path}: some up blocks have a LeakyReLU after convA and some do not")
    return found.pop()


def _check_decoder_convs(layers, path):
    for name in DECODER_LAYERS:
        activation = layers[name].config.get("activation", "linear")
        if activation != "linear":
            raise UserError(f"{path}: its {name} has a built-in {activation} activation, which DenseDepth's has not")


def _check_skips(layers, path):
    """Each up block concatenates (upsampled decoder, skip) with DenseDepth's skips, in that order."""
    for block, skip in enumerate(KERAS_SKIPS, start=1):
        concat = layers[layers[f"up{block}_convA"].inputs[0]]
        if concat.class_name != "Concatenate" or len(concat.inputs) != 2 or concat.inputs[1] != skip:
            raise UserError(
                f"{path}: up{block}_convA takes {concat.name} ({concat.class_name} of {concat.inputs}), not the "
                f"upsampled decoder concatenated with {skip} as in DenseDepth"
            )


def _align_corners(layers, path):
    """The decoder's upsampling: the authors' BilinearUpSampling2D (TF1 resize_images with
    align_corners=True, as the released files were trained) or Keras' bilinear UpSampling2D
    (half-pixel centres)."""
    kinds = set()
    for block in range(1, 5):
        concat = layers[layers[f"up{block}_convA"].inputs[0]]
        upsampling = layers[concat.inputs[0]]
        if upsampling.class_name == "BilinearUpSampling2D":
            kinds.add(True)
        elif upsampling.class_name == "UpSampling2D" and upsampling.config.get("interpolation") == "bilinear":
            kinds.add(False)
        else:
            raise UserError(
                f"{path}: up block {block} upsamples with {upsampling.name} ({upsampling.class_name}), "
                "not bilinearly as DenseDepth"
            )
    if len(kinds) != 1:
        raise UserError(f"{path}: its up blocks upsample in different ways")
    return kinds.pop()


# ----------------------------------------------------------------------------- the weights


def read_arrays(file, path):
    """{layer name: {weight kind: array}} of every layer with weights, e.g. {'conv2': {'kernel': ..., 'bias': ...}}."""
    root = file.get("model_weights", file)
    arrays = {}
    for layer_name in (_text(name) for name in root.attrs["layer_names"]):
        group = root[layer_name]
        weights = {}
        for weight_name in (_text(name) for name in group.attrs.get("weight_names", [])):
            kind = weight_name.rsplit("/", 1)[-1].split(":")[0]
            weights[kind] = np.asarray(group[weight_name], dtype=np.float32)
        if weights:
            arrays[keras_name(layer_name)] = weights
    return arrays


def read_decoder_width(arrays, path):
    """The decoder width factor, from conv2's filters (1664 -> width 1.0), checked against the encoder."""
    names = keras_to_torch_names()
    blocks = tuple(
        sum(1 for name in arrays if name.startswith(f"conv{block + 1}_block") and name.endswith("_2_conv"))
        for block in range(1, 5)
    )
    if blocks != DENSENET169_BLOCKS:
        counts = ", ".join(map(str, blocks))
        raise UserError(f"{path}: its encoder is not DenseNet-169 (dense blocks of {counts} layers, not 6, 12, 32, 32)")
    extra = sorted(arrays.keys() - names.keys())
    if extra:
        raise UserError(f"{path} has weights for a layer {extra[0]} that DenseDepth does not have")
    kernel_shape = arrays["conv2"]["kernel"].shape
    if kernel_shape[:3] != (1, 1, TRUNK_CHANNELS):
        raise UserError(f"{path}: its conv2 kernel is {kernel_shape}, not (1, 1, 1664, filters) as DenseDepth's")
    filters = kernel_shape[3]
    width = filters / TRUNK_CHANNELS
    for block in range(1, 5):
        expected = filters // 2**block
        found = arrays[f"up{block}_convA"]["kernel"].shape[3]
        if int(TRUNK_CHANNELS * width) != filters or found != expected:
            raise UserError(
                f"{path} is a DenseDepth file of a width this code does not build: conv2 has {filters} filters "
                f"and up{block}_convA {found}, where each up block halves them (1664, 832, 416, ... as DenseDepth)"
            )
    return width


def torch_state(arrays, path):
    """The DenseDepth state dict holding the file's weights."""
    state = {}
    for keras, module in keras_to_torch_names().items():
        weights = arrays.get(keras)
        if weights is None:
            raise UserError(f"{path} has no weights for its layer {keras}")
        expected = _expected_weights(keras)
        if set(weights) != expected:
            raise UserError(f"{path}: layer {keras} holds {sorted(weights)}, expected {sorted(expected)}")
        for kind, array in weights.items():
            value = torch_conv_weight(array) if kind == "kernel" else torch.from_numpy(array)
            state[f"{module}.{KERAS_TO_TORCH_WEIGHT[kind]}"] = value
        if keras.endswith("bn"):
            state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    return state


def _expected_weights(keras):
    if keras.endswith("bn"):
        return BATCHNORM_WEIGHTS
    if keras in DECODER_LAYERS:
        return {"kernel", "bias"}
    return {"kernel"}  # DenseNet's convolutions have no bias


def describe(checkpoint):
    """One line on what a converted Keras file holds, for the scripts to print."""
    config, source = checkpoint["config"], checkpoint["source"]
    variant = variant_from_config(config)
    filters = int(TRUNK_CHANNELS * config["decoder_width"])
    return (
        f"{source['file']}: the DenseDepth authors' Keras model (Keras {source['keras_version']}), "
        f"decoder 1664 -> {filters}, "
        f"{'a ReLU' if variant.trunk_relu else 'no ReLU'} after the trunk, "
        f"{'two LeakyReLUs' if variant.leaky_relu_after_conv_a else 'one LeakyReLU'} per up block, "
        f"{'corner-aligned' if variant.align_corners else 'half-pixel'} upsampling, "
        f"BatchNorm eps {variant.batchnorm_eps:g}, RGB in [0, 1]; read as trained on "
        f"{DATASETS[source['dataset']]['title']}: depth {config['min_depth_m']:g} to {config['max_depth_m']:g} m"
    )
