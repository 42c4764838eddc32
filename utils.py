"""Helpers shared by the scripts: user-facing errors, device choice, seeding, checkpoints, logging."""

import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


class UserError(Exception):
    """A problem with the user's input or environment; scripts print it as one line, no trace."""


def run_main(main, args):
    """Run a script's main(args); a UserError becomes one line on stderr and exit status 2."""
    try:
        main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def choose_device(name="auto"):
    """'auto' picks CUDA when present, else the CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r} is not a device torch knows ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch sees no CUDA device here")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16():
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on Arm).

    Read from /proc/cpuinfo; where there is none (macOS, Windows) the answer is no, and
    --precision bf16 still asks for it explicitly.
    """
    try:
        with open("/proc/cpuinfo") as file:
            flags = set(file.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def choose_precision(name, device):
    """The autocast dtype for --precision `name` on `device`; torch.float32 means autocast off.

    'auto': bf16 on a GPU that has it, else fp16 (with gradient scaling in training);
    bf16 on a CPU with native bf16, else fp32.
    """
    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported(including_emulation=False)
        if name == "auto":
            return torch.bfloat16 if bf16_ok else torch.float16
        if name == "bf16" and not bf16_ok:
            raise UserError(f"--precision bf16 asked for, but {torch.cuda.get_device_name(device)} has no bf16")
    elif name == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    return _DTYPES[name]


def autocast(device, dtype):
    """The one mixed-precision context: autocast to `dtype` on `device`, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype):
    return {value: key for key, value in _DTYPES.items()}[dtype]


def default_workers(device):
    """DataLoader workers: a few per GPU; on the CPU leave the cores to the model."""
    cpus = os.cpu_count() or 1
    return min(8, cpus) if device.type == "cuda" else min(4, cpus // 2)


def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file beside `path` for binary writing; on success it is flushed to disk
    and renamed over `path`, on failure removed: `path` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes files private; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def save_checkpoint(state, path):
    """torch.save that never leaves a half-written checkpoint behind."""
    with atomic_write(path) as file:
        torch.save(state, file)


def load_checkpoint(path):
    """Load a checkpoint dict onto the CPU, without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} could not be read as a checkpoint of this project ({reason})") from err
    if not isinstance(checkpoint, dict) or not {"model", "config", "args"} <= checkpoint.keys():
        raise UserError(f"checkpoint {path} is not a checkpoint of this project (no model weights and settings)")
    return checkpoint


class RunningMean:
    """Mean of the values added since the last reset."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def add(self, value, count=1):
        self.total += value * count
        self.count += count

    @property
    def mean(self):
        return self.total / max(self.count, 1)

    def reset(self):
        self.total = 0.0
        self.count = 0


def colorize_depth(depth_m, vmin=None, vmax=None, cmap="plasma"):
    """(H, W) depth -> (H, W, 3) uint8 colour picture; the range defaults to the map's own min..max."""
    import matplotlib

    depth_m = np.asarray(depth_m, dtype=np.float32)
    vmin = float(np.nanmin(depth_m)) if vmin is None else vmin
    vmax = float(np.nanmax(depth_m)) if vmax is None else vmax
    scaled = (depth_m - vmin) / max(vmax - vmin, 1e-6)
    rgba = matplotlib.colormaps[cmap](np.clip(scaled, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)
