"""Deployment: ONNX and TorchScript exports of a tiny trained model, checked against PyTorch at two
sizes (one not a multiple of 32), the INT8 model, evaluate.py on an .onnx, and torch.hub."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, assert_one_clear_line, run_script
from PIL import Image

import evaluate
import export
from densedepth.deploy import DepthInMetres, example_input, load_torchscript_metadata
from densedepth.depth import KITTI_DEPTH_RANGE, NYU_DEPTH_RANGE
from densedepth.encoders import LIGHT_ENCODER
from model import DenseDepth, Variant, model_config, model_from_checkpoint, variant_for
from utils import load_checkpoint

ort = pytest.importorskip("onnxruntime", reason="the deployment extras: pip install -r requirements-deploy.txt")
onnx = pytest.importorskip("onnx", reason="the deployment extras: pip install -r requirements-deploy.txt")

SIZES = ((64, 64), (75, 249))  # the training size, and one that is not a multiple of 32


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tiny_zips, tmp_path_factory):
    """(folder, model.onnx, model.int8.onnx, model.pt) of the tiny trained model (input 64x64)."""
    folder = tmp_path_factory.mktemp("exported")
    for file_format, name, extra in (("onnx", "model.onnx", ["--int8", "--calibration", tiny_zips[1]]),
                                     ("torchscript", "model.pt", [])):  # fmt: skip
        argv = ["--model", tiny_checkpoint, "--format", file_format, "--output", folder / name, *extra]
        args = export.get_args_parser().parse_args([str(arg) for arg in argv])
        export.main(args)
    return folder, folder / "model.onnx", folder / "model.int8.onnx", folder / "model.pt"


def reference(checkpoint_path, pictures):
    model = model_from_checkpoint(load_checkpoint(checkpoint_path), checkpoint_path).eval()
    with torch.no_grad():
        return DepthInMetres(model).eval()(pictures).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_onnxruntime_gives_pytorchs_depth_at_any_size(exported, tiny_checkpoint, size):
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    pictures = example_input(size, uint8_input=True, batch=3, seed=5)
    (depth_m,) = session.run(["depth_m"], {"image": pictures.numpy()})
    expected = reference(tiny_checkpoint, pictures)
    assert depth_m.shape == (3, 1, *size)
    assert np.abs(depth_m - expected).max() <= 1e-4 * np.abs(expected).max()

@pytest.mark.slow
@pytest.mark.parametrize("encoder", [LIGHT_ENCODER, "convnext_tiny"])
def test_other_encoders_export_to_onnx_with_pytorchs_depth(encoder, tmp_path):
    """The light model (BatchNorms folded on export) and ConvNeXt (LayerNorm, the picture as its stride-2
    skip) through export.py: onnxruntime's depth is PyTorch's to 1e-4, at a size no multiple of 32."""
    torch.manual_seed(0)
    model = DenseDepth(0.125, encoder=encoder, variant=variant_for(encoder)).eval()
    with torch.no_grad():  # depth that varies over the picture (random weights alone give the 10 m cap)
        model.head.weight.mul_(50)
        model.head.bias.fill_(20.0)
    path = tmp_path / f"{encoder}.pth"
    torch.save({"model": model.state_dict(), "config": model_config(model, (64, 64)), "args": {}}, path)
    argv = ["--model", path, "--format", "onnx", "--output", path.with_suffix(".onnx")]
    export.main(export.get_args_parser().parse_args([str(arg) for arg in argv]))
    session = ort.InferenceSession(str(path.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    pictures = example_input(SIZES[1], uint8_input=True, batch=2, seed=4)
    (depth_m,) = session.run(["depth_m"], {"image": pictures.numpy()})
    expected = reference(path, pictures)
    assert depth_m.shape == (2, 1, *SIZES[1]) and expected.std() > 0
    assert np.abs(depth_m - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
def test_a_replicate_padded_decoder_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    model = DenseDepth(0.0625, variant=Variant(decoder_padding="replicate")).eval()
    torch.save({"model": model.state_dict(), "config": model_config(model, (64, 64)), "args": {}}, tmp_path / "r.pth")
    argv = ["--model", tmp_path / "r.pth", "--format", "onnx", "--output", tmp_path / "r.onnx"]
    export.main(export.get_args_parser().parse_args([str(arg) for arg in argv]))
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    pictures = example_input(SIZES[1], uint8_input=True, batch=2, seed=3)
    (depth_m,) = session.run(["depth_m"], {"image": pictures.numpy()})
    expected = reference(tmp_path / "r.pth", pictures)
    assert np.abs(depth_m - expected).max() <= 1e-4 * np.abs(expected).max()

@pytest.mark.slow
def test_the_onnx_file_says_what_goes_in_and_comes_out(exported):
    meta = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    assert "uint8" in props["input"] and "metres" in props["output"]
    assert (props["min_depth_m"], props["max_depth_m"], props["input_size"]) == ("0.1", "10.0", "64 64")


@pytest.mark.slow
def test_torchscript_loads_with_torch_alone(exported, tiny_checkpoint, tmp_path):
    """In a fresh Python that has torch and nothing of this repository."""
    pictures = example_input(SIZES[1], uint8_input=True, batch=2, seed=6)
    np.save(tmp_path / "pictures.npy", pictures.numpy())
    script = (
        f"import numpy, torch; model = torch.jit.load(r'{exported[3]}'); "
        "numpy.save('depth.npy', model(torch.from_numpy(numpy.load('pictures.npy'))).detach().numpy())"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    depth_m, expected = np.load(tmp_path / "depth.npy"), reference(tiny_checkpoint, pictures)
    assert depth_m.shape == expected.shape and np.abs(depth_m - expected).max() <= 1e-5 * np.abs(expected).max()
    assert load_torchscript_metadata(exported[3])["max_depth_m"] == "10.0"

@pytest.mark.slow
def test_the_int8_model_runs_and_stays_close(exported):
    pictures = example_input(SIZES[0], uint8_input=True, batch=2, seed=7).numpy()
    runs = {}
    for path in exported[1:3]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs[path.name] = session.run(["depth_m"], {"image": pictures})[0]
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(exported[2])).graph.node)
    relative = np.abs(runs["model.int8.onnx"] - runs["model.onnx"]) / runs["model.onnx"]
    assert np.median(relative) < 0.05

@pytest.mark.slow
def test_evaluate_runs_an_onnx_by_the_same_protocol(exported, tiny_checkpoint, tiny_zips, tmp_path, capsys):
    metrics, outputs = {}, {}
    for name, model in (("onnx", exported[1]), ("pth", tiny_checkpoint)):
        argv = ["--model", model, "--data", tiny_zips[1], "--output_dir", tmp_path / name, "--precision", "fp32"]
        status, outputs[name], err = run_script(evaluate, argv + ["--num_examples", 1], capsys)
        assert status == 0, err
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())["per_image"]
    assert "run by onnxruntime" in outputs["onnx"] and (tmp_path / "onnx" / "examples" / "0000.png").is_file()
    for key in ("delta1", "abs_rel", "rms"):  # the pictures go in as uint8: rounding, no more
        assert metrics["onnx"][key] == pytest.approx(metrics["pth"][key], abs=0.01), key
    picture = tmp_path / "picture.png"
    Image.fromarray(example_input((50, 70), True)[0].permute(1, 2, 0).numpy()).save(picture)
    argv = ["--model", exported[1], "--img", picture, "--output_dir", tmp_path / "img"]
    status, _, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    assert np.load(tmp_path / "img" / "picture_depth_m.npy").shape == (50, 70)


@pytest.mark.slow  # 9 s on Zen 3
def test_torch_hub_gives_the_model_with_its_settings(tiny_checkpoint):
    model = torch.hub.load(str(ROOT), "densedepth", source="local", weights=str(tiny_checkpoint))
    state = load_checkpoint(tiny_checkpoint)["model"]
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())
    assert model.decoder_width == 0.0625 and not model.training
    metres = torch.hub.load(str(ROOT), "densedepth", source="local", weights=str(tiny_checkpoint), metres=True)
    depth_m = metres(torch.rand(1, 3, 50, 70))
    assert depth_m.shape == (1, 1, 50, 70) and 0.1 <= depth_m.min() and depth_m.max() <= 10

@pytest.mark.slow
def test_deployment_bad_input(exported, tiny_checkpoint, tiny_zips, tmp_path, capsys):
    argv = ["--model", tiny_checkpoint, "--format", "torchscript", "--output", tmp_path / "m.pt", "--int8"]
    assert_one_clear_line(run_script(export, argv, capsys), "--int8 quantises an ONNX model")
    argv = ["--model", tiny_checkpoint, "--format", "onnx", "--output", tmp_path / "m.onnx", "--int8"]
    assert_one_clear_line(run_script(export, argv, capsys), "--int8 calibrates on pictures like", "give --calibration")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not a model")
    argv = ["--model", bogus, "--img", exported[0] / "missing.png", "--output_dir", tmp_path]
    assert_one_clear_line(run_script(evaluate, argv, capsys), "missing.png does not exist")
    argv = ["--model", bogus, "--data", tiny_zips[1], "--output_dir", tmp_path]
    assert_one_clear_line(run_script(evaluate, argv, capsys), "bogus.onnx could not be loaded by onnxruntime")


# ----------------------------------------------------------------------------- onnxruntime under --precision auto


@pytest.fixture
def auto_cpu(monkeypatch, tmp_path):
    """A CPU without AMX (INT8 not tried) and an empty torch cache; the module under test."""
    from densedepth import deploy

    monkeypatch.setattr(deploy, "cpu_has_amx_int8", lambda: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return deploy


def small_model(depth_range=NYU_DEPTH_RANGE):
    torch.manual_seed(0)
    model = DenseDepth(0.0625, depth_range=depth_range).eval()
    with torch.no_grad():  # depth that varies over the picture, inside the range
        model.head.weight.mul_(30)
        model.head.bias.fill_(30.0 if depth_range == NYU_DEPTH_RANGE else 5.0)
    return model


def work_of(picture, count=64):
    """Work of `count` pictures, the first of them `picture`."""
    from densedepth.deploy import Work

    return Work(count, lambda wanted: [picture][:wanted])


def auto_line(out):
    lines = [line for line in out.splitlines() if line.startswith("precision auto:")]
    assert len(lines) == 1, out
    return lines[0]


def test_auto_runs_long_work_in_onnxruntime_with_pytorchs_depth(auto_cpu, monkeypatch, capsys):
    """Where onnxruntime is faster (here: said so) on work long enough, 'auto' in fp32 on the CPU exports the
    model once into torch's cache and runs it there; the depth is PyTorch's at other sizes than the one it
    was traced at (48x80, padded inside to 64x96; the picture's network size 32x128, not padded), with
    the mirror and KITTI's depth range."""
    monkeypatch.setattr(auto_cpu, "ORT_MIN_WORK_SECONDS", 0)
    timings = iter([0.4, 0.2])  # PyTorch's, then onnxruntime's, for a picture and its mirror
    monkeypatch.setattr(auto_cpu, "seconds_per_batch", lambda run, batch, repeats=2: next(timings))
    model, cpu = small_model(KITTI_DEPTH_RANGE), torch.device("cpu")
    picture = torch.randint(0, 256, (3, 75, 249), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    chosen, dtype = auto_cpu.prediction_model(model, torch.float32, (48, 80), "auto", cpu, work_of(picture))
    assert isinstance(chosen, auto_cpu.OnnxDepthModel) and dtype == torch.float32
    line = auto_line(capsys.readouterr().out)
    assert line.startswith("precision auto: fp32 in onnxruntime (") and "onnxruntime 100.0 ms a picture against " \
        "PyTorch's 200.0 ms, the same depth to" in line and line.endswith("INT8 not tried: this CPU has no AMX-INT8")
    cached = list((auto_cpu.Path(torch.hub.get_dir()) / "densedepth_onnx").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".onnx"
    from densedepth.protocol import network_size, predict_depth_m

    size = network_size((75, 249), (48, 80))
    assert size == (32, 128) and chosen.depth_range == KITTI_DEPTH_RANGE
    with torch.no_grad():
        expected = predict_depth_m(model, picture[None], size, (75, 249))
        depth_m = predict_depth_m(chosen, picture[None], size, (75, 249))
    assert 1 < float(expected.min()) < float(expected.max()) < 80  # not clipped to the range
    assert float((depth_m - expected).abs().max()) <= 1e-4 * float(expected.max())

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(auto_cpu, "export_onnx", no_export)  # the second run reads the cache
    timings = iter([0.4, 0.2])
    chosen, _ = auto_cpu.prediction_model(model, torch.float32, (48, 80), "auto", cpu, work_of(picture))
    assert isinstance(chosen, auto_cpu.OnnxDepthModel) and chosen.path == cached[0]


def test_auto_keeps_pytorch_where_onnxruntime_does_not_pay(auto_cpu, monkeypatch, capsys):
    """Short work (the real thresholds: a tiny model on 32 pictures, 31 pictures), pictures not known in advance, a
    slower or different onnxruntime and a failed export all keep the PyTorch model, each saying why."""
    model, cpu = small_model(), torch.device("cpu")
    picture = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)

    def chosen_and_line(work):
        chosen, _ = auto_cpu.prediction_model(model, torch.float32, (64, 64), "auto", cpu, work)
        return chosen, auto_line(capsys.readouterr().out)

    chosen, line = chosen_and_line(work_of(picture, 32))  # the fewest tried: 5 s leaves 150 ms a picture
    assert chosen is model and line.startswith("precision auto: fp32 (")
    seconds = re.search(r"onnxruntime not tried for (\d+\.\d) s of work\)", line)
    assert seconds and float(seconds[1]) < auto_cpu.ORT_MIN_WORK_SECONDS, line
    assert "onnxruntime not tried for 31 pictures (from 32)" in chosen_and_line(work_of(picture, 31))[1]
    assert not (auto_cpu.Path(torch.hub.get_dir()) / "densedepth_onnx").exists()
    assert "onnxruntime not tried: the pictures are not known in advance" in chosen_and_line(None)[1]
    monkeypatch.setattr(auto_cpu, "ORT_MIN_WORK_SECONDS", 0)
    timings = iter([0.1, 0.115])  # onnxruntime 15 % slower than PyTorch: PyTorch (at 10 %, onnxruntime: above)
    monkeypatch.setattr(auto_cpu, "seconds_per_batch", lambda run, batch, repeats=2: next(timings))
    chosen, line = chosen_and_line(work_of(picture))
    assert chosen is model and "; onnxruntime 57.5 ms a picture against PyTorch's 50.0 ms); INT8" in line
    monkeypatch.setattr(auto_cpu, "seconds_per_batch", lambda run, batch, repeats=2: 0.1)
    monkeypatch.setattr(auto_cpu, "ORT_MAX_DIFFERENCE", -1.0)
    chosen, line = chosen_and_line(work_of(picture))
    assert chosen is model and "onnxruntime's depth differs from PyTorch's by " in line

    def failing_export(module, path, example, meta, traced=False):
        path.write_bytes(b"half an ONNX file")
        raise RuntimeError("the tracer gave up\nwith a long story")

    monkeypatch.setattr(auto_cpu, "export_onnx", failing_export)
    model = small_model()  # other weights' digest: not in the cache yet
    with torch.no_grad():
        model.head.bias.fill_(29.0)
    chosen, line = chosen_and_line(work_of(picture))
    assert chosen is model and "onnxruntime not tried: the tracer gave up)" in line
    folder = auto_cpu.Path(torch.hub.get_dir()) / "densedepth_onnx"
    assert [path.name for path in folder.iterdir()] == [auto_cpu.auto_onnx_path(small_model(), (64, 64)).name]


def test_exported_models_take_uint8_frames_as_they_are(auto_cpu, tmp_path):
    """Frames at the network's size go to a uint8 ONNX model (as export.py writes it) without a pass through
    float, with the same depth as the float pictures give; other sizes, float pictures, 'auto''s float
    network and PyTorch models are not given uint8."""
    from densedepth.protocol import predict_depth_m, takes_as_they_are

    model = small_model()
    path = tmp_path / "uint8.onnx"
    meta = auto_cpu.metadata(model_config(model, (64, 64)), True, "a test")
    auto_cpu.export_onnx(DepthInMetres(model, True).eval(), path, example_input((64, 64), True), meta, traced=True)
    exported = auto_cpu.OnnxDepthModel(path)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # as video.py's
    assert takes_as_they_are(exported, frames, (64, 64)) and not takes_as_they_are(exported, frames, (64, 96))
    assert not takes_as_they_are(exported, frames.float() / 255, (64, 64))
    assert not takes_as_they_are(model, frames, (64, 64))  # PyTorch models take float
    assert not takes_as_they_are(auto_cpu.onnx_for_auto(model, (64, 64)), frames, (64, 64))
    as_they_are = predict_depth_m(exported, frames, (64, 64), (64, 64))
    through_float = predict_depth_m(exported, frames.float() / 255, (64, 64), (64, 64))
    assert torch.equal(as_they_are, through_float)


# ----------------------------------------------------------------------------- the demo's Live tab


def test_live_network_runs_on_the_threads_of_its_thread(auto_cpu, monkeypatch, tmp_path):
    """The Live tab's network, chosen in a thread of its own (more threads than torch's default here, so that
    a count taken from elsewhere shows): 'auto' in fp32 runs the model in onnxruntime on that thread's count
    where it is faster, with PyTorch's depth on frames of another size, after timing both on that count;
    otherwise, or where onnxruntime is slower, the model itself; exported models get a session of their own
    and stay what they are; on another device, and for compiled INT8, the model itself."""
    from densedepth.protocol import predict_depth_m
    from utils import TorchThread

    model, count = small_model(), torch.get_num_threads() + 1
    thread, cpu = TorchThread(count), torch.device("cpu")
    threads_timed = []

    def timed_as(*seconds):
        times = iter(seconds)

        def timed(run, batch, repeats=2):
            threads_timed.append(torch.get_num_threads())
            return next(times)

        monkeypatch.setattr(auto_cpu, "seconds_per_batch", timed)

    timed_as(0.2, 0.1)  # PyTorch's, then onnxruntime's
    chosen, engine, why = thread.run(auto_cpu.live_network, model, (64, 64), cpu, True)
    assert isinstance(chosen, auto_cpu.OnnxNetwork) and engine == f"onnxruntime on {count} threads"
    assert why.startswith("onnxruntime 100.0 ms a picture against PyTorch's 200.0 ms, the same depth to ")
    assert chosen.session.get_session_options().intra_op_num_threads == count and threads_timed == [count, count]
    frame = torch.randint(0, 256, (1, 3, 48, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = predict_depth_m(model, frame, (64, 64), (48, 80))
        depth_m = predict_depth_m(chosen, frame, (64, 64), (48, 80))
    assert float(expected.max()) > float(expected.min()) > 0
    assert float((depth_m - expected).abs().max()) <= 1e-4 * float(expected.max())
    assert thread.run(auto_cpu.live_network, chosen, (64, 64), cpu, True)[0].returns_depth_m is False

    timed_as(0.1, 0.2)
    assert thread.run(auto_cpu.live_network, model, (64, 64), cpu, True) == (
        model, f"PyTorch on {count} threads", "onnxruntime 200.0 ms a picture against PyTorch's 100.0 ms")
    assert thread.run(auto_cpu.live_network, model, (64, 64), cpu, False) == (model, f"PyTorch on {count} threads", "")
    assert auto_cpu.live_network(model, (64, 64), torch.device("cuda"), True) == (model, "PyTorch on cuda", "")
    int8 = auto_cpu.Int8DepthModel(model, model.depth_range)
    assert auto_cpu.live_network(int8, (64, 64), cpu, True) == (int8, "PyTorch INT8", "")

    path = tmp_path / "model.onnx"
    meta = auto_cpu.metadata(model_config(model, (64, 64)), True, "a test")
    auto_cpu.export_onnx(DepthInMetres(model, True).eval(), path, example_input((64, 64), True), meta, traced=True)
    chosen, engine, _ = thread.run(auto_cpu.live_network, auto_cpu.OnnxDepthModel(path), (64, 64), cpu, True)
    assert chosen.path == path and chosen.returns_depth_m and engine == f"onnxruntime on {count} threads"
    assert chosen.session.get_session_options().intra_op_num_threads == count
