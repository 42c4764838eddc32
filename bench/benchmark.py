"""Speed and memory of this repo's fast paths, each measured in the same run beside the straightforward path.

On the built-in sample data at 640x480 (rendered into data/bench first if it is not there):
    python -m bench.benchmark
On a GPU, with torch.compile for the training row:
    python -m bench.benchmark --device cuda --compile
Deployment only (needs requirements-deploy.txt): PyTorch fp32 and bf16 against onnxruntime
fp32 and INT8, on the CPU:
    python -m bench.benchmark --deploy
KITTI only: a Velodyne scan projected to ground truth on one core, and the published model's
seconds per 1242x375 frame (kitti.h5's architecture and input size, random weights):
    python -m bench.benchmark --kitti
fill_depth.py only: seconds to fill a 1242x375 frame (full and half size, one core) and the
accuracy of the colorization beside nearest and linear interpolation on rendered rooms:
    python -m bench.benchmark --fill
Videos only (needs requirements-video.txt): frames per second at 640x480 and the share of the time
the network is busy, for the quick start's model and the paper's, and the flicker of a still camera:
    python -m bench.benchmark --video
The encoders side by side (bench/encoders.py, needs requirements-deploy.txt and -video.txt; about an hour
and a half on 2 cores): size, speed at 320x240 and 640x480, training speed, delta1 after the same minutes:
    python -m bench.benchmark --encoders [--encoder_names mobilenet_v3_large resnet50] [--minutes 4]

The straightforward path is what a first port of DenseDepth does: fp32,
contiguous memory, the mirror image as a second forward pass, the test arrays
loaded whole, and a loader that keeps a dictionary of per-file bytes and
decodes with PIL (the original code's approach). Each case runs in a fresh
process, so the peak memory it reports is its own. The table is printed and
saved as JSON beside the run's checkpoint.
"""

import argparse
import concurrent.futures
import importlib.util
import io
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from data import (
    TRAIN_CSV,
    EigenTestZip,
    NYUDepthDataset,
    TrainingOrder,
    collate_pairs,
    open_training_data,
    read_pairs,
)
from densedepth.inference import load_model
from densedepth.nyu_sources import LabeledDataset, LabeledMat, read_splits, write_labeled_mat, write_splits
from densedepth.protocol import crop, eigen_batches, evaluate_protocol, predict_depth_m
from densedepth.training import Learner, build_optimizer, train_step, training_batch
from loss import DepthLoss
from metrics import DepthMetrics
from model import DenseDepth, model_config, output_size
from utils import (
    DEVICE_HELP,
    autocast,
    choose_device,
    choose_precision,
    cpu_bf16_speedup,
    default_workers,
    precision_name,
    write_bytes,
)

ROOT = Path(__file__).resolve().parents[1]


def get_args_parser():
    parser = argparse.ArgumentParser(description="Benchmark the fast paths against the straightforward ones")
    parser.add_argument(
        "--data_dir",
        default="data/bench",
        help="folder with nyu_data.zip and nyu_test.zip, rendered there at NYU's 640x480 if missing (the quick "
        "start's data/sample is 320x240)",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--checkpoint",
        help="trained weights for the evaluation and accuracy rows (default: the quick start's last.pth "
        "if present, else a one-epoch model trained here)",
    )
    parser.add_argument("--out_dir", default="runs/bench", help="where the JSON report (and any model trained) go")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of each speed case")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process runs of each speed case; best kept")
    parser.add_argument("--compile", action="store_true", help="torch.compile our training path (CUDA)")
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="only the deployment rows: PyTorch fp32 / bf16 against onnxruntime fp32 / INT8 (CPU)",
    )
    parser.add_argument(
        "--kitti", action="store_true", help="only the KITTI rows: Velodyne projection, seconds per frame"
    )
    parser.add_argument(
        "--video", action="store_true", help="only the video rows: frames/s, network busy share, flicker"
    )
    parser.add_argument(
        "--long_video",
        type=float,
        metavar="MINUTES",
        help="with --video: also a clip of MINUTES at 1080p through evaluate.py, its memory sampled as it goes "
        "(peak, and after the first minute against the end: it must stay flat)",
    )
    parser.add_argument(
        "--fill", action="store_true", help="only fill_depth.py's rows: seconds a KITTI frame, accuracy on rooms"
    )
    parser.add_argument(
        "--encoders",
        action="store_true",
        help="only the encoders' table (docs/models.md): size, CPU speed, training speed, delta1 after --minutes",
    )
    parser.add_argument("--encoder_names", nargs="+", help="with --encoders: these encoders only (default: all)")
    parser.add_argument(
        "--minutes", type=float, default=4, help="with --encoders: minutes of training from scratch for each delta1"
    )
    return parser


# ----------------------------------------------------------------------------- helpers


def peak_rss_mb():
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats, warmup=1):
    """Median seconds per call of function() over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def paper_model(device, channels_last):
    model = DenseDepth(decoder_width=1.0).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


# ----------------------------------------------------------------------------- prediction


def case_predict(device_name, fast, repeats, picture_size=(480, 640), size=(480, 640)):
    """Seconds to predict one picture of picture_size with flip averaging, the paper's model run at `size`."""
    torch.manual_seed(0)
    device = choose_device(device_name)
    dtype = choose_precision("auto" if fast else "fp32", device)
    model = paper_model(device, channels_last=fast).eval()
    picture = torch.rand(1, 3, *picture_size, device=device)

    def predict():
        with torch.inference_mode(), autocast(device, dtype):
            if fast:  # the mirror image in the same batch
                return predict_depth_m(model, picture, size, picture_size, flip=True)
            plain = predict_depth_m(model, picture, size, picture_size, flip=False, channels_last=False)
            mirrored = predict_depth_m(model, picture.flip(-1), size, picture_size, flip=False, channels_last=False)
            return (plain + mirrored.flip(-1)) / 2

    return {"seconds": timed(predict, device, repeats), "precision": precision_name(dtype)}


# ----------------------------------------------------------------------------- training


def case_train(device_name, fast, repeats, input_size, batch_size, compile_model=False):
    """Training images/s of the paper's model: forward, fp32 loss, backward, Adam step."""
    torch.manual_seed(0)
    device = choose_device(device_name)
    dtype = choose_precision("auto" if fast else "fp32", device)
    model = paper_model(device, channels_last=fast).train()
    step_model = torch.compile(model) if compile_model else model
    if fast:
        optimizer = build_optimizer(model, 1e-4, device)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = DepthLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Ours gets the loader's 640x480 uint8 batch and resizes on the device, inside the timed step;
    # the straightforward loader hands over float tensors already at the network's sizes.
    pictures = torch.randint(0, 256, (batch_size, 3, 480, 640), dtype=torch.uint8)
    full_depth_m = torch.rand(batch_size, 1, 480, 640) * 9 + 0.5
    if device.type == "cuda":  # as the DataLoader's pin_memory leaves them
        pictures, full_depth_m = pictures.pin_memory(), full_depth_m.pin_memory()
    images = torch.rand(batch_size, 3, *input_size, device=device)
    depth_m = torch.rand(batch_size, 1, *output_size(input_size), device=device) * 9 + 0.5

    learner = Learner(model, step_model, step_model, criterion, optimizer, scaler, device, dtype)

    def step():
        if fast:
            train_step(learner, *training_batch(pictures, full_depth_m, input_size, device))
        else:
            train_step(learner, images, depth_m)

    seconds = timed(step, device, repeats, warmup=2)
    result = {"images_per_s": batch_size / seconds, "precision": precision_name(dtype)}
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# ----------------------------------------------------------------------------- data loading


class DictPILDataset(Dataset):
    """A loader in the manner of the original DenseDepth code: every zip member's bytes in a dict,
    PIL decoding, PIL flips, a NumPy channel permutation, the depth resized by PIL to 320x240,
    and both converted to float tensors in the worker."""

    def __init__(self, zip_path):
        with zipfile.ZipFile(zip_path) as archive:
            self.files = {name: archive.read(name) for name in archive.namelist()}
        self.pairs = [line.split(",") for line in self.files[TRAIN_CSV].decode().split()]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        rgb_name, depth_name = self.pairs[index]
        image = Image.open(io.BytesIO(self.files[rgb_name]))
        depth = Image.open(io.BytesIO(self.files[depth_name]))
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            depth = depth.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if random.random() < 0.5:
            image = Image.fromarray(np.asarray(image)[..., list(random.choice(CHANNEL_ORDERS))])
        image = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous().float().div(255)
        depth = np.asarray(depth.resize((320, 240)), dtype=np.float32)
        return image, torch.from_numpy(depth)[None] * (10 / 255)


CHANNEL_ORDERS = list(itertools.permutations(range(3)))


def make_dataset(zip_path, fast):
    if not fast:
        return DictPILDataset(zip_path)
    archive = open_training_data(zip_path)
    return NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=True)


def case_loader_speed(zip_path, fast, samples):
    """Samples/s of one loader process (a worker's share) at 640x480 with augmentation."""
    torch.set_num_threads(1)  # as inside a DataLoader worker
    torch.manual_seed(0)
    dataset = make_dataset(zip_path, fast)
    count = min(samples, len(dataset))
    # train.py's items: an index with its augmentation seed
    items = list(TrainingOrder(len(dataset), seed=0, batch_size=1))[:count] if fast else range(count)
    dataset[items[0]]
    started = time.perf_counter()
    for item in items:
        dataset[item]
    return {"samples_per_s": count / (time.perf_counter() - started)}


def pss_mb(pid):
    """Proportional set size: shared pages split between the processes that share them."""
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 2**10
    return 0.0


def child_pids():
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as file:
            pids += [int(pid) for pid in file.read().split()]
    return pids


def case_loader_memory(zip_path, fast, workers, batches, start_method):
    """Total PSS of the main process and its DataLoader workers after `batches` batches.

    start_method is the one a script started from the shell gets (this case runs in a
    spawned process, whose own default would be spawn).
    """
    torch.manual_seed(0)
    dataset = make_dataset(zip_path, fast)
    context = multiprocessing.get_context(start_method)
    order = {"sampler": TrainingOrder(len(dataset), 0, 8), "collate_fn": collate_pairs} if fast else {"shuffle": True}
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, multiprocessing_context=context, **order)
    iterator = iter(loader)
    for _ in range(min(batches, len(loader))):
        next(iterator)
    total = pss_mb(os.getpid()) + sum(pss_mb(pid) for pid in child_pids())
    del iterator
    return {"pss_mb": total}


# ----------------------------------------------------------------------------- evaluation


def case_evaluate(device_name, fast_precision, checkpoint, test_zip, batch_size=4):
    """Seconds per image and peak memory of evaluating the test zip; also the metrics (accuracy row).

    fast_precision None runs the straightforward path: fp32, contiguous, the mirror
    image as a second pass, both arrays loaded whole before the first batch.
    """
    device = choose_device(device_name)
    model, input_size = load_model(checkpoint, device)
    test_set = EigenTestZip(test_zip)
    started = time.perf_counter()
    if fast_precision is None:
        model = model.to(memory_format=torch.contiguous_format)
        metrics = straightforward_evaluation(model, test_set, input_size, device, batch_size)
        precision = "fp32"
    else:
        dtype = choose_precision(fast_precision, device)
        batches = eigen_batches(test_set, batch_size)
        metrics = evaluate_protocol(model, batches, input_size, test_set.crop, device, dtype)
        precision = precision_name(dtype)
    seconds = time.perf_counter() - started
    values = metrics.compute("per_image")
    return {
        "seconds_per_image": seconds / len(test_set),
        "peak_rss_mb": peak_rss_mb(),
        "precision": precision,
        "delta1": values["delta1"],
        "abs_rel": values["abs_rel"],
    }


def labeled_mat_of(test_zip, folder):
    """NYU's labeled .mat and splits.mat holding the test zip's pictures (all of them in testNdxs), as
    MATLAB lays them out; written once."""
    mat, splits = Path(folder) / "nyu_depth_v2_labeled.mat", Path(folder) / "splits.mat"
    if not mat.is_file():
        test_set = EigenTestZip(test_zip)
        rgb, depth_m = (np.concatenate(arrays) for arrays in zip(*test_set.batches(len(test_set))))
        write_labeled_mat(mat, rgb, depth_m, depth_m)
        write_splits(splits, [1], range(1, len(test_set) + 1))
    return mat, splits


def case_evaluate_mat(device_name, checkpoint, mat_path, splits_path, batch_size=4):
    """Seconds per image and peak memory of evaluating the labeled .mat's test pictures, streamed from
    the file by DataLoader workers, as evaluate.py does (--precision auto, the Eigen crop)."""
    device = choose_device(device_name)
    model, input_size = load_model(checkpoint, device)
    mat = LabeledMat(mat_path, "--data")
    dataset = LabeledDataset(mat, read_splits(splits_path, mat.count)[1], "filled")
    started = time.perf_counter()
    loader = DataLoader(dataset, batch_size, num_workers=min(default_workers(device), 2))
    metrics = evaluate_protocol(model, loader, input_size, "eigen", device, choose_precision("auto", device))
    seconds = time.perf_counter() - started
    values = metrics.compute("per_image")
    return {"seconds_per_image": seconds / len(dataset), "peak_rss_mb": peak_rss_mb(), "delta1": values["delta1"]}


def straightforward_evaluation(model, test_set, input_size, device, batch_size):
    with zipfile.ZipFile(test_set.path) as archive:
        rgb = np.load(io.BytesIO(archive.read(test_set.rgb_name)))
        depth_m = np.load(io.BytesIO(archive.read(test_set.depth_name)))
    metrics = DepthMetrics()
    with torch.inference_mode():
        for start in range(0, len(rgb), batch_size):
            images = torch.from_numpy(rgb[start : start + batch_size]).permute(0, 3, 1, 2).float().div(255)
            images = images.contiguous().to(device)
            truth_m = torch.from_numpy(depth_m[start : start + batch_size])[:, None].to(device)
            out_size = truth_m.shape[-2:]
            plain = predict_depth_m(model, images, input_size, out_size, flip=False, channels_last=False)
            mirrored = predict_depth_m(model, images.flip(-1), input_size, out_size, flip=False, channels_last=False)
            metrics.update(crop((plain + mirrored.flip(-1)) / 2, test_set.crop), crop(truth_m, test_set.crop))
    return metrics


# ----------------------------------------------------------------------------- orchestration


def in_fresh_process(function, *args):
    """Run function(*args) in a new Python process and return its result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def ensure_sample_data(data_dir):
    data_dir = Path(data_dir)
    if not (data_dir / "nyu_data.zip").is_file() or not (data_dir / "nyu_test.zip").is_file():
        print(f"rendering the sample data into {data_dir} (about a minute and a half on 2 cores)", flush=True)
        command = [sys.executable, str(ROOT / "sample_data.py"), "--out", str(data_dir)]
        subprocess.run(command + ["--train_images", "600", "--test_images", "100"], check=True)
    return data_dir / "nyu_data.zip", data_dir / "nyu_test.zip"


def ensure_checkpoint(args, train_zip):
    """The weights for the evaluation rows: given, the quick start's, or one epoch trained now."""
    if args.checkpoint:
        return Path(args.checkpoint)
    quickstart = ROOT / "runs/quickstart/checkpoints/last.pth"
    if quickstart.is_file():
        return quickstart
    checkpoint_dir = Path(args.out_dir) / "checkpoints"
    if not (checkpoint_dir / "last.pth").is_file():
        print("training a small model for one epoch (96x128, half-width decoder) for the evaluation rows", flush=True)
        command = [sys.executable, str(ROOT / "train.py"), "--data_dir", str(train_zip), "--batch_size", "8"]
        command += ["--checkpoint_dir", str(checkpoint_dir), "--epochs", "1", "--input_size", "96", "128"]
        command += ["--decoder_width", "0.5", "--no_pretrained", "--device", args.device, "--log_interval", "1000"]
        subprocess.run(command, check=True)
    return checkpoint_dir / "last.pth"


def bf16_description():
    """Whether the CPU has native bf16 and what it buys, as 'auto' measured it."""
    speedup = cpu_bf16_speedup()
    if not speedup:
        return "no"
    chosen = precision_name(choose_precision("auto", torch.device("cpu")))
    return f"yes, a convolution {speedup:.2f}x as fast as in fp32, so --precision auto runs {chosen}"


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} cores, native bf16: {bf16_description()}",
        f"torch {torch.__version__}, Python {platform.python_version()}, device {device}",
    ]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}")
    return lines


def row(name, unit, base, fast, higher_is_better, target=None):
    ratio = fast / base if higher_is_better else base / fast
    return {"case": name, "unit": unit, "straightforward": base, "ours": fast, "ratio": ratio, "target": target}


def side_by_side(case, arguments, rounds, key, higher_is_better):
    """Results of case(*arguments(fast)) for the straightforward path and ours, each run `rounds`
    times in fresh processes, alternating; the best of each is kept, as shared machines are noisy."""
    results = {False: [], True: []}
    for _ in range(rounds):
        for fast in (False, True):
            results[fast].append(in_fresh_process(case, *arguments(fast)))
    choose = max if higher_is_better else min
    return tuple(choose(results[fast], key=lambda result: result[key]) for fast in (False, True))


def run_speed_cases(args, device):
    name = device.type
    rows = []
    base, fast = side_by_side(
        case_predict, lambda fast: (name, fast, args.repeats), args.rounds, "seconds", higher_is_better=False
    )
    rows.append(row("predict one 640x480 picture, flip averaged", "s", base["seconds"], fast["seconds"], False, 3.0))
    rows[-1]["precision"] = fast["precision"]
    print(f"prediction: {base['seconds']:.3f} s -> {fast['seconds']:.3f} s", flush=True)

    train_cases = [((240, 320), 4, 2.5)] if device.type == "cpu" else [((240, 320), 4, None), ((480, 640), 8, None)]
    for input_size, batch_size, target in train_cases:
        base, fast = side_by_side(
            case_train,
            lambda fast, size=input_size, batch=batch_size: (
                name,
                fast,
                args.repeats,
                size,
                batch,
                fast and args.compile,
            ),
            args.rounds,
            "images_per_s",
            higher_is_better=True,
        )
        label = f"train {input_size[0]}x{input_size[1]}, batch {batch_size}"
        rows.append(row(label, "img/s", base["images_per_s"], fast["images_per_s"], True, target))
        rows[-1]["precision"] = fast["precision"]
        if "peak_gpu_mb" in fast:
            rows[-1]["peak_gpu_mb"] = {"straightforward": base["peak_gpu_mb"], "ours": fast["peak_gpu_mb"]}
        print(f"{label}: {base['images_per_s']:.2f} -> {fast['images_per_s']:.2f} img/s", flush=True)
    return rows


def run_loader_cases(args, train_zip):
    rows = []
    base, fast = side_by_side(
        case_loader_speed, lambda fast: (train_zip, fast, 400), args.rounds, "samples_per_s", higher_is_better=True
    )
    rows.append(row("loader, 640x480 + augmentation, per worker", "samples/s", base["samples_per_s"],
                    fast["samples_per_s"], True, 2.0))  # fmt: skip
    print(f"loader: {base['samples_per_s']:.1f} -> {fast['samples_per_s']:.1f} samples/s per worker", flush=True)
    memory = {}
    for fast_loader in (False, True):
        for workers in (1, 4):
            memory[fast_loader, workers] = in_fresh_process(
                case_loader_memory, train_zip, fast_loader, workers, 24, multiprocessing.get_start_method()
            )
    zip_mb = Path(train_zip).stat().st_size / 2**20
    base4, fast4 = memory[False, 4]["pss_mb"], memory[True, 4]["pss_mb"]
    rows.append(row("loader memory, main + 4 workers (PSS)", "MB", base4, fast4, False))
    rows[-1]["limit_mb"] = zip_mb + 1024
    growth = {fast_loader: (memory[fast_loader, 4]["pss_mb"] - memory[fast_loader, 1]["pss_mb"]) / 3
              for fast_loader in (False, True)}  # fmt: skip
    rows.append(row("loader memory per extra worker (PSS)", "MB", growth[False], growth[True], False))
    rows[-1]["limit_mb"] = 100
    print(f"loader PSS with 4 workers: {base4:.0f} MB -> {fast4:.0f} MB (zip {zip_mb:.0f} MB)", flush=True)
    return rows


def run_evaluation_cases(device, checkpoint, test_zip):
    name = device.type
    base = in_fresh_process(case_evaluate, name, None, str(checkpoint), str(test_zip))
    fp32 = in_fresh_process(case_evaluate, name, "fp32", str(checkpoint), str(test_zip))
    fast = in_fresh_process(case_evaluate, name, "auto", str(checkpoint), str(test_zip))
    mat_path, splits_path = labeled_mat_of(test_zip, Path(test_zip).parent)
    from_mat = in_fresh_process(case_evaluate_mat, name, str(checkpoint), str(mat_path), str(splits_path))
    rows = [
        row("evaluate test zip", "s/image", base["seconds_per_image"], fast["seconds_per_image"], False),
        row("evaluate test zip, peak memory (RSS)", "MB", base["peak_rss_mb"], fast["peak_rss_mb"], False),
        # the target 1 / 1.2: the labeled .mat at most 20 % slower a picture than the zip
        row("evaluate labeled .mat (ours) vs test zip", "s/image", fast["seconds_per_image"],
            from_mat["seconds_per_image"], False, 1 / 1.2),
        row("evaluate labeled .mat (ours) vs test zip, peak RSS", "MB", fast["peak_rss_mb"], from_mat["peak_rss_mb"],
            False),
    ]  # fmt: skip
    accuracy = {
        "checkpoint": str(checkpoint),
        "precision": fast["precision"],
        "fp32": {key: fp32[key] for key in ("delta1", "abs_rel")},
        fast["precision"]: {key: fast[key] for key in ("delta1", "abs_rel")},
        "straightforward fp32": {key: base[key] for key in ("delta1", "abs_rel")},
    }
    print(f"evaluation: {base['seconds_per_image']:.3f} -> {fast['seconds_per_image']:.3f} s/image", flush=True)
    return rows, accuracy


def format_report(machine, rows, accuracy):
    lines = machine + ["", "| case | unit | straightforward | ours | ratio | target |", "|---|---|---|---|---|---|"]
    for entry in rows:
        target = entry.get("target")
        if target is not None:
            goal = f">= {target:g}x: {'met' if entry['ratio'] >= target else 'NOT met'}"
        elif "limit_mb" in entry:
            goal = f"ours <= {entry['limit_mb']:.0f} MB: {'met' if entry['ours'] <= entry['limit_mb'] else 'NOT met'}"
        else:
            goal = "report"
        lines.append(
            f"| {entry['case']} | {entry['unit']} | {entry['straightforward']:.3f} | {entry['ours']:.3f} "
            f"| {entry['ratio']:.2f}x | {goal} |"
        )
        if "peak_gpu_mb" in entry:
            peak = entry["peak_gpu_mb"]
            lines.append(f"|   peak GPU memory | MB | {peak['straightforward']:.0f} | {peak['ours']:.0f} | | report |")
    fast_name = accuracy["precision"]
    lines += [
        "",
        f"accuracy on the test zip, same weights ({accuracy['checkpoint']}), per-image aggregation:",
        f"  fp32: delta1 {accuracy['fp32']['delta1']:.4f}, abs rel {accuracy['fp32']['abs_rel']:.4f}",
    ]
    if fast_name == "fp32":
        lines.append("  (--precision auto runs fp32 here too, so there is no reduced precision to compare)")
    else:
        d_delta1 = abs(accuracy[fast_name]["delta1"] - accuracy["fp32"]["delta1"])
        d_abs_rel = abs(accuracy[fast_name]["abs_rel"] - accuracy["fp32"]["abs_rel"])
        verdict = "met" if max(d_delta1, d_abs_rel) <= 0.005 else "NOT met"
        lines += [
            f"  {fast_name}: delta1 {accuracy[fast_name]['delta1']:.4f}, abs rel {accuracy[fast_name]['abs_rel']:.4f}",
            f"  difference: delta1 {d_delta1:.4f}, abs rel {d_abs_rel:.4f} (target <= 0.005: {verdict})",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- KITTI

KITTI_FRAME = (375, 1242)  # a 2011_09_26 frame
KITTI_NETWORK = (384, 1248)  # kitti.h5's input size (densedepth/weights.py)


def velodyne_scan(seed=0):
    """A scan shaped like an HDL-64E's: 64 beams from +2 to -24.9 degrees, 2000 azimuths all round
    (128,000 points), ranges 3 to 80 m; about a quarter of it lies in front of the camera."""
    rng = np.random.default_rng(seed)
    elevation = np.radians(np.linspace(2.0, -24.9, 64))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, 2000, endpoint=False)[None, :]
    distance = np.minimum(1.73 / np.maximum(-np.sin(elevation), 0.02), 80) * rng.uniform(0.9, 1.0, (64, 2000))
    points = np.stack([distance * np.cos(elevation) * np.cos(azimuth), distance * np.cos(elevation) *
                       np.sin(azimuth), distance * np.sin(elevation), rng.uniform(0, 1, (64, 2000))], axis=-1)  # fmt: skip
    return points.reshape(-1, 4).astype(np.float32)


def case_velodyne(repeats, folder):
    """Milliseconds to read a scan's .bin and project it to a frame's ground truth, on one core."""
    from densedepth.kitti import camera_projection, read_velodyne, velodyne_depth_m, write_calibration, write_velodyne

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    p_rect = [[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]]
    velo_r = [[0.0075, -1.0, -0.0006], [0.0148, 0.0007, -0.9999], [0.9999, 0.0075, 0.0148]]
    size = [KITTI_FRAME[1], KITTI_FRAME[0]]
    write_calibration(Path(folder) / "calib_cam_to_cam.txt", {"S_rect_02": size, "R_rect_00": np.eye(3),
                                                             "P_rect_02": p_rect})  # fmt: skip
    write_calibration(Path(folder) / "calib_velo_to_cam.txt", {"R": velo_r, "T": [-0.004, -0.076, -0.272]})
    projection = camera_projection(folder, 2)
    scan = velodyne_scan()
    write_velodyne(Path(folder) / "scan.bin", scan)

    def project():
        return velodyne_depth_m(read_velodyne(Path(folder) / "scan.bin"), projection)

    seconds = timed(project, torch.device("cpu"), repeats)
    return {"ms": seconds * 1000, "points": len(scan), "measured": int((project() > 0).sum())}


def run_kitti_cases(args, device):
    """The KITTI rows: projection (target under 50 ms a frame on one core) and seconds per frame."""
    velodyne = in_fresh_process(case_velodyne, max(args.repeats, 20), str(Path(args.out_dir) / "kitti_calibration"))
    projection = (
        f"Velodyne projection ({velodyne['points']} points, {velodyne['measured']} pixels measured in a "
        f"{KITTI_FRAME[1]}x{KITTI_FRAME[0]} frame), one core: {velodyne['ms']:.1f} ms a frame "
        f"(target < 50 ms: {'met' if velodyne['ms'] < 50 else 'NOT met'})"
    )
    lines = [projection]
    base, fast = side_by_side(
        case_predict,
        lambda fast: (device.type, fast, args.repeats, KITTI_FRAME, KITTI_NETWORK),
        args.rounds,
        "seconds",
        higher_is_better=False,
    )
    lines.append(
        f"published model (kitti.h5's architecture) on a {KITTI_FRAME[1]}x{KITTI_FRAME[0]} frame at "
        f"{KITTI_NETWORK[1]}x{KITTI_NETWORK[0]}, flip averaged: fp32 {base['seconds']:.2f} s, "
        f"{fast['precision']} channels_last {fast['seconds']:.2f} s a frame; the 697 Eigen test frames in about "
        f"{697 * fast['seconds'] / 60:.0f} min"
    )
    return {"velodyne_ms": velodyne["ms"], "points": velodyne["points"], "predict_s": {"fp32": base["seconds"],
            fast["precision"]: fast["seconds"]}}, lines  # fmt: skip


# ----------------------------------------------------------------------------- filling sparse depth


def lidar_samples(depth_m, rows_apart=4, keep=0.6, seed=0):
    """About 5 % of a dense depth map, along scan lines as a LiDAR sees it: every rows_apart-th row from a
    third of the way down, a share `keep` of its pixels in every third column; 0 elsewhere."""
    rng = np.random.default_rng(seed)
    sampled = np.zeros_like(depth_m)
    mask = np.zeros(depth_m.shape, dtype=bool)
    mask[depth_m.shape[0] // 3 :: rows_apart, ::3] = True
    mask &= rng.random(depth_m.shape) < keep
    sampled[mask] = depth_m[mask]
    return sampled


def case_fill_speed(size, method, repeats):
    """Seconds to fill one 1242x375 frame on one core, at full or half size."""
    from densedepth.fill import fill_pair

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = np.arange(KITTI_FRAME[0], dtype=np.float32)[:, None]
    depth = np.broadcast_to(1.65 * 721.5 / np.maximum(rows - 140, 8), KITTI_FRAME).astype(np.float32)
    image = torch.from_numpy(rng.integers(0, 255, (3, *KITTI_FRAME), dtype=np.uint8))
    sparse = torch.from_numpy(lidar_samples(depth))[None]
    seconds = timed(lambda: fill_pair(image, sparse, size, method=method), torch.device("cpu"), repeats)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def fill_regions(depth_m, hull):
    """Where to compare fills: inside the samples' hull (where linear interpolation is defined), at
    depth edges inside it (a neighbour more than 5 % nearer or farther), and the top third (no samples)."""
    jump = np.zeros_like(depth_m)  # the largest |log depth ratio| to a 4-neighbour
    across = np.abs(np.log(depth_m[:, 1:] / depth_m[:, :-1]))
    down = np.abs(np.log(depth_m[1:] / depth_m[:-1]))
    for view, step in ((jump[:, 1:], across), (jump[:, :-1], across), (jump[1:], down), (jump[:-1], down)):
        np.maximum(view, step, out=view)
    edges = (jump > math.log(1.05)) & hull
    top = np.zeros(depth_m.shape, dtype=bool)
    top[: depth_m.shape[0] // 3] = True
    return {"hull": hull, "edges": edges, "top third": top}


def fill_accuracy(rooms=6):
    """Median relative error of the colorization, linear interpolation (with the colorization outside
    the hull: fill_depth.py --method linear), plain linear and nearest interpolation against exact depth
    on rendered rooms (320x240) sampled like a LiDAR, in the regions of fill_regions."""
    from scipy.interpolate import griddata

    from densedepth.fill import fill_depth_colorization, fill_depth_linear
    from rendering.scenes import render_scene

    errors = {}
    for room in range(rooms):
        _, views = render_scene(7, 1, room, 1, 320, 240)
        rgb, depth = views[0]
        sparse = lidar_samples(depth, seed=room)
        known = sparse > 0
        points, values = np.argwhere(known), sparse[known]
        grid = np.indices(depth.shape).reshape(2, -1).T
        filled = {
            "colorization (toolbox)": fill_depth_colorization(rgb, sparse),
            "linear, colorization outside": fill_depth_linear(rgb, sparse),
            "linear": griddata(points, values, grid, method="linear").reshape(depth.shape),
            "nearest": griddata(points, values, grid, method="nearest").reshape(depth.shape),
        }
        regions = fill_regions(depth, np.isfinite(filled["linear"]))
        for name, result in filled.items():
            relative = np.abs(result - depth) / depth
            for region, where in regions.items():
                errors.setdefault(name, {}).setdefault(region, []).append(relative[where])
    return {
        name: {region: float(np.nanmedian(np.concatenate(parts))) for region, parts in by_region.items()}
        for name, by_region in errors.items()
    }


def run_fill_cases(args, device):
    """fill_depth.py's rows: s/frame full and half on one core, the Eigen training list's time, accuracy."""
    lines, results = [], {}
    for size, method in (("full", "colorization"), ("half", "colorization"), ("full", "linear")):
        result = in_fresh_process(case_fill_speed, size, method, args.repeats)
        results[f"{method} {size}"] = result
        goal = "; goal <= 2 s: " + ("met" if result["seconds"] <= 2 else "NOT met") if size == "full" else ""
        hours = 23_158 * result["seconds"] / 2 / 3600
        speed = (
            f"fill a {KITTI_FRAME[1]}x{KITTI_FRAME[0]} frame by {method} at {size} size, one core: "
            f"{result['seconds']:.2f} s (peak {result['peak_rss_mb']:.0f} MB){goal}"
        )
        lines += [speed, f"  KITTI's Eigen training list (23,158 frames) on 2 cores at that rate: about {hours:.0f} h"]
    accuracy = fill_accuracy()
    results["accuracy"] = accuracy
    lines.append("median relative error against exact depth, 6 rendered rooms at 320x240, ~5 % sampled on scan lines:")
    for name, by_region in accuracy.items():
        cells = ", ".join(
            f"{value:.2%} {region}" if np.isfinite(value) else f"none in the {region}"
            for region, value in by_region.items()
        )
        lines.append(f"  {name}: {cells}")
    return results, lines


# ----------------------------------------------------------------------------- videos


def still_camera_clip(path, frames, noise, seed=0):
    """A 640x480 H.264 clip of one rendered test room from a camera that does not move, each frame
    with fresh Gaussian noise of `noise` grey levels (as a sensor's), at 30 frames/s."""
    import av

    from rendering.scenes import render_scene

    _, views = render_scene(seed, 1, 0, 1, 640, 480)
    rgb = views[0][0].astype(np.float32)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for _ in range(frames):
            frame = np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def case_video(device_name, checkpoint, clip, out_dir, batch_size=4):
    """Frames per second, network busy share and flicker (mean |depth_k - depth_k-1| in metres) of
    evaluate.py's video path on `clip`; checkpoint None: the paper's model, random weights, at 480x640."""
    from densedepth.video import VideoOptions, depth_of_video

    torch.manual_seed(0)
    device = choose_device(device_name)
    dtype = choose_precision("auto", device)
    if checkpoint is None:
        model, input_size = paper_model(device, channels_last=True).eval(), (480, 640)
    else:
        model, input_size = load_model(checkpoint, device)
    options = VideoOptions(True, batch_size, (0.1, 10.0), "plasma", frames=True)
    frames_dir = Path(out_dir) / "frames"
    report = depth_of_video(model, clip, Path(out_dir) / "clip_depth.mp4", input_size, device, dtype, options,
                            frames_dir)  # fmt: skip
    depth = [np.load(path) for path in sorted(frames_dir.glob("*_depth_m.npy"))]
    flicker = float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(depth)]))
    return {"fps": report.frames / report.seconds, "busy": report.network_seconds / report.seconds,
            "flicker_m": flicker, "mean_depth_m": float(np.mean(depth)), "precision": precision_name(dtype)}  # fmt: skip


def long_clip_1080p(path, minutes, rate=30):
    """A 1920x1080 H.264 clip of `minutes`: four rendered rooms, each a second at a time, the camera
    sliding a few pixels a frame (60 frames made once, then repeated: encoding is the cost)."""
    import av

    from rendering.scenes import render_scene

    views = [render_scene(seed, 1, 0, 1, 1920, 1080)[1][0][0] for seed in range(4)]
    frames = [np.roll(views[(index // 15) % 4], 4 * index, axis=1) for index in range(60)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for index in range(int(minutes * 60 * rate)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[index % len(frames)], format="rgb24")))
        container.mux(stream.encode(None))
    return path


def rss_mb(pid):
    """A process's resident memory now, from /proc (Linux); None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def case_long_video(minutes, out_dir):
    """evaluate.py --img on a 1080p clip of `minutes` with the light model (random weights, trained size
    240x320, batches of 8, no mirror): its resident memory every 2 s, the frames/s it reports."""
    from densedepth.encoders import LIGHT_ENCODER
    from model import model_config, variant_for

    out_dir = Path(out_dir)
    clip = long_clip_1080p(out_dir / f"clip_1080p_{minutes:g}min.mp4", minutes)
    torch.manual_seed(0)
    model = DenseDepth(encoder=LIGHT_ENCODER, variant=variant_for(LIGHT_ENCODER))
    checkpoint = out_dir / "light.pth"
    torch.save({"model": model.state_dict(), "config": model_config(model, (240, 320)), "args": {}}, checkpoint)
    command = [sys.executable, str(ROOT / "evaluate.py"), "--model", str(checkpoint), "--img", str(clip),
               "--output_dir", str(out_dir / "out"), "--no_flip", "--batch_size", "8"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples = []
    while process.poll() is None:
        memory = rss_mb(process.pid)
        if memory is not None:
            samples.append((time.perf_counter() - started, memory))
        time.sleep(2)
    output = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"evaluate.py failed on {clip}: {output[-500:]}")
    after_a_minute = [memory for seconds, memory in samples if seconds >= 60] or [samples[-1][1]]
    return {"frames_line": next(line for line in output.splitlines() if "frames/s" in line),
            "peak_mb": max(memory for _, memory in samples), "at_one_minute_mb": after_a_minute[0],
            "at_end_mb": samples[-1][1], "seconds": time.perf_counter() - started, "samples": samples}  # fmt: skip


def run_video_cases(args, device):
    """The video rows: the quick start's model (if trained) and the paper's, on a still-camera clip."""
    out = Path(args.out_dir) / "video"
    out.mkdir(parents=True, exist_ok=True)
    clip = still_camera_clip(out / "still.mp4", 60, noise=3.0)
    models = {"the paper's model (random weights)": None}
    quickstart = Path(args.checkpoint) if args.checkpoint else ROOT / "runs/quickstart/checkpoints/last.pth"
    if quickstart.is_file():
        models = {f"{quickstart}": str(quickstart), **models}
    results, lines = {}, []
    for label, checkpoint in models.items():
        result = in_fresh_process(case_video, device.type, checkpoint, str(clip), str(out / str(len(results))))
        results[label] = result
        lines.append(
            f"{label}: {result['fps']:.2f} frames/s at 640x480 ({result['precision']}, flip averaged, batches of 4), "
            f"network busy {result['busy']:.0%} (goal >= 90%: {'met' if result['busy'] >= 0.9 else 'NOT met'}); "
            f"flicker on a still camera {result['flicker_m'] * 1000:.1f} mm a frame (mean depth "
            f"{result['mean_depth_m']:.2f} m)"
        )
    if args.long_video:
        result = in_fresh_process(case_long_video, args.long_video, str(out))
        results["long_video"] = result
        lines.append(
            f"a {args.long_video:g}-minute 1920x1080 clip through evaluate.py --img (the light model, batches of 8): "
            f"peak resident memory {result['peak_mb']:.0f} MB; {result['at_one_minute_mb']:.0f} MB after a minute, "
            f"{result['at_end_mb']:.0f} MB at the end; {result['frames_line'].split(': ', 1)[1]}"
        )
    return results, lines


# ----------------------------------------------------------------------------- deployment


def export_pair(model_file, out_dir, calibration_zip):
    """model.onnx and model.int8.onnx of a checkpoint, by export.py (its own checks included)."""
    onnx_path = Path(out_dir) / (Path(model_file).stem + ".onnx")
    if not onnx_path.with_suffix(".int8.onnx").is_file():
        command = [sys.executable, str(ROOT / "export.py"), "--model", str(model_file), "--format", "onnx"]
        command += ["--output", str(onnx_path), "--int8", "--calibration", str(calibration_zip)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return onnx_path, onnx_path.with_suffix(".int8.onnx")


def pytorch_model(kind, path, test_zip, size, compile=True):
    """(model, autocast dtype, seconds spent quantising and compiling) of a PyTorch row; int8 is
    quantised by PT2E, calibrated on the test zip's pictures as export.py --int8 is."""
    device = torch.device("cpu")
    model, _ = load_model(path, device)
    if kind != "pytorch int8":
        return model, torch.bfloat16 if kind == "pytorch bf16" else torch.float32, 0.0
    from densedepth.deploy import INT8_CALIBRATION_COUNT, calibration_pictures, quantize_pt2e

    started = time.perf_counter()
    calibration = calibration_pictures(test_zip, INT8_CALIBRATION_COUNT, size, uint8_input=True)
    return quantize_pt2e(model, calibration, compile), torch.int8, time.perf_counter() - started


def case_deploy_speed(kind, path, repeats, threads, test_zip):
    """Seconds to predict one 640x480 picture and its mirror (one batch of 2), as each runtime does it;
    for PyTorch INT8 also the seconds to quantise and the first call's (Inductor's compile: its cache
    is cold in the first fresh process and warm in the next)."""
    torch.set_num_threads(threads)
    size = (480, 640)
    pictures = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    if kind.startswith("onnxruntime"):
        from densedepth.deploy import OnnxDepthModel

        model = OnnxDepthModel(path, threads=threads)
        feed = {"image": pictures.numpy()}
        return {"seconds": timed(lambda: model.session.run(None, feed), torch.device("cpu"), repeats)}
    device = torch.device("cpu")
    model, dtype, quantise_s = pytorch_model(kind, path, test_zip, size)

    def predict():
        with torch.inference_mode(), autocast(device, dtype):
            return predict_depth_m(model, pictures[:1], size, size, flip=True)

    started = time.perf_counter()
    predict()
    first_s = time.perf_counter() - started
    return {"seconds": timed(predict, device, repeats, warmup=0), "quantise_s": quantise_s, "first_call_s": first_s}


def case_deploy_accuracy(kind, path, test_zip):
    """Per-image delta1 and abs rel on the test zip (INT8 uncompiled: the same arithmetic, minutes sooner)."""
    device = torch.device("cpu")
    _, input_size = load_model(path, device)
    if kind.startswith("onnxruntime"):
        model, dtype = load_model(path, device)[0], torch.float32
    else:
        model, dtype, _ = pytorch_model(kind, path, test_zip, input_size, compile=False)
    test_set = EigenTestZip(test_zip)
    metrics = evaluate_protocol(model, eigen_batches(test_set, 4), input_size, test_set.crop, device, dtype)
    values = metrics.compute("per_image")
    return {key: values[key] for key in ("delta1", "abs_rel")}


def run_deploy_cases(args, checkpoint, test_zip):
    """The four ways to run a model on a CPU, side by side: speed on the paper's model at 640x480
    (its weights random: speed does not depend on them), accuracy with one set of trained weights."""
    out_dir = Path(args.out_dir) / "deploy"
    out_dir.mkdir(parents=True, exist_ok=True)
    paper = out_dir / "paper_model.pth"
    if not paper.is_file():
        torch.manual_seed(0)
        model = DenseDepth(decoder_width=1.0)
        torch.save({"model": model.state_dict(), "config": model_config(model, (480, 640)), "args": {}}, paper)
    print("exporting the paper's model and the trained one to ONNX and INT8 (a few minutes)", flush=True)
    paper_files = export_pair(paper, out_dir, test_zip)
    trained_files = export_pair(checkpoint, out_dir, test_zip)
    kinds = {
        "pytorch fp32": (paper, checkpoint),
        "pytorch bf16": (paper, checkpoint),
        "onnxruntime fp32": (paper_files[0], trained_files[0]),
        "onnxruntime int8": (paper_files[1], trained_files[1]),
    }
    if importlib.util.find_spec("torchao") is not None:
        kinds["pytorch int8"] = (paper, checkpoint)
    threads = os.cpu_count() or 1
    results = {}
    for kind, (speed_file, accuracy_file) in kinds.items():
        runs = [in_fresh_process(case_deploy_speed, kind, str(speed_file), args.repeats, threads, str(test_zip))
                for _ in range(args.rounds)]  # fmt: skip
        results[kind] = {
            "seconds": min(run["seconds"] for run in runs),
            "build_s": [run.get("quantise_s", 0) + run.get("first_call_s", 0) for run in runs],
            **in_fresh_process(case_deploy_accuracy, kind, str(accuracy_file), str(test_zip)),
        }
        print(f"{kind}: {results[kind]['seconds']:.3f} s, delta1 {results[kind]['delta1']:.4f}", flush=True)
    return results


def format_deploy_report(machine, results, checkpoint):
    bf16, fp32 = results["pytorch bf16"], results["pytorch fp32"]
    lines = machine + [
        "",
        "| runtime | s per 640x480 picture + mirror (paper's model) | x over PyTorch bf16 | x over fp32 | delta1 "
        "| abs rel |",
        "|---|---|---|---|---|---|",
    ]
    for kind, result in results.items():
        lines.append(
            f"| {kind} | {result['seconds']:.3f} | {bf16['seconds'] / result['seconds']:.2f}x "
            f"| {fp32['seconds'] / result['seconds']:.2f}x | {result['delta1']:.4f} | {result['abs_rel']:.4f} |"
        )
    for name in ("onnxruntime int8", "pytorch int8"):
        if name not in results:
            lines.append(f"\n{name}: not measured (needs requirements-deploy.txt)")
            continue
        int8 = results[name]
        speed_met = bf16["seconds"] / int8["seconds"] >= 1.5
        accuracy_met = abs(int8["delta1"] - fp32["delta1"]) <= 0.01
        lines.append(
            f"\n{name} >= 1.5x over PyTorch bf16: {'met' if speed_met else 'NOT met'}; delta1 within 0.01 of fp32: "
            f"{'met' if accuracy_met else 'NOT met'} ({int8['delta1'] - fp32['delta1']:+.4f})"
        )
    if "pytorch int8" in results:
        cold, *warm = results["pytorch int8"]["build_s"]
        warm_text = f", {min(warm):.0f} s with Inductor's cache warm" if warm else ""
        lines.append(f"pytorch int8: quantising and the first call (compile) took {cold:.0f} s cold{warm_text}")
    lines.append(f"accuracy: per-image, the sample test zip, weights {checkpoint} (exported the same way)")
    return "\n".join(lines)


def run_encoders(args, machine):
    """The encoders' table, printed, and saved as JSON and Markdown."""
    from bench.encoders import format_encoder_report, run_encoder_cases
    from densedepth.encoders import ENCODERS

    names = args.encoder_names or list(ENCODERS)
    results = run_encoder_cases(args, names, in_fresh_process)
    report = format_encoder_report(machine, results, args.minutes)
    print("\n" + report)
    path = Path(args.out_dir) / "encoders.json"
    write_bytes(path, json.dumps({"machine": machine, "results": results}, indent=2).encode())
    write_bytes(path.with_suffix(".md"), (report + "\n").encode())
    print(f"\nsaved to {path} and {path.with_suffix('.md')}")


def main(args):
    device = choose_device(args.device)
    machine = machine_description(device)
    print("\n".join(machine), flush=True)
    if args.encoders:
        run_encoders(args, machine)
        return
    only = {"kitti": run_kitti_cases, "video": run_video_cases, "fill": run_fill_cases}
    chosen = [name for name in only if getattr(args, name)]
    if chosen:
        results, lines = only[chosen[0]](args, device)
        print("\n" + "\n".join(lines))
        path = Path(args.out_dir) / f"{chosen[0]}.json"
        write_bytes(path, json.dumps({"machine": machine, "results": results, "report": lines}, indent=2).encode())
        print(f"\nsaved to {path}")
        return
    train_zip, test_zip = ensure_sample_data(args.data_dir)
    checkpoint = ensure_checkpoint(args, train_zip)
    if args.deploy:
        results = run_deploy_cases(args, checkpoint, test_zip)
        print("\n" + format_deploy_report(machine, results, checkpoint))
        path = Path(args.out_dir) / "deploy.json"
        write_bytes(path, json.dumps({"machine": machine, "results": results}, indent=2).encode())
        print(f"\nsaved to {path}")
        return
    rows = run_speed_cases(args, device)
    loader_rows = run_loader_cases(args, train_zip)
    evaluation_rows, accuracy = run_evaluation_cases(device, checkpoint, test_zip)
    report = format_report(machine, rows + loader_rows + evaluation_rows, accuracy)
    print("\n" + report)
    path = Path(args.out_dir) / "benchmark.json"
    record = {"machine": machine, "rows": rows + loader_rows + evaluation_rows, "accuracy": accuracy}
    write_bytes(path, json.dumps(record, indent=2).encode())
    print(f"\nsaved to {path}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
