"""Shared fixtures: tiny NYU-format zips rendered by the project's own generator."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_data import write_sample_data  # noqa: E402

TINY_SIZE = (48, 64)  # height, width


def tiny_train_argv(data, checkpoint_dir, *extra, epochs=1, batch_size=4):
    """train.py's flags (strings) for a tiny CPU run at 64x64; a new run (no --checkpoint among
    `extra`) gets a narrow decoder, a resumed one the checkpoint's. Later flags win."""
    argv = ["--data_dir", data, "--checkpoint_dir", checkpoint_dir, "--epochs", epochs, "--batch_size", batch_size]
    argv += ["--input_size", 64, 64, "--no_pretrained"]
    argv += [] if "--checkpoint" in extra else ["--decoder_width", 0.0625]
    return [str(arg) for arg in argv + list(extra)]


def run_script(script, argv, capsys):
    """(exit status, stdout, stderr) of train.py or evaluate.py (the module) run in-process with `argv`,
    through run_main as on the command line."""
    from utils import run_main

    args = script.get_args_parser().parse_args([str(arg) for arg in argv])
    try:
        run_main(script.main, args)
        status = 0
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: starts processes, servers or a browser (seconds to minutes); -m 'not slow' leaves them out"
    )
    # data.py silences this at import, but pytest resets warning filters for each test.
    config.addinivalue_line(
        "filterwarnings", "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
    )


@pytest.fixture(scope="session")
def tiny_zips(tmp_path_factory):
    """(nyu_data.zip, nyu_test.zip) with 8 training and 4 test pairs of 64x48 pictures."""
    out_dir = tmp_path_factory.mktemp("tiny")
    height, width = TINY_SIZE
    return write_sample_data(
        out_dir, train_images=8, test_images=4, width=width, height=height, views_per_scene=4, seed=0, workers=1
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_zips, tmp_path_factory):
    """last.pth of one epoch of train.py on the tiny zip (decoder width 0.0625, input 64x64)."""
    import train

    out = tmp_path_factory.mktemp("trained")
    argv = tiny_train_argv(tiny_zips[0], out, "--workers", 0)
    train.main(train.get_args_parser().parse_args(argv))
    return out / "last.pth"


@pytest.fixture(scope="session")
def varied_checkpoint(tmp_path_factory):
    """A model whose depth varies over a picture (0.3 to 0.7 m here), unlike a briefly trained one, which
    predicts nearly one depth: random weights, the head scaled and biased to a positive target."""
    import torch

    from model import DenseDepth, settings_config

    torch.manual_seed(0)
    model = DenseDepth(0.0625)
    with torch.no_grad():
        model.head.weight.mul_(50)
        model.head.bias.fill_(20.0)
    path = tmp_path_factory.mktemp("varied") / "varied.pth"
    torch.save({"model": model.state_dict(), "config": settings_config(0.0625, (64, 64)), "args": {}}, path)
    return path
