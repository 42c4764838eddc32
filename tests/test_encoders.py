"""Encoders: every listed one builds (random weights, tiny inputs), gives DenseDepth's decoder its skips at
strides 2, 4, 8 and 16 with widths derived from its channels, trains a step, and round-trips a checkpoint
through train.py and evaluate.py --img; ImageNet weights come from torch's cache (placed there by the
test: nothing downloads), and offline the run says which file to put where; old checkpoints read as
DenseNet-169's."""

import urllib.error

import numpy as np
import pytest
import torch
from helpers import assert_one_clear_line, run_script, tiny_train_argv

import evaluate
import train
from densedepth.encoders import DEFAULT_ENCODER, ENCODERS, LIGHT_ENCODER, build_encoder, imagenet_classifier
from loss import DepthLoss
from model import DenseDepth, model_from_checkpoint, variant_for
from utils import load_checkpoint

# Large ones (tens of millions of parameters, checkpoints of a gigabyte with Adam's state) run with the slow tests.
LARGE = {"densenet161", "densenet201", "efficientnet_b5", "convnext_base", "efficientnet_v2_s", "convnext_tiny"}
ALL = [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in ENCODERS]


@pytest.mark.parametrize("name", ALL)
def test_every_encoder_feeds_the_decoder_and_trains_a_step(name):
    torch.manual_seed(0)
    model = DenseDepth(encoder=name, variant=variant_for(name))
    assert model.decoder_width == ENCODERS[name].decoder_width
    images = torch.rand(4, 3, 64, 96)
    features = model.encoder(images)
    assert [tuple(feature.shape[-2:]) for feature in features] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert [feature.shape[1] for feature in features] == model.encoder.channels
    *skips, deepest = model.encoder.channels
    width = int(deepest * model.decoder_width)
    assert (model.bottleneck.in_channels, model.bottleneck.out_channels) == (deepest, width)
    for block, skip in zip(model.up_blocks, reversed(skips)):
        assert (block.conv_a.in_channels, block.conv_a.out_channels) == (width + skip, width // 2)
        width //= 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stem = next(model.encoder.parameters())  # the encoder's first convolution: the gradient goes all the way
    # (not the bottleneck's weights: a deep encoder's random features at stride 32 can be ~1e-14, and so their gradient)
    watched = [stem, model.bottleneck.bias, *model.up_blocks.parameters(), *model.head.parameters()]
    before = [parameter.detach().clone() for parameter in watched]
    pred = model(images)
    assert pred.shape == (4, 1, 32, 48)
    loss = DepthLoss()(pred, torch.full_like(pred, 50.0))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    assert all(not torch.equal(old, new.detach()) for old, new in zip(before, watched))


@pytest.mark.parametrize("name", [LIGHT_ENCODER, pytest.param("resnet50", marks=pytest.mark.slow),
                                  pytest.param("convnext_tiny", marks=pytest.mark.slow),
                                  pytest.param("efficientnet_b5", marks=pytest.mark.slow)])  # fmt: skip
def test_a_checkpoint_of_each_encoder_round_trips_through_evaluate(name, tiny_zips, tmp_path, capsys):
    """train.py --encoder NAME writes a checkpoint that names it; evaluate.py --img reads it with no flag."""
    argv = tiny_train_argv(tiny_zips[0], tmp_path / "run", "--workers", 0, "--encoder", name, "--decoder_width", 0.125)
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    assert f"DenseDepth on {name}, decoder width 0.125" in out
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert checkpoint["config"]["encoder"] == name
    assert model_from_checkpoint(checkpoint, "last.pth").encoder_name == name
    picture = tmp_path / "picture.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(picture)
    argv = ["--model", tmp_path / "run" / "last.pth", "--img", picture, "--output_dir", tmp_path / "out"]
    status, _, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    depth_m = np.load(tmp_path / "out" / "picture_depth_m.npy")
    assert depth_m.shape == (48, 64) and np.isfinite(depth_m).all()


@pytest.mark.slow  # trains and evaluates twice, 5 s on Zen 3
def test_the_encoder_is_a_setting_of_the_run(tiny_zips, tmp_path, capsys):
    """Left out when resuming it is the checkpoint's; another is refused, with --checkpoint and with --weights."""
    first = tiny_train_argv(tiny_zips[0], tmp_path / "run", "--workers", 0, "--encoder", LIGHT_ENCODER)
    status, out, err = run_script(train, first, capsys)
    assert status == 0, err
    assert f"DenseDepth on {LIGHT_ENCODER}, decoder width 0.0625" in out
    resume = tiny_train_argv(tiny_zips[0], tmp_path / "run", "--workers", 0, "--checkpoint", tmp_path / "run/last.pth",
                             epochs=2)  # fmt: skip
    status, out, err = run_script(train, resume, capsys)
    assert status == 0 and f"DenseDepth on {LIGHT_ENCODER}" in out, err
    assert_one_clear_line(run_script(train, [*resume, "--encoder", "resnet50"], capsys),
                          f"--encoder resnet50 differs from the {LIGHT_ENCODER} of checkpoint")  # fmt: skip
    tune = tiny_train_argv(tiny_zips[0], tmp_path / "new", "--workers", 0, "--weights", tmp_path / "run/last.pth",
                           "--encoder", "resnet50")  # fmt: skip
    assert_one_clear_line(run_script(train, tune, capsys), f"--encoder resnet50 differs from the {LIGHT_ENCODER}")


def test_encoder_alone_gives_its_recommended_decoder_width(tiny_zips, tmp_path, capsys):
    argv = ["--data_dir", tiny_zips[0], "--checkpoint_dir", tmp_path, "--epochs", 1, "--batch_size", 4, "--input_size",
            64, 64, "--no_pretrained", "--workers", 0, "--encoder", LIGHT_ENCODER]  # fmt: skip
    status, out, err = run_script(train, [str(arg) for arg in argv], capsys)
    assert status == 0, err
    assert f"decoder width {ENCODERS[LIGHT_ENCODER].decoder_width}" in out
    assert load_checkpoint(tmp_path / "last.pth")["config"]["decoder_width"] == ENCODERS[LIGHT_ENCODER].decoder_width


def test_imagenet_weights_are_read_from_torchs_cache(tmp_path, monkeypatch):
    """The file torchvision's weights API names, placed in torch's cache: read from there, nothing downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    import torchvision

    weights = torchvision.models.get_model_weights(LIGHT_ENCODER).DEFAULT
    torch.manual_seed(1)
    reference = torchvision.models.get_model(LIGHT_ENCODER)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    loaded = imagenet_classifier(LIGHT_ENCODER, pretrained=True)
    for name, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    model = DenseDepth(encoder=LIGHT_ENCODER, pretrained=True)
    stem = model.encoder.body.state_dict()["features.0.0.weight"]
    assert torch.equal(stem, reference.state_dict()["features.0.0.weight"])


def test_offline_without_the_weights_one_line_says_which_file_where(tiny_zips, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    argv = ["--data_dir", tiny_zips[0], "--checkpoint_dir", tmp_path / "run", "--epochs", 1, "--batch_size", 4,
            "--input_size", 64, 64, "--workers", 0, "--encoder", "resnet50"]  # fmt: skip
    result = run_script(train, [str(arg) for arg in argv], capsys)
    import torchvision

    file_name = torchvision.models.get_model_weights("resnet50").DEFAULT.url.rsplit("/", 1)[-1]
    assert_one_clear_line(result, "could not download the ImageNet weights for resnet50", file_name,
                          str(tmp_path / "torch" / "hub" / "checkpoints"), "--no_pretrained")  # fmt: skip


def test_a_checkpoint_without_an_encoder_is_densenet169s(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    del checkpoint["config"]["encoder"]
    model = model_from_checkpoint(checkpoint, "old.pth")
    assert model.encoder_name == DEFAULT_ENCODER and model.variant.trunk_relu
    checkpoint["config"]["encoder"] = "vgg16"
    with pytest.raises(Exception, match="encoder 'vgg16', which this code does not build"):
        model_from_checkpoint(checkpoint, "odd.pth")


def test_the_paper_model_is_unchanged_weight_for_weight():
    """densenet169 at width 1.0: the paper's 42.6 M parameters, its trunk's layers under their own names."""
    model = DenseDepth()
    trunk = sum(p.numel() for p in model.encoder.parameters())
    decoder = sum(p.numel() for p in model.parameters()) - trunk
    assert round(trunk / 1e6, 2) == 12.48 and round(decoder / 1e6, 2) == 30.17  # the paper's (FACTS.md)
    assert "encoder.conv0.weight" in model.state_dict() and "encoder.norm5.running_var" in model.state_dict()
    assert model.encoder.channels == [64, 64, 128, 256, 1664]
    assert build_encoder("convnext_tiny").channels[0] == 3  # no stage at stride 2: the picture, averaged 2x2
    for encoder in (model.encoder, build_encoder(LIGHT_ENCODER)):  # finding the channels moved no statistics
        norms = [module for module in encoder.modules() if isinstance(module, torch.nn.BatchNorm2d)]
        assert norms and encoder.training
        for norm in norms:  # as torch.nn.BatchNorm2d starts: mean 0, variance 1, no batch seen
            assert norm.num_batches_tracked == 0 and not norm.running_mean.any() and (norm.running_var == 1).all()


@pytest.mark.parametrize("name", [LIGHT_ENCODER, "efficientnet_b0", "resnet50", DEFAULT_ENCODER])
def test_batchnorms_folded_for_prediction_give_the_same_depth(name):
    """Prediction folds each BatchNorm that follows a convolution into it: the same output to rounding."""
    from densedepth.inference import fold_batchnorms

    torch.manual_seed(0)
    model = DenseDepth(0.125, encoder=name, variant=variant_for(name)).eval()
    with torch.no_grad():  # statistics that are not the identity, so a wrong fold would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        images = torch.rand(2, 3, 64, 96)
        expected = model(images)
        norms = sum(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())
        folded = fold_batchnorms(model)
        left = sum(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
        torch.testing.assert_close(folded(images), expected, rtol=1e-4, atol=1e-5)
    assert left < norms  # DenseNets: the first convolution's (the others normalise before they convolve)
