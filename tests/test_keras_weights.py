"""The authors' published Keras models (nyu.h5, kitti.h5): read exactly, run by evaluate.py, fine-tuned by train.py.

The real files cannot be downloaded here. The reference is their model rebuilt in Keras 3
(tests/keras_densedepth.py: keras.applications' DenseNet-169, their decoder and layer names,
one LeakyReLU per up block) with random values in every weight, BatchNorm statistics
included, saved in the Keras 2.2.4 layout of their files; this project's forward on the
converted weights must equal Keras' own.
"""

import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_clear_line, run_script
from PIL import Image

import convert_weights
import evaluate
import train
from densedepth import weights
from model import Variant, model_from_checkpoint
from utils import load_checkpoint

kd = pytest.importorskip("keras_densedepth", reason="Keras 3 (pip install keras) builds the reference model")
# Keras 3 on numpy 2 warns on every array it converts; nothing of ours.
# Building the Keras reference model takes half a minute: these run with the slow tests.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.slow]  # fmt: skip

NYU_SIZE = (480, 640)
SMALL_SIZE = (128, 160)


def smooth_picture(size, seed=7):
    """A (H, W, 3) uint8 picture of smooth colour blobs, like a photo's low frequencies."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size[1], size[0]), Image.BICUBIC))


def keras_reference(size, **settings):
    """(Keras model, picture (H, W, 3) uint8, Keras' y (2, H/2, W/2) of the picture and its mirror)."""
    picture = smooth_picture(size)
    images = np.stack([picture, picture[:, ::-1]]).astype(np.float32) / 255
    model = kd.build(size, **settings)
    kd.scale_output(model, images)
    return model, picture, kd.predict(model, images)


def torch_y(model, picture):
    """This project's y for one (H, W, 3) uint8 picture, in fp32."""
    image = torch.from_numpy(picture.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        return model.eval()(image)[0, 0].numpy()


def relative_error(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The released files' kind of model at NYU's 480x640: (nyu.h5, room.png, picture, Keras y)."""
    folder = tmp_path_factory.mktemp("published")
    model, picture, y = keras_reference(NYU_SIZE)
    kd.save_keras2_h5(model, folder / "nyu.h5")
    Image.fromarray(picture).save(folder / "room.png")
    return folder / "nyu.h5", folder / "room.png", picture, y


@pytest.fixture(scope="module")
def other_variant(tmp_path_factory):
    """The other variant, saved by Keras 3 itself (names like conv1_conv): half-width decoder (832),
    no ReLU after the trunk, a LeakyReLU after both convs; at 128x160. (file, picture, Keras y)."""
    folder = tmp_path_factory.mktemp("variant")
    model, picture, y = keras_reference(SMALL_SIZE, decoder_filters=832, trunk_relu=False, leaky_relu_after_conv_a=True)
    model.save(folder / "half.h5")  # Keras 3's legacy HDF5 writer
    return folder / "half.h5", picture, y


def test_converted_published_model_equals_keras(published, tmp_path, capsys):
    h5_path, _, picture, keras_y = published
    status, out, err = run_script(convert_weights, [h5_path, tmp_path / "nyu.pth"], capsys)
    assert status == 0, err
    assert "decoder 1664 -> 1664, a ReLU after the trunk, one LeakyReLU per up block" in out
    checkpoint = load_checkpoint(tmp_path / "nyu.pth")
    assert checkpoint["config"] | {"input_size": None} == {
        "architecture": "DenseDepth",
        "encoder": "densenet169",
        "decoder_width": 1.0,
        "input_size": None,
        "depth_target": "1000 / depth_cm",
        "min_depth_m": 0.1,
        "max_depth_m": 10.0,
        # every Variant setting; these three differ from this project's model
        "imagenet_normalization": False,
        "leaky_relu_after_conv_a": False,
        "batchnorm_eps": 1.001e-5,
        "trunk_relu": True,
        "align_corners": True,
        "decoder_padding": "zeros",
    }
    model = model_from_checkpoint(checkpoint, "nyu.pth")
    assert model.variant == Variant(
        imagenet_normalization=False,
        trunk_relu=True,
        leaky_relu_after_conv_a=False,
        batchnorm_eps=1.001e-5,
        align_corners=True,
    )
    error = relative_error(torch_y(model, picture), keras_y[0])
    print(f"max |dy| / max |y| at 480x640: {error:.2e}")
    assert error <= 1e-4


@pytest.mark.parametrize(
    "mutation",
    ["two LeakyReLUs", "ImageNet normalisation", "kernels reshaped, not transposed", "no ReLU after the trunk"],
)
def test_the_comparison_catches_each_mapping_error(published, monkeypatch, mutation):
    """The check above is not blind: each of these mistakes makes the forward differ from Keras'."""
    h5_path, _, picture, keras_y = published
    if mutation == "kernels reshaped, not transposed":

        def reshaped(kernel):
            return torch.from_numpy(kernel.reshape(kernel.shape[3], kernel.shape[2], *kernel.shape[:2]).copy())

        monkeypatch.setattr(weights, "torch_conv_weight", reshaped)
    checkpoint = weights.keras_checkpoint(h5_path)
    setting = {
        "two LeakyReLUs": ("leaky_relu_after_conv_a", True),
        "ImageNet normalisation": ("imagenet_normalization", True),
        "no ReLU after the trunk": ("trunk_relu", False),
    }.get(mutation)
    if setting:
        checkpoint["config"][setting[0]] = setting[1]
    error = relative_error(torch_y(model_from_checkpoint(checkpoint, "mutated"), picture), keras_y[0])
    assert error > 1e-2, f"{mutation}: {error}"


def test_evaluate_img_on_the_h5_gives_the_depth_keras_implies(published, tmp_path, capsys):
    """Keras' y of the picture and its mirror, turned into metres by DenseDepth's 10 / y (clipped
    to 0.1..10 m), upsampled to the picture's size and averaged: what evaluate.py --img writes."""
    h5_path, picture_path, _, keras_y = published
    argv = ["--model", h5_path, "--img", picture_path, "--output_dir", tmp_path / "h5", "--precision", "fp32"]
    status, out, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    assert "the DenseDepth authors' Keras model" in out
    depth_m = np.load(tmp_path / "h5" / "room_depth_m.npy")
    expected = torch.from_numpy(np.clip(10 / keras_y, 0.1, 10))[:, None]
    expected = F.interpolate(expected, size=NYU_SIZE, mode="bilinear", align_corners=False)
    expected = ((expected[0, 0] + expected[1, 0].flip(-1)) / 2).numpy()
    assert 0.2 < expected.min() and expected.max() < 5  # far from the 0.1 and 10 m clips: nothing hides there
    error = relative_error(depth_m, expected)
    print(f"max |d - d_keras| / max d: {error:.2e}")
    assert error <= 1e-4

    converted = tmp_path / "nyu.pth"
    run_script(convert_weights, [h5_path, converted], capsys)
    argv[1], argv[5] = converted, tmp_path / "pth"
    assert run_script(evaluate, argv, capsys)[0] == 0
    assert np.array_equal(np.load(tmp_path / "pth" / "room_depth_m.npy"), depth_m)


def test_the_other_variant_is_read_from_the_file_itself(other_variant):
    h5_path, picture, keras_y = other_variant
    with h5py.File(h5_path) as file:
        assert "conv1_conv" in file["model_weights"]  # Keras 3's names, not conv1/conv
    checkpoint = weights.keras_checkpoint(h5_path)
    model = model_from_checkpoint(checkpoint, "half.h5")
    assert model.decoder_width == 0.5 and not model.variant.trunk_relu and model.variant.leaky_relu_after_conv_a
    error = relative_error(torch_y(model, picture), keras_y[0])
    assert error <= 1e-4


def test_a_file_named_kitti_is_read_with_kittis_depth_range(other_variant, tmp_path):
    kitti = tmp_path / "kitti.h5"
    shutil.copy(other_variant[0], kitti)
    config = weights.keras_checkpoint(kitti)["config"]
    assert (config["min_depth_m"], config["max_depth_m"], config["depth_target"]) == (1.0, 80.0, "8000 / depth_cm")
    assert weights.keras_checkpoint(kitti, dataset="nyu")["config"]["max_depth_m"] == 10.0
    model = model_from_checkpoint(weights.keras_checkpoint(kitti), "kitti.h5")
    assert (model.depth_range.min_m, model.depth_range.max_m, model.depth_range.target_range) == (1.0, 80.0, 80.0)


def test_evaluate_data_runs_on_an_h5(other_variant, tiny_zips, tmp_path, capsys):
    argv = ["--model", other_variant[0], "--data", tiny_zips[1], "--output_dir", tmp_path, "--num_examples", 1]
    status, out, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    assert "4 images, Eigen crop" in out and (tmp_path / "metrics.json").is_file()
    assert (tmp_path / "examples" / "0000.png").is_file()


# ----------------------------------------------------------------------------- fine-tuning


def fine_tune_argv(tiny_zips, checkpoint_dir, *extra):
    argv = ["--data_dir", tiny_zips[0], "--checkpoint_dir", checkpoint_dir, "--epochs", 1, "--batch_size", 4]
    return argv + ["--input_size", 64, 64, "--workers", 0, "--precision", "fp32", *extra]


@pytest.mark.parametrize("start_from", ["converted .pth", ".h5"])
def test_train_fine_tunes_from_the_weights(other_variant, tiny_zips, tmp_path, capsys, start_from):
    h5_path = other_variant[0]
    start = tmp_path / "half.pth"
    run_script(convert_weights, [h5_path, start], capsys)
    source = h5_path if start_from == ".h5" else start
    status, out, err = run_script(train, fine_tune_argv(tiny_zips, tmp_path / "run", "--weights", source), capsys)
    assert status == 0, err
    assert f"a new run from the weights of {source}" in out
    trained = load_checkpoint(tmp_path / "run" / "last.pth")
    assert trained["epoch"] == 1 and int(trained["optimizer"]["state"][0]["step"]) == 2  # a new run: 8 pairs, 2 steps
    initial = load_checkpoint(start)
    assert trained["config"] | {"input_size": None} == initial["config"] | {"input_size": None}
    # Two Adam steps at lr 1e-4 move each weight by at most about 2e-4: it started from these weights.
    for name in ("encoder.conv0.weight", "bottleneck.weight", "up_blocks.3.conv_b.weight", "head.bias"):
        moved = (trained["model"][name] - initial["model"][name]).abs().max().item()
        assert 0 < moved < 2.5e-4, (name, moved)


def test_fine_tuning_flags_that_do_not_fit(other_variant, tiny_zips, tmp_path, capsys):
    start = tmp_path / "half.pth"
    run_script(convert_weights, [other_variant[0], start], capsys)
    run = tmp_path / "run"
    both = fine_tune_argv(tiny_zips, run, "--weights", start, "--checkpoint", start)
    assert_one_clear_line(run_script(train, both, capsys), "give --checkpoint", "or --weights", "not both")
    resume_weights = fine_tune_argv(tiny_zips, run, "--checkpoint", start)
    assert_one_clear_line(run_script(train, resume_weights, capsys), "no run to resume", f"--weights {start}")
    resume_h5 = fine_tune_argv(tiny_zips, run, "--checkpoint", other_variant[0])
    assert_one_clear_line(run_script(train, resume_h5, capsys), "is an HDF5 file", "--weights")
    width = fine_tune_argv(tiny_zips, run, "--weights", start, "--decoder_width", 0.25)
    assert_one_clear_line(run_script(train, width, capsys), "--decoder_width 0.25 differs from the 0.5 of --weights")
    assert not (run / "last.pth").exists()


# ----------------------------------------------------------------------------- bad files


def text_file(target):
    target.write_text("not a model")
    return target


def truncated(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def weights_only(source, target):
    """The file as Keras' save_weights writes one: layer groups and names, no model_config."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as file:
        del file.attrs["model_config"]
        file.attrs["layer_names"] = file["model_weights"].attrs["layer_names"]
    return target


def another_keras_model(target):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    model.save(target)
    return target


def unexpected_width(target):
    """A DenseDepth whose up blocks do not halve conv2's 1664 filters."""
    kd.save_keras2_h5(kd.build((64, 64), block_filters=(512, 256, 128, 64)), target)
    return target


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda folder, good: folder / "missing.h5", "missing.h5 does not exist"),
        (lambda folder, good: text_file(folder / "text.h5"), "not an HDF5 file"),
        (lambda folder, good: truncated(good, folder / "cut.h5"), "cut.h5 is damaged or truncated"),
        (lambda folder, good: weights_only(good, folder / "w.h5"), "holds Keras weights only"),
        (lambda folder, good: another_keras_model(folder / "dense.h5"), "is a Keras model, but not DenseDepth"),
        (lambda folder, good: unexpected_width(folder / "wide.h5"), "a DenseDepth file of a width this code"),
    ],
    ids=["missing", "not HDF5", "truncated", "weights only", "another model", "unexpected width"],
)
def test_bad_h5_files_get_one_clear_line(other_variant, tmp_path, capsys, make, needle):
    bad = make(tmp_path, other_variant[0])
    assert_one_clear_line(run_script(convert_weights, [bad, tmp_path / "out.pth"], capsys), str(bad.name), needle)
    assert not (tmp_path / "out.pth").exists()
    picture = tmp_path / "picture.png"
    Image.fromarray(smooth_picture((32, 32))).save(picture)
    argv = ["--model", bad, "--img", picture, "--output_dir", tmp_path / "out"]
    assert_one_clear_line(run_script(evaluate, argv, capsys), str(bad.name), needle)
