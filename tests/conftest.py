"""Shared fixtures: tiny NYU-format zips rendered by the project's own generator."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_data import write_sample_data  # noqa: E402

TINY_SIZE = (48, 64)  # height, width


def pytest_configure(config):
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
