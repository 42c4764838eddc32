"""--precision int8: a model quantised by PT2E (torchao) predicts within the accuracy bound; 'auto'
picks INT8 only where it is faster and agrees with fp32 on pictures other than the calibration ones,
tries it only for work that pays for minutes of quantising, and says why in one line; a machine
without torchao or AMX falls back with one line; no default calibration file.

Inductor's compile of DenseNet-169 takes minutes on 2 cores, so the quantised graph runs here as
converted (the same INT8 arithmetic, uncompiled); bench/benchmark.py --deploy times it compiled."""

import importlib.util
import json
import re

import numpy as np
import pytest
import torch
from helpers import assert_one_clear_line, run_script

import evaluate
import utils
from densedepth import deploy
from model import DenseDepth

needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="requirements-deploy.txt")


@needs_torchao
@pytest.mark.slow
def test_int8_predicts_within_the_bound_of_fp32(varied_checkpoint, tiny_zips, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    metrics = {}
    for precision in ("fp32", "int8"):
        argv = ["--model", varied_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path / precision]
        status, out, err = run_script(evaluate, [*argv, "--precision", precision], capsys)  # calibrated on its own
        assert status == 0, err
        metrics[precision] = json.loads((tmp_path / precision / "metrics.json").read_text())
    assert "precision int8: quantised and compiled in" in out
    share = float(out.split("fp32's depth on ")[1].split("%")[0]) / 100
    assert share >= deploy.INT8_MIN_AGREEMENT
    assert metrics["int8"]["precision"] == "int8"
    int8, fp32 = metrics["int8"]["per_image"], metrics["fp32"]["per_image"]
    assert int8["abs_rel"] != fp32["abs_rel"]  # quantised, not fp32 under another name
    assert abs(int8["delta1"] - fp32["delta1"]) <= 0.01 and abs(int8["abs_rel"] - fp32["abs_rel"]) <= 0.01


class FakeQuantised(deploy.Int8DepthModel):
    """The fp32 network (agreement 1) or a scaled one, so the choice can be tested without quantising."""

    def __init__(self, model, scale=1.0):
        super().__init__(lambda images: model(images) * scale, model.depth_range)


@pytest.mark.parametrize(
    ("int8_s", "scale", "picked", "words"),
    [
        (0.1, 1.0, torch.int8, "precision auto: int8; INT8 0.10 s"),
        (0.3, 1.0, torch.float32, "precision auto: fp32; INT8 0.30 s a picture and its mirror against fp32's 0.20 s"),
        (0.1, 2.0, torch.float32, "precision auto: fp32; INT8 within 1.25x of fp32's depth on 0.0% of the pixels"),
    ],
)
def test_auto_picks_int8_only_when_faster_and_close(monkeypatch, int8_s, scale, picked, words):
    torch.manual_seed(0)
    model = DenseDepth(0.0625).eval()
    with torch.no_grad():  # depth about 0.5 m, inside the range, so that a scaled output is off by `scale`
        model.head.weight.mul_(50)
        model.head.bias.fill_(20.0)
    monkeypatch.setattr(deploy, "quantize_pt2e", lambda model, calibration, compile=True: FakeQuantised(model, scale))
    monkeypatch.setattr(
        deploy, "seconds_per_batch", lambda run, batch: int8_s if isinstance(run, deploy.Int8DepthModel) else 0.2
    )
    calibration = [torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8).numpy()]
    check = [torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8).numpy()]
    chosen, dtype, line = deploy.choose_int8(model, torch.float32, "auto", calibration, check)
    assert dtype == picked and (chosen is model) == (picked == torch.float32)
    assert line.startswith(words) and "\n" not in line


def test_auto_says_why_int8_is_not_tried(monkeypatch, tiny_checkpoint, tiny_zips, tmp_path, capsys):
    cpu = torch.device("cpu")
    monkeypatch.setattr(deploy, "cpu_has_amx_int8", lambda: False)
    assert deploy.int8_not_tried(cpu) == "this CPU has no AMX-INT8"
    assert deploy.int8_not_tried(torch.device("cuda")) == "INT8 runs on the CPU"
    argv = ["--model", tiny_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path, "--precision", "auto"]
    status, out, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    lines = [line for line in out.splitlines() if line.startswith("precision auto:")]
    assert len(lines) == 1 and lines[0].endswith("INT8 not tried: this CPU has no AMX-INT8"), out
    monkeypatch.setattr(deploy.importlib.util, "find_spec", lambda name: None)
    assert deploy.int8_not_tried(cpu) == "INT8 needs torchao (pip install -r requirements-deploy.txt)"


def test_int8_without_torchao_or_on_a_gpu_is_one_line(monkeypatch, tiny_checkpoint, tiny_zips, tmp_path, capsys):
    real_import = deploy.importlib.import_module

    def no_torchao(name):
        if name.startswith("torchao"):
            raise ImportError(name)
        return real_import(name)

    monkeypatch.setattr(deploy.importlib, "import_module", no_torchao)
    argv = ["--model", tiny_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path, "--precision", "int8"]
    assert_one_clear_line(
        run_script(evaluate, [*argv, "--calibration", tiny_zips[1]], capsys), "torchao", "requirements-deploy.txt"
    )
    with pytest.raises(deploy.UserError, match="--precision int8 runs on the CPU"):
        utils.choose_precision("int8", torch.device("cuda"))


def amx_machine(monkeypatch):
    """As on a Xeon with AMX and torchao installed: 'auto' may try INT8."""
    monkeypatch.setattr(deploy, "cpu_has_amx_int8", lambda: True)
    monkeypatch.setattr(deploy.importlib.util, "find_spec", lambda name: object())


def test_auto_does_not_quantise_for_small_work(monkeypatch, tiny_checkpoint, tiny_zips, tmp_path, capsys):
    """Quantising and compiling take minutes: 'auto' on 4 pictures must not pay them (nor at the demo's start)."""
    amx_machine(monkeypatch)

    def refuse(*args, **kwargs):
        raise AssertionError("quantised for small work")

    monkeypatch.setattr(deploy, "quantize_pt2e", refuse)
    argv = ["--model", tiny_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path, "--precision", "auto"]
    status, out, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    # (about 0.0 min; a machine busy with other work can make it 0.1)
    assert re.search(r"INT8 not tried: 4 pictures take about 0\.\d min in ", out), out
    assert "too little to pay for quantising" in out
    model = DenseDepth(0.0625).eval()
    cpu = torch.device("cpu")
    deploy.prediction_model(model, torch.float32, (64, 64), "auto", cpu, work=None)  # the demo: work unknown
    assert "INT8 not tried: the pictures are not known in advance" in capsys.readouterr().out


def test_auto_calibrates_on_the_work_and_checks_on_other_pictures(monkeypatch, tiny_checkpoint, tiny_zips, tmp_path,
                                                                 capsys):  # fmt: skip
    """Work large enough: INT8 is tried, calibrated on the first pictures of --data (no default file that only
    the quick start makes) and compared with fp32 on the next ones, never the same pictures."""
    amx_machine(monkeypatch)
    monkeypatch.setattr(deploy, "INT8_MIN_WORK_SECONDS", 0)
    seen = {}

    def record(model, dtype, precision, calibration, check):
        seen.update(calibration=calibration, check=check)
        return model, dtype, "precision auto: fp32; recorded"

    monkeypatch.setattr(deploy, "choose_int8", record)
    monkeypatch.chdir(tmp_path)  # no data/sample/ here
    argv = ["--model", tiny_checkpoint, "--data", tiny_zips[1], "--output_dir", tmp_path, "--precision", "auto"]
    status, out, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    assert "recorded" in out and len(seen["calibration"]) == 2 and len(seen["check"]) == 2
    for checked in seen["check"]:
        assert not any(np.array_equal(checked, calibrated) for calibrated in seen["calibration"])
    assert evaluate.get_args_parser().parse_args(["--model", "m.pth", "--img", "a.png"]).calibration is None
