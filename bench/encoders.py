"""The encoders side by side on this machine's CPU (python -m bench.benchmark --encoders): for each, under
DenseDepth's decoder at its recommended width,

  parameters and GFLOPs of one 640x480 picture (no mirror),
  CPU milliseconds a picture at 320x240 and 640x480, batch 1, no mirror: PyTorch fp32, bf16 (where the CPU
      has it natively) and onnxruntime INT8 (exported and quantised as export.py --int8 does it),
  training pictures/s at 240x320, batch 4, in the precision 'auto' picks,
  delta1 on the rendered rooms after the same minutes of training from scratch (the quick start's recipe:
      96x128, batch 8, a warmed-up cosine rate of 7e-4, replicate-padded decoder), per image, on the
      sample test zip,

and the light model's frames per second through evaluate.py --img on a 320x240 clip (decoding, prediction,
colour and encoding). Every case runs in a fresh process; weights are random where speed is measured.
"""

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def new_model(name, width=None, padding="zeros"):
    from model import DenseDepth, variant_for

    torch.manual_seed(0)
    return DenseDepth(width, encoder=name, variant=variant_for(name, decoder_padding=padding))


def milliseconds(run, repeats):
    """Median milliseconds of run() over `repeats` calls, after two untimed ones."""
    run()
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def case_size_and_speed(name, repeats):
    """Parameters, GFLOPs at 640x480 and PyTorch's milliseconds a picture at 320x240 and 640x480."""
    from torch.utils.flop_counter import FlopCounterMode

    from densedepth.inference import fold_batchnorms
    from utils import cpu_has_native_bf16

    model = new_model(name).eval()
    parameters = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 480, 640))
    model = fold_batchnorms(model).to(memory_format=torch.channels_last)
    result = {"parameters_m": parameters / 1e6, "gflops_640x480": counter.get_total_flops() / 1e9}
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if cpu_has_native_bf16() else {})}
    for size in ((240, 320), (480, 640)):
        picture = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
        for label, dtype in dtypes.items():

            def predict():
                with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    model(picture)

            result[f"ms_{label}_{size[1]}x{size[0]}"] = milliseconds(predict, repeats)
    return result


def case_int8(name, out_dir, calibration, repeats):
    """onnxruntime INT8's milliseconds a picture at 320x240 and 640x480, from an export of the model."""
    import onnxruntime as ort

    from model import model_config

    model = new_model(name)
    checkpoint = Path(out_dir) / f"{name}.pth"
    torch.save({"model": model.state_dict(), "config": model_config(model, (480, 640)), "args": {}}, checkpoint)
    onnx_path = checkpoint.with_suffix(".onnx")
    command = [sys.executable, str(ROOT / "export.py"), "--model", str(checkpoint), "--format", "onnx", "--output",
               str(onnx_path), "--int8", "--calibration", str(calibration), "--calibration_count", "8"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    session = ort.InferenceSession(str(onnx_path.with_suffix(".int8.onnx")), providers=["CPUExecutionProvider"])
    result = {}
    for height, width in ((240, 320), (480, 640)):
        feed = {"image": np.random.default_rng(0).integers(0, 256, (1, 3, height, width), dtype=np.uint8)}
        result[f"ms_int8_{width}x{height}"] = milliseconds(lambda: session.run(None, feed), repeats)
    return result


def case_training_speed(name, repeats):
    """Training pictures/s at 240x320, batch 4 (forward, loss, backward, Adam), in 'auto's precision."""
    from densedepth.training import Learner, build_optimizer, train_step
    from loss import DepthLoss
    from utils import choose_precision, precision_name

    device = torch.device("cpu")
    dtype = choose_precision("auto", device)
    model = new_model(name).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, 1e-4, device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    learner = Learner(model, model, model, DepthLoss(), optimizer, scaler, device, dtype)
    images = torch.rand(4, 3, 240, 320).contiguous(memory_format=torch.channels_last)
    depth_m = torch.rand(4, 1, 120, 160) * 9 + 0.5
    seconds = milliseconds(lambda: train_step(learner, images, depth_m), repeats) / 1000
    return {"train_pictures_per_s": 4 / seconds, "train_precision": precision_name(dtype)}


def case_accuracy(name, train_zip, test_zip, minutes):
    """delta1 and abs rel on the sample test zip after `minutes` of training from scratch by the quick
    start's recipe: the schedule sized to the steps the first few steps say fit in the time."""
    from torch.utils.data import DataLoader

    from data import EigenTestZip, TrainingOrder, collate_pairs, open_nyu_training_sets
    from densedepth.protocol import eigen_batches, evaluate_protocol
    from densedepth.training import Learner, Schedule, build_optimizer, set_learning_rate, train_step, training_batch
    from loss import DepthLoss
    from utils import choose_precision

    device, input_size, batch_size = torch.device("cpu"), (96, 128), 8
    dtype = choose_precision("auto", device)
    train_set, _ = open_nyu_training_sets(train_zip)
    model = new_model(name, padding="replicate").to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, 7e-4, device)
    learner = Learner(model, model, model, DepthLoss(), optimizer, torch.amp.GradScaler("cpu", enabled=False), device,
                      dtype)  # fmt: skip
    schedule, steps, total = Schedule(7e-4, "cosine", 30), 0, None
    started, epoch = time.perf_counter(), 0
    while total is None or steps < total:
        epoch += 1
        order = TrainingOrder(len(train_set), 0, batch_size)
        order.start(epoch)
        loader = DataLoader(train_set, batch_size, sampler=order, collate_fn=collate_pairs, num_workers=1)
        for images, depth_m, _ in loader:
            if total is not None and steps >= total:
                break
            set_learning_rate(optimizer, schedule, steps, total or 10**6)
            train_step(learner, *training_batch(images, depth_m, input_size, device))
            steps += 1
            if steps == 10:  # the rate so far says how many steps fit in the time
                total = max(10, int(minutes * 60 / ((time.perf_counter() - started) / steps)))
    trained_s = time.perf_counter() - started
    test_set = EigenTestZip(test_zip)
    metrics = evaluate_protocol(model.eval(), eigen_batches(test_set, 8), input_size, test_set.crop, device, dtype,
                                bar={"disable": True})  # fmt: skip
    values = metrics.compute("per_image")
    return {"delta1": values["delta1"], "abs_rel": values["abs_rel"], "steps": steps, "trained_s": trained_s}


def case_light_video(clip, out_dir, calibration, repeats=2):
    """Frames/s of evaluate.py --img on a 320x240 clip with the light model (trained at 240x320, random
    weights, no mirror), the best of `repeats` runs: from its checkpoint in the precision 'auto' picks,
    and from its INT8 export (export.py --int8, calibrated on `calibration`), run by onnxruntime."""
    from densedepth.encoders import LIGHT_ENCODER
    from model import model_config

    model = new_model(LIGHT_ENCODER)
    checkpoint = Path(out_dir) / "light.pth"
    torch.save({"model": model.state_dict(), "config": model_config(model, (240, 320)), "args": {}}, checkpoint)
    int8_model = checkpoint.with_suffix(".int8.onnx")
    command = [sys.executable, str(ROOT / "export.py"), "--model", str(checkpoint), "--format", "onnx", "--output",
               str(checkpoint.with_suffix(".onnx")), "--int8", "--calibration", str(calibration)]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = {}
    for key, model_file in (("auto", checkpoint), ("int8_onnx", int8_model)):
        rates, lines = [], []
        for _ in range(repeats):
            command = [sys.executable, str(ROOT / "evaluate.py"), "--model", str(model_file), "--img", str(clip),
                       "--output_dir", str(out_dir), "--no_flip", "--batch_size", "8"]  # fmt: skip
            lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
            report = next(text for text in lines if "frames/s" in text)
            rates.append(float(report.split("(")[1].split(" frames/s")[0]))
        precision = next((text for text in lines if text.startswith("precision auto:")), "an exported INT8 .onnx")
        result[key] = {"fps": max(rates), "runs": rates, "precision_line": precision}
    return {**result["auto"], "int8_onnx": result["int8_onnx"]}


def clip_320x240(path, frames=600):
    """A 320x240 H.264 clip of four rendered rooms (a few seconds each) with sensor noise, 30 frames/s."""
    import av

    from rendering.scenes import render_scene

    views = [render_scene(seed, 1, 0, 1, 320, 240)[1][0][0].astype(np.float32) for seed in range(4)]
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            frame = np.clip(views[(index // 30) % 4] + rng.normal(0, 3, views[0].shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def quickstart_data(folder=ROOT / "data/sample"):
    """The quick start's sample zips (800 training and 100 test rooms at 320x240), rendered if missing."""
    train_zip, test_zip = Path(folder) / "nyu_data.zip", Path(folder) / "nyu_test.zip"
    if not (train_zip.is_file() and test_zip.is_file()):
        command = [sys.executable, str(ROOT / "sample_data.py"), "--out", str(folder), "--train_images", "800",
                   "--test_images", "100", "--width", "320", "--height", "240"]  # fmt: skip
        subprocess.run(command, check=True)
    return train_zip, test_zip


def run_encoder_cases(args, names, in_fresh_process):
    """Every case for each encoder, printed as it comes; the rows and the light model's video rate."""
    from densedepth.encoders import ENCODERS

    train_zip, test_zip = quickstart_data()
    out_dir = Path(args.out_dir) / "encoders"
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = Path(tempfile.mkdtemp(dir=out_dir))
    calibration_pictures(calibration)
    rows = {}
    for name in names:
        row = {"decoder_width": ENCODERS[name].decoder_width}
        row.update(in_fresh_process(case_size_and_speed, name, args.repeats))
        row.update(in_fresh_process(case_training_speed, name, args.repeats))
        try:
            row.update(in_fresh_process(case_int8, name, str(out_dir), str(calibration), args.repeats))
        except Exception as err:  # noqa: BLE001 (one encoder's export failing is a row's note, not the end)
            row["int8_error"] = str(err).splitlines()[0][:200]
        row.update(in_fresh_process(case_accuracy, name, str(train_zip), str(test_zip), args.minutes))
        rows[name] = row
        shown = {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
        print(f"{name}: {json.dumps(shown)}", flush=True)
    light = in_fresh_process(case_light_video, str(clip_320x240(out_dir / "clip_320x240.mp4")), str(out_dir),
                             str(calibration))  # fmt: skip
    return {"rows": rows, "light_video": light}


def calibration_pictures(folder, count=12):
    """Rendered rooms at 640x480 for the INT8 calibration (and check) of every encoder."""
    from PIL import Image

    from rendering.scenes import render_scene

    for index in range(count):
        Image.fromarray(render_scene(500 + index, 1, 0, 1, 640, 480)[1][0][0]).save(Path(folder) / f"{index:02d}.png")


def format_encoder_report(machine, results, minutes):
    """The table of docs/models.md, in Markdown, and the light model's video line."""
    rows = results["rows"]
    has_bf16 = any("ms_bf16_320x240" in row for row in rows.values())
    head = ["encoder", "decoder width", "M params", "GFLOPs 640x480", "ms 320x240 fp32"]
    head += ["ms 320x240 bf16"] if has_bf16 else []
    head += ["ms 320x240 INT8", "ms 640x480 fp32"] + (["ms 640x480 bf16"] if has_bf16 else [])
    head += ["ms 640x480 INT8", "train pictures/s", f"delta1 after {minutes:g} min"]
    lines = machine + ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [f"`{name}`", f"{row['decoder_width']:g}", f"{row['parameters_m']:.1f}", f"{row['gflops_640x480']:.0f}"]
        for size in ("320x240", "640x480"):
            for kind in ("fp32", "bf16", "int8") if has_bf16 else ("fp32", "int8"):
                value = row.get(f"ms_{kind}_{size}")
                cells.append(f"{value:.0f}" if value is not None and math.isfinite(value) else "-")
        cells += [f"{row['train_pictures_per_s']:.1f}", f"{row['delta1']:.3f} ({row['steps']} steps)"]
        lines.append("| " + " | ".join(cells) + " |")
    light = results["light_video"]
    lines += ["", "light model through evaluate.py --img on a 320x240 clip (goal >= 60 frames/s):"]
    for label, run in (("its checkpoint", light), ("its INT8 export", light.get("int8_onnx"))):
        if run is not None:
            runs = ", ".join(f"{rate:.1f}" for rate in run["runs"])
            verdict = "met" if run["fps"] >= 60 else "NOT met"
            lines.append(f"  {label}: {run['fps']:.1f} frames/s (runs: {runs}; {verdict}); {run['precision_line']}")
    return "\n".join(lines)
