"""Shared fixtures: tiny NYU-format zips rendered by the project's own generator."""

import fcntl
import json
import os
import pickle
from pathlib import Path

import pytest
from helpers import TINY_SIZE, tiny_train_argv

from sample_data import write_sample_data


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: starts processes, servers or a browser, builds Keras or ONNX models, trains several runs or "
        "large encoders (seconds to minutes); -m 'not slow' leaves them out"
    )
    # data.py silences this at import, but pytest resets warning filters for each test.
    config.addinivalue_line(
        "filterwarnings", "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
    )


def pytest_collection_modifyitems(config, items):
    """Under mutmut (docs/testing.md#mutation-testing), a mutant's tests run fastest first: its run stops
    at the first test that fails (-x), so a unit test that catches the change spares the slow ones."""
    stats = Path("mutmut-stats.json")  # mutmut runs the tests inside its mutants/ folder
    if "MUTANT_UNDER_TEST" in os.environ and stats.is_file():
        seconds = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


def built_once_under_mutmut(name, build, tmp_path_factory):
    """build(folder)'s value in a fresh folder; under mutmut, where every mutant's tests are a session of
    their own, built once by the unmutated code (its clean run) into mutants/mutmut-fixtures/NAME and kept:
    a mutant is judged by the code it changes, not by inputs rebuilt with it (the checkpoint is trained
    with loss.py, a file mutmut mutates)."""
    mutant = os.environ.get("MUTANT_UNDER_TEST")
    if mutant is None:
        return build(tmp_path_factory.mktemp(name))
    folder = Path("mutmut-fixtures").resolve() / name  # absolute: a test may change its working folder
    folder.parent.mkdir(exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for the first one's build
        value_file = folder / "value.pickle"
        if value_file.is_file():
            return pickle.loads(value_file.read_bytes())
        if mutant not in ("", "stats"):  # mutated code does not build what the other mutants reuse
            return build(tmp_path_factory.mktemp(name))
        folder.mkdir(exist_ok=True)
        value = build(folder)
        value_file.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def tiny_zips(tmp_path_factory):
    """(nyu_data.zip, nyu_test.zip) with 8 training and 4 test pairs of 64x48 pictures."""
    height, width = TINY_SIZE

    def build(out_dir):
        return write_sample_data(
            out_dir, train_images=8, test_images=4, width=width, height=height, views_per_scene=4, seed=0, workers=1
        )

    return built_once_under_mutmut("tiny_zips", build, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_zips, tmp_path_factory):
    """last.pth of one epoch of train.py on the tiny zip (decoder width 0.0625, input 64x64)."""
    import train

    def build(out):
        train.main(train.get_args_parser().parse_args(tiny_train_argv(tiny_zips[0], out, "--workers", 0)))
        return out / "last.pth"

    return built_once_under_mutmut("tiny_checkpoint", build, tmp_path_factory)


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
