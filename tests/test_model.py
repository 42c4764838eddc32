import urllib.error

import pytest
import torch

from data import resize
from densedepth.depth import depth_m_to_target, target_to_depth_m
from densedepth.encoders import WeightsUnavailableError
from densedepth.protocol import predict_depth_m
from model import DenseDepth, Variant, count_parameters


def conv_params(in_channels, out_channels, kernel):
    return in_channels * out_channels * kernel * kernel + out_channels


def expected_decoder_params(width):
    """The paper's decoder, counted from its description: 1x1 conv, four up blocks, 3x3 head."""
    channels = int(1664 * width)
    total = conv_params(1664, channels, 1)
    for skip in (256, 128, 64, 64):
        total += conv_params(channels + skip, channels // 2, 3) + conv_params(channels // 2, channels // 2, 3)
        channels //= 2
    return total + conv_params(channels, 1, 3)


def test_paper_model_has_42_6_million_parameters():
    model = DenseDepth()
    assert count_parameters(model.encoder) == 12_484_480  # DenseNet-169 features trunk
    assert count_parameters(model) - count_parameters(model.encoder) == expected_decoder_params(1.0)
    assert count_parameters(model) == 42_657_689


@pytest.mark.parametrize("width", [0.5, 0.125])
def test_decoder_width_scales_the_decoder(width):
    model = DenseDepth(width)
    assert count_parameters(model) - count_parameters(model.encoder) == expected_decoder_params(width)


@pytest.mark.parametrize("size, out", [((64, 96), (32, 48)), ((50, 70), (25, 35)), ((33, 45), (17, 23))])
def test_output_is_half_the_input_for_any_size(size, out):
    model = DenseDepth(0.0625).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 1, *out)
    assert torch.isfinite(y).all()


def test_other_sizes_are_replicate_padded_to_a_multiple_of_32_and_cropped_back():
    torch.manual_seed(0)
    model = DenseDepth(0.0625).eval()
    image = torch.rand(1, 3, 60, 70)
    padded = torch.nn.functional.pad(image, (0, 26, 0, 4), mode="replicate")  # to 64 x 96
    with torch.no_grad():
        assert torch.equal(model(image), model(padded)[..., :30, :35])


def test_replicate_padding_changes_the_borders_and_not_the_weights():
    torch.manual_seed(0)
    zeros = DenseDepth(0.0625).eval()
    replicate = DenseDepth(0.0625, variant=Variant(decoder_padding="replicate")).eval()
    replicate.load_state_dict(zeros.state_dict())  # padding holds no weights
    for model, uniform in ((replicate, True), (zeros, False)):
        # A constant input stays constant to the edge only where the padding repeats the border.
        out = model.head(torch.ones(1, model.head.in_channels, 6, 8))
        assert torch.allclose(out, out[..., 3, 4].expand_as(out)) == uniform
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(zeros(image), replicate(image))
    with pytest.raises(ValueError, match="decoder_padding must be one of"):
        DenseDepth(0.0625, variant=Variant(decoder_padding="reflect"))


def test_depth_parametrisation_and_inverse():
    depth_m = torch.tensor([0.05, 0.1, 1.0, 2.5, 10.0, 20.0])
    target = depth_m_to_target(depth_m)
    assert torch.allclose(target, torch.tensor([100.0, 100.0, 10.0, 4.0, 1.0, 1.0]))
    assert torch.allclose(target_to_depth_m(target), depth_m.clamp(0.1, 10.0))
    assert torch.allclose(target_to_depth_m(torch.tensor([0.0, 1e6])), torch.tensor([10.0, 0.1]))


def test_predict_depth_m_follows_the_protocol():
    torch.manual_seed(0)
    model = DenseDepth(0.0625).eval()
    images = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        fused = predict_depth_m(model, images, input_size=(64, 96), out_size=(48, 64), flip=True)
        plain = resize(target_to_depth_m(model(resize(images, (64, 96)))), (48, 64))
        mirrored = resize(target_to_depth_m(model(resize(images.flip(-1), (64, 96)))), (48, 64)).flip(-1)
    assert fused.shape == (2, 1, 48, 64)
    assert torch.allclose(fused, (plain + mirrored) / 2, atol=1e-5)
    assert fused.min() >= 0.1 and fused.max() <= 10.0


def test_bf16_channels_last_prediction_matches_fp32_and_uint8_input_matches_float():
    torch.manual_seed(0)
    model = DenseDepth(0.125).eval()
    pixels = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    with torch.inference_mode():
        reference = predict_depth_m(model, pixels.float() / 255, (64, 96), (48, 64), channels_last=False)
        from_uint8 = predict_depth_m(model, pixels, (64, 96), (48, 64), channels_last=False)
        fast_model = model.to(memory_format=torch.channels_last)
        channels_last = predict_depth_m(fast_model, pixels, (64, 96), (48, 64))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = predict_depth_m(fast_model, pixels, (64, 96), (48, 64))
    assert torch.equal(from_uint8, reference)
    assert torch.allclose(channels_last, reference, rtol=1e-4)
    assert bf16.dtype == torch.float32  # metres leave the network in fp32
    assert ((bf16 - reference).abs() / reference).median() < 0.02


def test_missing_imagenet_weights_say_how_to_proceed(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        DenseDepth(pretrained=True)
    message = str(error.value)
    assert "densenet169-b2777c0a.pth" in message and "--no_pretrained" in message


def test_a_config_means_what_it_meant_when_written(monkeypatch):
    """Every Variant setting is written; a setting an older config left out is read as it was meant
    then, even if this code's default has changed since."""
    from dataclasses import asdict

    import model as model_module

    variant = Variant(decoder_padding="replicate", batchnorm_eps=1.001e-5)
    config = model_module.settings_config(0.5, (96, 128), variant=variant)
    assert {key: config[key] for key in asdict(variant)} == asdict(variant)
    assert model_module.variant_from_config(config) == variant
    old = {key: value for key, value in config.items() if key not in asdict(Variant())}  # as written before
    monkeypatch.setattr(model_module.Variant, "decoder_padding", "replicate")  # a default changed later
    assert model_module.variant_from_config(old).decoder_padding == "zeros"
