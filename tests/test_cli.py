"""train.py and evaluate.py through their command lines, on tiny generated zips."""

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

pytestmark = pytest.mark.slow


def run(script, *args, cwd=ROOT):
    """A script by its path (train.py) or a module by its name (scripts.constant_baseline, run from the root)."""
    command = [sys.executable, str(ROOT / script)] if script.endswith(".py") else [sys.executable, "-m", script]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


TRAIN_FLAGS = [
    "--batch_size",
    4,
    "--input_size",
    64,
    64,
    "--decoder_width",
    0.0625,
    "--no_pretrained",
    "--workers",
    0,
    "--log_interval",
    1,
]


@pytest.fixture(scope="module")
def trained(tiny_zips, tmp_path_factory):
    """One epoch of training on the tiny zip: (checkpoint dir, completed process)."""
    checkpoint_dir = tmp_path_factory.mktemp("checkpoints")
    result = run(
        "train.py", "--data_dir", tiny_zips[0], "--checkpoint_dir", checkpoint_dir, "--epochs", 1, *TRAIN_FLAGS
    )
    assert result.returncode == 0, result.stderr
    return checkpoint_dir, result


def test_train_writes_last_and_best_checkpoints(trained):
    checkpoint_dir, result = trained
    assert "epoch 1 step 2/2: loss" in result.stdout and "abs_rel" in result.stdout
    checkpoint = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert checkpoint["config"] == {
        "architecture": "DenseDepth",
        "encoder": "densenet169",
        "decoder_width": 0.0625,
        "input_size": [64, 64],
        "depth_target": "1000 / depth_cm",
        "min_depth_m": 0.1,
        "max_depth_m": 10.0,
        # every Variant setting, so a later default cannot change what the checkpoint means
        "imagenet_normalization": True,
        "trunk_relu": True,
        "leaky_relu_after_conv_a": True,
        "batchnorm_eps": 1e-5,
        "align_corners": True,
        "decoder_padding": "zeros",
    }
    assert checkpoint["samples_done"] == 0 and {"rng", "scaler"} <= set(checkpoint)
    assert set(checkpoint["val_metrics"]) >= {"delta1", "abs_rel", "rms", "log10"}
    assert {"model", "optimizer", "args", "versions"} <= set(checkpoint)
    assert (checkpoint_dir / "best.pth").is_file()


def tensorboard_installed():
    return importlib.util.find_spec("tensorboard") is not None


def test_train_writes_a_csv_curves_predictions_and_a_summary(trained):
    checkpoint_dir, result = trained
    rows = list(csv.DictReader((checkpoint_dir / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    checkpoint = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert float(rows[0]["abs_rel"]) == pytest.approx(checkpoint["val_metrics"]["abs_rel"], rel=1e-5)
    assert float(rows[0]["train_loss"]) > 0 and float(rows[0]["seconds"]) > 0
    assert Image.open(checkpoint_dir / "curves.png").size == (1000, 700)
    assert Image.open(checkpoint_dir / "predictions" / "epoch_001.png").mode == "RGB"
    assert "done: 1 epochs; the best, epoch 1 (best.pth), on the test split:" in result.stdout
    assert f"files in {checkpoint_dir}: last.pth, best.pth, log.csv" in result.stdout
    assert (checkpoint_dir / "tensorboard").is_dir() == tensorboard_installed()
    assert "tensorboard" not in result.stderr.lower()


def test_train_resumes_where_it_stopped(trained, tiny_zips, tmp_path):
    checkpoint_dir, _ = trained
    result = run(
        "train.py",
        "--data_dir",
        tiny_zips[0],
        "--checkpoint_dir",
        tmp_path,
        "--epochs",
        2,
        "--checkpoint",
        checkpoint_dir / "last.pth",
        *TRAIN_FLAGS,
    )
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and "after epoch 1" in result.stdout
    assert "epoch 1 step" not in result.stdout and "epoch 2 step 2/2" in result.stdout
    before = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    after = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=True)
    assert after["epoch"] == 2
    assert after["optimizer"]["state"][0]["step"] == before["optimizer"]["state"][0]["step"] * 2
    # the history goes on in the checkpoint, so the resumed run's CSV and curves hold both epochs
    assert [row["epoch"] for row in csv.DictReader((tmp_path / "log.csv").open())] == ["1", "2"]
    assert sorted(path.name for path in (tmp_path / "predictions").iterdir()) == ["epoch_002.png"]


def test_evaluate_on_the_eigen_zip(trained, tiny_zips, tmp_path):
    checkpoint_dir, _ = trained
    result = run(
        "evaluate.py",
        "--model",
        checkpoint_dir / "best.pth",
        "--data",
        tiny_zips[1],
        "--batch_size",
        3,
        "--output_dir",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "delta1" in result.stdout and "per-image aggregation" in result.stdout
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["num_images"] == 4
    assert report["crop"] == [2, 45, 2, 61]
    assert report["num_valid_pixels"] == 4 * 44 * 60
    for aggregation in ("per_image", "pooled"):
        assert 0 <= report[aggregation]["delta1"] <= 1 and report[aggregation]["abs_rel"] > 0


def test_fp16_training_scales_gradients_and_evaluation_takes_a_precision(tiny_zips, tmp_path):
    # fp16 with a GradScaler is the path of GPUs without bf16; the CPU runs the same code.
    result = run(
        "train.py", "--data_dir", tiny_zips[0], "--checkpoint_dir", tmp_path, "--epochs", 1,
        "--precision", "fp16", *TRAIN_FLAGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "on cpu in fp16" in result.stdout
    checkpoint = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=True)
    assert checkpoint["scaler"]["scale"] > 0 and checkpoint["args"]["precision"] == "fp16"
    assert np.isfinite(checkpoint["val_metrics"]["abs_rel"])
    for precision in ("fp32", "bf16"):
        result = run(
            "evaluate.py", "--model", tmp_path / "last.pth", "--data", tiny_zips[1], "--output_dir", tmp_path,
            "--precision", precision,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"{precision} on cpu" in result.stdout
        assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == precision


def test_predict_a_picture_at_its_own_size(trained, tmp_path):
    checkpoint_dir, _ = trained
    picture = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(picture)
    result = run(
        "evaluate.py", "--model", checkpoint_dir / "best.pth", "--img", picture, "--output_dir", tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    color = Image.open(tmp_path / "out" / "photo_depth.png")
    depth_mm = Image.open(tmp_path / "out" / "photo_depth_mm.png")
    assert (color.mode, color.size) == ("RGB", (70, 50))
    assert (depth_mm.mode, depth_mm.size) == ("I;16", (70, 50))
    values = np.asarray(depth_mm)
    assert 100 <= values.min() and values.max() <= 10000  # millimetres, within [0.1, 10] m


@pytest.mark.parametrize(
    "script, args, needle",
    [
        ("evaluate.py", ["--model", "missing.pth", "--data", "a.zip", "--img", "b.png"], "exactly one of --data"),
        ("evaluate.py", ["--model", "missing.pth", "--data", "a.zip"], "missing.pth does not exist"),
        ("evaluate.py", ["--model", "missing.pth", "--data", "list.txt"], "--data list.txt does not exist"),
        (
            "train.py",
            ["--data_dir", "nowhere.zip", "--batch_size", 2, "--checkpoint_dir", "x", "--epochs", 1],
            "nowhere.zip does not exist",
        ),
        (
            "train.py",
            ["--data_dir", "nowhere.zip", "--batch_size", 0, "--checkpoint_dir", "x", "--epochs", 1],
            "--batch_size must be",
        ),
    ],
)
def test_bad_input_gets_one_line_and_no_trace(script, args, needle, tmp_path):
    result = run(script, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_constant_baseline_script(tiny_zips, tmp_path):
    result = run(
        "scripts.constant_baseline", "--train_data", tiny_zips[0], "--data", tiny_zips[1], "--output_dir", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "constant depth" in result.stdout and "delta1" in result.stdout
    report = json.loads((tmp_path / "baseline_metrics.json").read_text())
    assert 0.5 < report["constant_depth_m"] < 10 and report["num_images"] == 4


@pytest.mark.parametrize("script", ["quickstart.sh", "docs_pictures.sh"])
def test_shell_scripts_refuse_an_unknown_argument_before_doing_anything(script, tmp_path):
    # A copy in an empty tree: the scripts work from the folder above their own, so were the
    # argument not refused, whatever they set up would land in tmp_path, where the test sees it.
    (tmp_path / "scripts").mkdir()
    copy = tmp_path / "scripts" / script
    copy.write_text((ROOT / "scripts" / script).read_text())
    result = subprocess.run(["bash", str(copy), "--lnog"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"scripts/{script}: unknown argument '--lnog' (the only option is --long)"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]


def test_compiled_runs_save_the_plain_models_weights(tiny_zips, tmp_path, monkeypatch):
    # torch.compile takes minutes on a 2-core CPU; a stand-in wrapper with the same
    # '_orig_mod' layout checks the wiring: steps go through it, checkpoints do not.
    import train

    class Compiled(torch.nn.Module):
        calls = 0

        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, images):
            Compiled.calls += 1
            return self._orig_mod(images)

    monkeypatch.setattr(torch, "compile", Compiled)
    args = train.get_args_parser().parse_args(
        ["--data_dir", str(tiny_zips[0]), "--checkpoint_dir", str(tmp_path), "--epochs", "1", "--compile"]
        + [str(flag) for flag in TRAIN_FLAGS]
    )
    train.main(args)
    assert Compiled.calls >= 2  # training steps and validation went through the compiled model
    checkpoint = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=True)
    assert not any(key.startswith("_orig_mod") for key in checkpoint["model"])


def test_a_new_lr_applies_when_resuming_a_constant_schedule(tiny_zips, tiny_checkpoint, tmp_path, capsys):
    from helpers import run_script, tiny_train_argv

    import train

    argv = tiny_train_argv(tiny_zips[0], tmp_path, "--checkpoint", tiny_checkpoint, "--lr", 5e-4, "--workers", 0,
                           epochs=2)  # fmt: skip
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    assert "learning rate 0.0005 from here on (the checkpoint trained at 0.0001)" in out
    checkpoint = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=True)
    assert {group["lr"] for group in checkpoint["optimizer"]["param_groups"]} == {5e-4}
    assert checkpoint["args"]["lr"] == 5e-4
