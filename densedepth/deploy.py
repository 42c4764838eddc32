"""Deployment: a trained model as one network from pictures to metres, exported to ONNX or
TorchScript, run with onnxruntime, and quantised to INT8 for CPUs.

The exported network holds everything a user needs: the input scaling (and ImageNet
normalisation where the model has it), the padding of any height and width to multiples
of 32, DenseDepth's network, the conversion of its output to metres (clipped to the
model's depth range) and the upsampling back to the input's size:

    input   "image"    (N, 3, H, W) RGB, uint8 0..255 (or float32 in [0, 1]), any N, H, W
    output  "depth_m"  (N, 1, H, W) float32, depth in metres

The files carry this, the depth range and the size the model was trained at in their
metadata (ONNX metadata_props; TorchScript's extra file metadata.json).

It also quantises a model to INT8 inside PyTorch (PT2E, torchao's X86InductorQuantizer,
compiled by Inductor onto oneDNN's INT8 kernels: AMX tiles on Intel Xeon 4th generation and
later) for evaluate.py --precision int8.

onnx, onnxscript, onnxruntime and torchao are needed only here: requirements-deploy.txt.
"""

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from data import RGB_SUFFIXES, EigenTestZip, resize, to_unit_range
from densedepth.depth import DepthRange, target_to_depth_m
from densedepth.protocol import predict_depth_m
from model import model_config
from utils import UserError, auto_precision_reason, autocast, cpu_has_amx_int8, precision_name

INPUT_NAME, OUTPUT_NAME = "image", "depth_m"


class DepthInMetres(nn.Module):
    """A DenseDepth model as pictures in, metres out: (N, 3, H, W) uint8 (or float in [0, 1]) of
    any size -> (N, 1, H, W) depth in metres, at the input's size, without flip averaging."""

    def __init__(self, model, uint8_input=True):
        super().__init__()
        self.model = model
        self.uint8_input = uint8_input

    def forward(self, image):
        x = image.float() / 255 if self.uint8_input else image.float()
        depth_m = target_to_depth_m(self.model(x).float(), self.model.depth_range)
        return F.interpolate(depth_m, size=image.shape[-2:], mode="bilinear", align_corners=False)


def metadata(config, uint8_input, source):
    """What goes in and comes out, and the model's settings, as text for the file's metadata."""
    low, high = config["min_depth_m"], config["max_depth_m"]
    return {
        "producer": "DenseDepth (this repository's export.py)",
        "input": f"{INPUT_NAME}: (N, 3, H, W) RGB, "
        + ("uint8 0..255" if uint8_input else "float32 in [0, 1]")
        + "; any N, H and W (padded inside to multiples of 32); no normalisation needed",
        "output": f"{OUTPUT_NAME}: (N, 1, H, W) float32, depth in metres, {low:g} to {high:g}, at the input's size",
        "min_depth_m": str(low),
        "max_depth_m": str(high),
        "input_size": " ".join(str(side) for side in config["input_size"]),
        "input_size_note": "the height and width the model was trained at; pictures of about that area work best",
        "source": str(source),
        "config": json.dumps(config),
    }


def example_input(size, uint8_input, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, generator=generator)
    return pixels if uint8_input else pixels.float() / 255


ONNX_NAMES = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": 18, "verbose": False}


def export_onnx(module, path, example, meta, traced=False):
    """ONNX (opset 18) with dynamic batch, height and width, through torch.export; where torch.export
    cannot keep the sizes dynamic (ConvNeXt's channels-last LayerNorm makes it specialise them), or
    with traced=True (seconds instead of a minute: --precision auto's export), through the
    TorchScript-based exporter, which traces the sizes as functions of the input's."""
    if not traced and not _exported_by_torch_export(module, path, example):
        print("torch.export would fix the input's size for this encoder: exported by tracing instead")
        traced = True
    if traced:
        sizes = {0: "batch", 2: "height", 3: "width"}
        out_sizes = sizes if isinstance(module, DepthInMetres) else {0: "batch", 2: "out_height", 3: "out_width"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter's notice
            torch.onnx.export(module, (example,), str(path), dynamo=False,
                              dynamic_axes={INPUT_NAME: sizes, OUTPUT_NAME: out_sizes}, **ONNX_NAMES)  # fmt: skip
    onnx = _import("onnx")
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def _exported_by_torch_export(module, path, example):
    """Whether torch.export could write `module` to `path` with its batch, height and width dynamic."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=32, max=8192)
    width = torch.export.Dim("width", min=32, max=8192)
    try:
        torch.onnx.export(module, (example,), str(path), dynamo=True,
                          dynamic_shapes={"image": {0: batch, 2: height, 3: width}}, **ONNX_NAMES)  # fmt: skip
    except Exception:  # noqa: BLE001 (torch.onnx wraps torch.export's constraint errors in its own types)
        return False
    return True


def export_torchscript(module, path, example, meta):
    """TorchScript by tracing; the sizes are traced as functions of the input's, so any size runs."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice: still works
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(meta)})


def load_torchscript_metadata(path):
    """The metadata export_torchscript stored in a .pt."""
    files = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["metadata.json"])


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise UserError(f"this needs {name}, which is not installed: pip install -r requirements-deploy.txt") from err


class OnnxDepthModel:
    """An exported .onnx run by onnxruntime on the CPU, shaped for model.predict_depth_m: called on
    (N, 3, H, W) pictures, float in [0, 1] or uint8, it gives depth in metres at their size (returns_depth_m)."""

    returns_depth_m = True
    runs_in_onnxruntime = True  # numpy arrays in NCHW: no channels_last for it

    def __init__(self, path, threads=None):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for files it cannot load
            raise UserError(f"{path} could not be loaded by onnxruntime ({str(err).splitlines()[0][:200]})") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if "max_depth_m" not in meta:
            raise UserError(f"{path} is an ONNX model, but not one export.py wrote (no depth range in its metadata)")
        self.path = path
        self.depth_range = DepthRange(float(meta["min_depth_m"]), float(meta["max_depth_m"]))
        self.input_size = tuple(int(side) for side in meta["input_size"].split())
        self.uint8_input = self.session.get_inputs()[0].type == "tensor(uint8)"

    def __call__(self, images):
        if self.uint8_input and images.dtype == torch.uint8:  # as they come (predict_depth_m's takes_as_they_are)
            array = images.detach().cpu().numpy()
        else:
            array = to_unit_range(images.detach()).cpu().numpy()
            if self.uint8_input:
                array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
        (depth_m,) = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(array)})
        return torch.from_numpy(depth_m).to(images.device)

    def to(self, *args, **kwargs):  # onnxruntime runs on the CPU, whatever torch's device
        return self

    def eval(self):
        return self


def load_exported(path, file_format):
    """An exported file, loaded once, as a function from (N, 3, H, W) pictures of its input type (a
    torch tensor or numpy array) to depth_m (numpy): torch.jit for 'torchscript', onnxruntime for 'onnx'."""
    if file_format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            model = torch.jit.load(str(path), map_location="cpu")
        return lambda pictures: model(torch.as_tensor(pictures)).detach().numpy()
    session = _import("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda pictures: session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(np.asarray(pictures))})[0]


# ----------------------------------------------------------------------------- onnxruntime under --precision auto

# Work shorter than this might not pay for the export (2 to 5 s, once); fewer pictures than ORT_MIN_PICTURES
# are not even timed (three passes of a picture and its mirror), so that one picture costs what it always did.
ORT_MIN_WORK_SECONDS = 5
ORT_MIN_PICTURES = 32
# onnxruntime is kept unless it is slower than this times PyTorch's time alone: in a video's three threads it
# measured faster still (the light model on a 2-core Zen 3: 62 to 65 frames/s against 56 at equal times alone),
# as its threads leave the cores to decoding and encoding sooner than PyTorch's OpenMP threads do.
ORT_TIE = 1.1
AUTO_ONNX_FORMAT = 1  # raise when what onnx_for_auto writes changes, so that older files are not read
ORT_MAX_DIFFERENCE = 1e-4  # largest |onnxruntime - PyTorch| depth, over the largest depth, to use onnxruntime


def auto_onnx_path(model, input_size):
    """Where 'auto' keeps `model` exported to ONNX: torch's cache, under a digest of its weights and
    settings, so that each model is exported once."""
    settings = {"config": model_config(model, input_size), "torch": torch.__version__, "format": AUTO_ONNX_FORMAT}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return Path(torch.hub.get_dir()) / "densedepth_onnx" / f"{digest.hexdigest()[:24]}.onnx"


class OnnxNetwork(OnnxDepthModel):
    """A DenseDepth network itself, exported by onnx_for_auto and run by onnxruntime: float pictures in
    [0, 1] in, the network's output out (the target at half size), which predict_depth_m turns into
    metres as it does PyTorch's, so that both give the same depth at any size."""

    returns_depth_m = False


def onnx_for_auto(model, input_size):
    """An OnnxNetwork of `model` on as many threads as torch's, exported by tracing into auto_onnx_path
    the first time, written under a temporary name and renamed when complete."""
    path = auto_onnx_path(model, input_size)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        meta = metadata(model_config(model, input_size), False, "evaluate.py --precision auto")
        meta["output"] = "the network's output (DenseDepth's target at half the input's size), not metres"
        meta["producer"] = "DenseDepth (this repository's evaluate.py --precision auto)"
        try:
            with torch.no_grad():
                export_onnx(model, partial, example_input(input_size, False), meta, traced=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return OnnxNetwork(path, threads=torch.get_num_threads())


def depth_predictor(run, input_size):
    """run (a network) as a function from a batch of pictures at input_size to their depth_m, no mirror."""
    return lambda pictures: predict_depth_m(run, pictures, input_size, input_size, flip=False)


def choose_onnxruntime(model, input_size, work):
    """(model, words) for 'auto' in fp32 on the CPU: `model` run by onnxruntime (onnxruntime_if_as_good)
    on the work's first picture and its mirror, for work of ORT_MIN_PICTURES pictures or frames and
    ORT_MIN_WORK_SECONDS or more; else `model` itself. words say which and why."""
    if not onnxruntime_installed():
        return model, "onnxruntime not tried: pip install -r requirements-deploy.txt for it"
    if work is None:
        return model, "onnxruntime not tried: the pictures are not known in advance"
    if work.count < ORT_MIN_PICTURES:
        return model, f"onnxruntime not tried for {work.count} pictures (from {ORT_MIN_PICTURES})"
    first = work.first_pictures(1)
    if not first:  # an unreadable first picture: its own error comes when its turn comes
        return model, "onnxruntime not tried: the first picture could not be read"
    picture = torch.from_numpy(resized_pictures(first, input_size)[0])
    batch = torch.cat([picture, picture.flip(-1)])  # two pictures: one alone favours neither engine's batching
    pytorch_s = seconds_per_batch(depth_predictor(model, input_size), batch) / len(batch)
    if pytorch_s * work.count < ORT_MIN_WORK_SECONDS:
        return model, f"onnxruntime not tried for {work.count * pytorch_s:.1f} s of work"
    return onnxruntime_if_as_good(model, input_size, batch, pytorch_s)


def onnxruntime_if_as_good(model, input_size, batch, pytorch_s):
    """(network, words): `model` exported (onnx_for_auto) and run by onnxruntime where on `batch` it gives
    PyTorch's depth to ORT_MAX_DIFFERENCE and takes at most ORT_TIE times pytorch_s, PyTorch's seconds a
    picture; else `model` itself. words say which and why."""
    try:
        exported = onnx_for_auto(model, input_size)
        with torch.no_grad():
            reference = depth_predictor(model, input_size)(batch)
            difference = float((depth_predictor(exported, input_size)(batch) - reference).abs().max()
                               / reference.abs().max())  # fmt: skip
        ort_s = seconds_per_batch(depth_predictor(exported, input_size), batch) / len(batch)
    except Exception as err:  # noqa: BLE001 (a model onnxruntime cannot take still runs in PyTorch)
        return model, f"onnxruntime not tried: {str(err).splitlines()[0][:120]}"
    timing = f"onnxruntime {ort_s * 1000:.1f} ms a picture against PyTorch's {pytorch_s * 1000:.1f} ms"
    if not difference <= ORT_MAX_DIFFERENCE:  # NaN included
        return model, f"onnxruntime's depth differs from PyTorch's by {difference:.1e} of the largest"
    if ort_s > ORT_TIE * pytorch_s:
        return model, timing
    return exported, f"{timing}, the same depth to {difference:.0e}"


def onnxruntime_installed():
    """Whether onnx and onnxruntime (requirements-deploy.txt) are there to export and run a model."""
    return all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))


def threads_words(count):
    """'1 thread', '3 threads'."""
    return f"{count} thread{'s' if count > 1 else ''}"


def live_network(model, input_size, device, try_onnxruntime):
    """(network, engine, why) for a stream predicted one picture at a time (the demo's Live tab), on the
    calling thread's count of torch threads (the demo gives the stream a thread of its own): an exported
    .onnx gets a session of its own on that many threads; with try_onnxruntime ('auto' in fp32 on the
    CPU) a PyTorch model runs in onnxruntime where, on a picture at input_size, that gives its depth and
    is about as fast (onnxruntime_if_as_good); else the model itself. engine says what runs it, for
    the page; why, the reason for the choice ("" where there was none)."""
    threads = torch.get_num_threads()
    on_threads = f"on {threads_words(threads)}"
    if isinstance(model, OnnxDepthModel):  # OnnxNetwork stays one: its output is not metres
        return type(model)(model.path, threads=threads), f"onnxruntime {on_threads}", ""
    if not isinstance(model, nn.Module):  # compiled INT8, whose thread count was fixed when compiled
        return model, "PyTorch INT8", ""
    if device.type != "cpu":
        return model, f"PyTorch on {device}", ""
    engine = f"PyTorch {on_threads}"
    if not try_onnxruntime:
        return model, engine, ""
    if not onnxruntime_installed():
        return model, engine, "onnxruntime not tried: pip install -r requirements-deploy.txt for it"
    picture = example_input(input_size, True)
    pytorch_s = seconds_per_batch(depth_predictor(model, input_size), picture)
    chosen, why = onnxruntime_if_as_good(model, input_size, picture, pytorch_s)
    return chosen, engine if chosen is model else f"onnxruntime {on_threads}", why


def onnxruntime_may_run(precision, device, dtype):
    """Whether --precision `precision` may hand the model to onnxruntime: 'auto' in fp32 on the CPU
    (bf16 runs in PyTorch, where onnxruntime has none)."""
    return precision == "auto" and device.type == "cpu" and dtype == torch.float32


def quantize_int8(onnx_path, int8_path, calibration, per_channel=True):
    """Static INT8 quantisation (QDQ: int8 weights, per channel; uint8 activations) calibrated on
    `calibration`, a list of (1, 3, H, W) arrays of the model's input type."""
    quantization = _import("onnxruntime.quantization")
    from onnxruntime.quantization import shape_inference

    class Pictures(quantization.CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            picture = next(self.items, None)
            return None if picture is None else {INPUT_NAME: picture}

    prepared = int8_path.with_name(int8_path.stem + ".prepared.onnx")
    root_logger = logging.getLogger()
    level = root_logger.level
    # The quantiser warns once per BatchNorm that DenseNet's pre-activation layout keeps unfolded.
    root_logger.setLevel(logging.ERROR)
    try:
        shape_inference.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared),
            str(int8_path),
            Pictures(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
        )
    finally:
        root_logger.setLevel(level)
        prepared.unlink(missing_ok=True)
    onnx = _import("onnx")
    graph, source = onnx.load(str(int8_path)), onnx.load(str(onnx_path), load_external_data=False)
    del graph.metadata_props[:]
    for prop in source.metadata_props:
        graph.metadata_props.add(key=prop.key, value=prop.value)
    graph.metadata_props.add(key="quantization", value="static INT8, QDQ, per-channel weights, uint8 activations")
    onnx.save(graph, str(int8_path))


def calibration_pictures(source, count, input_size, uint8_input):
    """`count` pictures at the model's input size, (1, 3, H, W) arrays of the model's input type."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"--calibration {source} does not exist")
    if source.suffix.lower() == ".zip":
        rgb = next(EigenTestZip(source).batches(count))[0]
        pictures = [torch.from_numpy(picture).permute(2, 0, 1) for picture in rgb]
    else:
        files = (
            sorted(f for f in source.rglob("*") if f.suffix.lower() in RGB_SUFFIXES) if source.is_dir() else [source]
        )
        if not files:
            raise UserError(f"--calibration {source} holds no pictures ({' '.join(RGB_SUFFIXES)})")
        pictures = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files[:count]]
    return resized_pictures(pictures, input_size, uint8_input)


def resized_pictures(pictures, input_size, uint8_input=True):
    """(3, H, W) uint8 pictures at the model's input size, as (1, 3, h, w) arrays of its input type."""
    resized = [resize(picture[None].float(), input_size).round().clamp(0, 255) for picture in pictures]
    return [(picture.to(torch.uint8) if uint8_input else picture / 255).numpy() for picture in resized]


# ----------------------------------------------------------------------------- INT8 inside PyTorch

INT8_MIN_AGREEMENT = 0.99  # share of pixels within 1.25x of fp32's depth (delta1 against fp32)
INT8_CALIBRATION_COUNT = 8  # pictures (each with its mirror) that set the activations' ranges
INT8_CHECK_COUNT = 4  # other pictures on which INT8's depth is compared with fp32's
# 'auto' tries INT8 only for work that would take at least this long in its fp32/bf16 choice: quantising
# and compiling take 3.5 to 6.5 minutes (docs/deployment.md), and at the 1.5x INT8 is hoped to gain over
# bf16 that is paid back after about 10 to 20 minutes of work.
INT8_MIN_WORK_SECONDS = 15 * 60
CALIBRATION_HELP = (
    "pictures --precision int8 is calibrated on: an Eigen test zip or a folder of pictures like yours (default: "
    "the first pictures of the work itself, --data's or --img's; its next few check INT8 against fp32)"
)


@dataclass(frozen=True)
class Work:
    """What a run will predict, for the INT8 and onnxruntime decisions: how many pictures (or frames), and a function
    giving the first few of them as (3, H, W) uint8 tensors."""

    count: int
    first_pictures: Callable


class Int8DepthModel:
    """A DenseDepth network quantised to INT8 (quantize_pt2e), shaped for protocol.predict_depth_m:
    called on (N, 3, H, W) pictures in [0, 1], it gives the network's output as the model does."""

    def __init__(self, network, depth_range):
        self.network, self.depth_range = network, depth_range

    def __call__(self, images):
        return self.network(images.float())

    def to(self, *args, **kwargs):  # oneDNN's INT8 kernels run on the CPU
        return self

    def eval(self):
        return self


def calibration_batches(calibration):
    """Each calibration picture with its mirror, in [0, 1] and channels_last: what the network sees."""
    for picture in calibration:
        image = torch.from_numpy(picture).float() / 255
        yield torch.cat([image, image.flip(-1)]).contiguous(memory_format=torch.channels_last)


def quantize_pt2e(model, calibration, compile=True):
    """`model` (on the CPU, eval) as an Int8DepthModel: exported with any batch, height and width,
    quantised statically by torchao's X86InductorQuantizer (int8 per-channel weights, uint8
    activations) calibrated on `calibration` (calibration_pictures, uint8), and compiled by Inductor
    (compile=False runs the quantised graph as it is: the same arithmetic, slowly)."""
    pt2e = _import("torchao.quantization.pt2e.quantize_pt2e")
    x86 = _import("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    batches = list(calibration_batches(calibration))
    auto = torch.export.Dim.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export's and torchao's notices about their own internals
        graph = torch.export.export(model, (batches[0],), dynamic_shapes=[{0: auto, 2: auto, 3: auto}]).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        network = pt2e.convert_pt2e(prepared)
    return Int8DepthModel(torch.compile(network) if compile else network, model.depth_range)


def agreement(model, int8_model, batches):
    """Share of pixels where the INT8 network's depth is within 1.25x of fp32's."""
    within = total = 0
    with torch.no_grad():
        for batch in batches:
            reference = target_to_depth_m(model(batch).float(), model.depth_range)
            quantized = target_to_depth_m(int8_model(batch).float(), model.depth_range)
            ratio = torch.maximum(reference / quantized, quantized / reference)
            within += int((ratio < 1.25).sum())
            total += ratio.numel()
    return within / total


def seconds_per_batch(run, batch, repeats=2):
    """Best of `repeats` seconds of run(batch), after one untimed call (which compiles)."""
    with torch.no_grad():
        run(batch)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(batch)
            seconds.append(time.perf_counter() - start)
    return min(seconds)


def int8_not_tried(device):
    """Why --precision auto does not try INT8 here (None: it may): it needs the CPU, torchao, and
    AMX-INT8, where oneDNN's INT8 kernels are expected to beat bf16; without AMX, INT8 measured
    slower than fp32 (docs/deployment.md)."""
    if device.type != "cpu":
        return "INT8 runs on the CPU"
    if importlib.util.find_spec("torchao") is None:
        return "INT8 needs torchao (pip install -r requirements-deploy.txt)"
    if not cpu_has_amx_int8():
        return "this CPU has no AMX-INT8"
    return None


def too_little_work(model, dtype, work, input_size):
    """Why the work is too small for 'auto' to try INT8 (None: it is not): less than
    INT8_MIN_WORK_SECONDS at `dtype`, timed on its first picture (with its mirror)."""
    first = work.first_pictures(1) if work is not None and work.count else []
    if not first:
        return "the pictures are not known in advance, so quantising (minutes) cannot be known to pay"
    batch = next(calibration_batches(resized_pictures(first, input_size)))
    with autocast(torch.device("cpu"), dtype):
        seconds = seconds_per_batch(model, batch, repeats=1) * work.count
    if seconds >= INT8_MIN_WORK_SECONDS:
        return None
    return (
        f"{work.count} pictures take about {seconds / 60:.1f} min in {precision_name(dtype)}, too little to pay "
        f"for quantising and compiling (3.5 to 6.5 min; tried from {INT8_MIN_WORK_SECONDS // 60} min of work)"
    )


def choose_int8(model, dtype, precision, calibration, check):
    """(model, dtype) to predict with on the CPU, and one line saying why. --precision int8: the
    model quantised (quantize_pt2e) on the `calibration` pictures, and torch.int8. 'auto' (dtype: its
    choice among fp32 and bf16): the same where INT8 runs faster than `dtype` on a check picture and
    its mirror, and agrees with fp32 on INT8_MIN_AGREEMENT of the `check` pictures' pixels (pictures
    other than the calibration ones); else unchanged."""
    started = time.perf_counter()
    int8_model = quantize_pt2e(model, calibration)
    built = time.perf_counter() - started
    check_batches = list(calibration_batches(check))
    share = agreement(model, int8_model, check_batches) if check_batches else None
    agreed = (f"within 1.25x of fp32's depth on {share:.1%} of the pixels of {len(check)} pictures besides the "
              "calibration ones" if share is not None else "not checked against fp32: no picture besides the "
              "calibration ones")  # fmt: skip
    if precision == "int8":
        return int8_model, torch.int8, f"precision int8: quantised and compiled in {built:.0f} s; {agreed}"
    name = precision_name(dtype)
    if share is None or share < INT8_MIN_AGREEMENT:  # too far off (or not known): no need to time it
        return model, dtype, f"precision auto: {name}; INT8 {agreed}"
    with autocast(torch.device("cpu"), dtype):
        base_s = seconds_per_batch(model, check_batches[0])
    int8_s = seconds_per_batch(int8_model, check_batches[0])
    timing = f"INT8 {int8_s:.2f} s a picture and its mirror against {name}'s {base_s:.2f} s"
    if int8_s >= base_s:
        return model, dtype, f"precision auto: {name}; {timing}"
    return int8_model, torch.int8, f"precision auto: int8; {timing}, {agreed}"


def int8_pictures(input_size, calibration, work):
    """(calibration, check) pictures for INT8, (1, 3, H, W) uint8 arrays at the model's input size:
    --calibration's (else the work's first INT8_CALIBRATION_COUNT), and the work's next ones (up to
    INT8_CHECK_COUNT) to compare with fp32, never the calibration ones themselves."""
    own = work.first_pictures(INT8_CALIBRATION_COUNT + INT8_CHECK_COUNT) if work is not None else []
    if calibration is not None:
        chosen = calibration_pictures(calibration, INT8_CALIBRATION_COUNT, input_size, uint8_input=True)
        others = [picture for picture in resized_pictures(own, input_size)
                  if not any(np.array_equal(picture, calibrated) for calibrated in chosen)]  # fmt: skip
        return chosen, others[:INT8_CHECK_COUNT]
    if not own:
        raise UserError("--precision int8 calibrates on pictures like yours: give --calibration (a folder of "
                        "pictures or an Eigen test zip)")  # fmt: skip
    calibration, check = calibration_split(own, INT8_CALIBRATION_COUNT)
    return resized_pictures(calibration, input_size), resized_pictures(check, input_size)


def calibration_split(pictures, wanted):
    """(calibration, check) of `pictures`: up to `wanted` to calibrate INT8 on, leaving up to
    INT8_CHECK_COUNT (and at least half of them) to compare INT8 with fp32 on."""
    count = min(wanted, max(len(pictures) - INT8_CHECK_COUNT, (len(pictures) + 1) // 2))
    return pictures[:count], pictures[count:]


def prediction_model(model, dtype, input_size, precision, device, work=None, calibration=None):
    """The model and dtype to predict with (evaluate.py, demo.py): --precision int8 goes through
    choose_int8; so does 'auto' where INT8 may be the fastest (int8_not_tried) and the work pays for
    quantising (too_little_work); else 'auto' in fp32 on the CPU goes through choose_onnxruntime.
    `work`: what will be predicted (None: not known, as in the demo); `calibration`: --calibration's
    path, else the work's own pictures calibrate. 'auto' prints what it picked and why, in one line."""
    if not isinstance(model, torch.nn.Module):  # an exported .onnx: onnxruntime's own arithmetic
        return model, dtype
    reason = int8_not_tried(device) if precision == "auto" else None
    if precision == "auto" and reason is None:
        reason = too_little_work(model, dtype, work, input_size)
    if precision == "int8" or (precision == "auto" and reason is None):
        calibration_set, check = int8_pictures(input_size, calibration, work)
        model, dtype, line = choose_int8(model, dtype, precision, calibration_set, check)
        print(line)
    elif precision == "auto":
        engine, why = "", auto_precision_reason(dtype, device)
        if onnxruntime_may_run(precision, device, dtype):
            chosen, words = choose_onnxruntime(model, input_size, work)
            engine = " in onnxruntime" if chosen is not model else ""
            model, why = chosen, f"{why}; {words}"
        print(f"precision auto: {precision_name(dtype)}{engine} ({why}); INT8 not tried: {reason}")
    return model, dtype
