"""The DenseDepth authors' Keras model, rebuilt with Keras 3 (on its torch backend, no TensorFlow)
as a reference for the weight conversion, and saved as the authors' Keras 2.2.4 files are.

Their model: keras.applications' DenseNet-169 trunk without its top, then conv2 (1x1), four
up blocks (BilinearUpSampling2D x2 with TF1's align_corners=True, Concatenate with a skip,
convA, convB) and conv3; the released files have one LeakyReLU(0.2) per block, after convB.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

SKIPS = ("pool3_pool", "pool2_pool", "pool1", "conv1_relu")
# keras_applications' names in Keras 2.2.4, where Keras 3 writes '_' (it refuses '/' in names).
KERAS2_NAMES = {"conv1_conv": "conv1/conv", "conv1_bn": "conv1/bn", "conv1_relu": "conv1/relu"}


@keras.saving.register_keras_serializable(package="DenseDepth")
class BilinearUpSampling2D(layers.Layer):
    """x2 bilinear upsampling with corners aligned (TF1's resize_images(align_corners=True)),
    written out here from its definition, independent of torch's interpolate."""

    def __init__(self, size=(2, 2), **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)

    def call(self, inputs):
        for axis, factor in zip((1, 2), self.size):
            inputs = _resize_axis_align_corners(inputs, axis, inputs.shape[axis] * factor)
        return inputs

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, height * self.size[0], width * self.size[1], channels)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": "channels_last"}


def _resize_axis_align_corners(tensor, axis, out_size):
    in_size = tensor.shape[axis]
    source = np.arange(out_size) * ((in_size - 1) / (out_size - 1))  # output i sits at input i (in-1)/(out-1)
    low = np.minimum(np.floor(source).astype(np.int32), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight_shape = [1, 1, 1, 1]
    weight_shape[axis] = out_size
    weight = ops.convert_to_tensor((source - low).astype(np.float32).reshape(weight_shape))
    return ops.take(tensor, low, axis=axis) * (1 - weight) + ops.take(tensor, high, axis=axis) * weight


def build(
    input_size=(480, 640),
    decoder_filters=1664,
    trunk_relu=True,
    leaky_relu_after_conv_a=False,
    block_filters=None,
    seed=0,
):
    """The authors' model with random weights of every kind (BatchNorm statistics included, so a
    mapping error cannot hide behind identity normalisation). block_filters: the up blocks'
    filters, if not halving decoder_filters block by block as DenseDepth's do."""
    base = keras.applications.DenseNet169(weights=None, include_top=False, input_shape=(*input_size, 3))
    x = base.output if trunk_relu else base.get_layer("bn").output
    x = layers.Conv2D(decoder_filters, 1, padding="same", name="conv2")(x)
    for block, skip in enumerate(SKIPS, start=1):
        filters = block_filters[block - 1] if block_filters else decoder_filters // 2**block
        x = BilinearUpSampling2D((2, 2), name=f"up{block}_upsampling2d")(x)
        x = layers.Concatenate(name=f"up{block}_concat")([x, base.get_layer(skip).output])
        x = layers.Conv2D(filters, 3, padding="same", name=f"up{block}_convA")(x)
        if leaky_relu_after_conv_a:
            x = layers.LeakyReLU(0.2, name=f"up{block}_leakyA")(x)
        x = layers.Conv2D(filters, 3, padding="same", name=f"up{block}_convB")(x)
        x = layers.LeakyReLU(0.2, name=f"up{block}_leakyB")(x)
    y = layers.Conv2D(1, 3, padding="same", name="conv3")(x)
    model = keras.Model(base.input, y, name="densedepth")
    randomise(model, np.random.default_rng(seed))
    return model


def randomise(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.7, 1.3, channels),  # gamma
                    rng.normal(0, 0.1, channels),  # beta
                    rng.normal(0, 0.2, channels),  # moving mean
                    rng.uniform(0.5, 2.0, channels),  # moving variance
                ]
            )
        elif isinstance(layer, layers.Conv2D):
            kernel = layer.kernel
            fan_in = np.prod(kernel.shape[:3])
            weights = [rng.normal(0, np.sqrt(2 / fan_in), kernel.shape)]
            if layer.use_bias:
                weights.append(rng.normal(0, 0.05, layer.bias.shape))
            layer.set_weights(weights)


def predict(model, images):
    """y for (N, H, W, 3) pictures in [0, 1]: (N, H/2, W/2) float32."""
    return np.asarray(ops.convert_to_numpy(model(images.astype(np.float32), training=False)))[..., 0]


def scale_output(model, images, low=5.0, high=20.0):
    """Set conv3 so that y on `images` spans about low..high (depth 0.5 to 2 m for NYU's 10 / y)."""
    y = predict(model, images)
    scale = (high - low) / (np.percentile(y, 99) - np.percentile(y, 1))
    offset = low - np.percentile(y, 1) * scale
    kernel, bias = model.get_layer("conv3").get_weights()
    model.get_layer("conv3").set_weights([kernel * scale, bias * scale + offset])


# ----------------------------------------------------------------------------- saving as Keras 2.2.4 did


def save_keras2_h5(model, path, keras2_names=True):
    """Write `model` as Keras 2.2.4's model.save wrote nyu.h5: model_config JSON (Keras 2 layer
    entries and inbound_nodes) and model_weights/<layer>/<layer>/<weight>:0 with layer_names and
    weight_names attributes. keras2_names: keras_applications' 'conv1/conv' names, else Keras 3's."""
    rename = (lambda name: KERAS2_NAMES.get(name, name)) if keras2_names else (lambda name: name)
    with h5py.File(path, "w") as file:
        file.attrs["keras_version"] = b"2.2.4"
        file.attrs["backend"] = b"tensorflow"
        file.attrs["model_config"] = json.dumps(keras2_model_config(model, rename)).encode("utf-8")
        root = file.create_group("model_weights")
        root.attrs["layer_names"] = [rename(layer.name).encode("utf-8") for layer in model.layers]
        root.attrs["keras_version"] = b"2.2.4"
        root.attrs["backend"] = b"tensorflow"
        for layer in model.layers:
            name = rename(layer.name)
            group = root.create_group(name)
            weight_names = [f"{name}/{variable.name}:0" for variable in layer.weights]
            group.attrs["weight_names"] = [weight.encode("utf-8") for weight in weight_names]
            for weight_name, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(weight_name, data=np.asarray(value, dtype=np.float32))


def keras2_model_config(model, rename):
    """The model's config in Keras 2's JSON form."""
    keras3 = json.loads(model.to_json())
    entries = []
    for entry in keras3["config"]["layers"]:
        name = rename(entry["name"])
        config = {**entry["config"], "name": name}
        if entry["class_name"] == "LeakyReLU":  # Keras 2 calls the slope alpha
            config = {"name": name, "trainable": True, "alpha": config["negative_slope"]}
        inbound = [[[rename(source), 0, 0, {}] for source in _sources(node)] for node in entry["inbound_nodes"]]
        entries.append({"name": name, "class_name": entry["class_name"], "config": config, "inbound_nodes": inbound})
    return {
        "class_name": "Model",
        "config": {
            "name": keras3["config"]["name"],
            "layers": entries,
            "input_layers": [[entries[0]["name"], 0, 0]],
            "output_layers": [[entries[-1]["name"], 0, 0]],
        },
    }


def _sources(node):
    found = []

    def walk(item):
        if isinstance(item, dict):
            if "keras_history" in item.get("config", {}):
                found.append(item["config"]["keras_history"][0])
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(node["args"])
    return found
