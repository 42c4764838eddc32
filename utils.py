"""Helpers shared by the scripts: user-facing errors, device choice, seeding, checkpoints, logging."""

import contextlib
import os
import random
import signal
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch


class UserError(Exception):
    """A problem with the user's input or environment; scripts print it as one line, no trace."""


class Stopped(Exception):
    """A run that stopped on request (a signal) after saving its state; the message says how to go on."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def run_main(main, args):
    """Run a script's main(args): a UserError becomes one line on stderr and exit status 2,
    a Stopped run its message and the shell's status for its signal (130 for Ctrl-C)."""
    try:
        main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class GracefulStop:
    """Inside `with GracefulStop() as stop:` the first Ctrl-C (SIGINT) or SIGTERM only sets
    stop.requested, so a loop can save its state and end at a safe point; a second one
    raises KeyboardInterrupt at once, as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(number)
        print(
            f"\n{self.signal.name} received: saving a checkpoint at the next step "
            "(send it again to quit at once without saving)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def requested(self):
        return self.signal is not None

    @property
    def exit_code(self):
        """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signal


def ignore_stop_signals(worker_id=None):
    """DataLoader worker_init_fn: leave Ctrl-C and SIGTERM to the main process, which stops the run in order."""
    for number in GracefulStop.SIGNALS:
        signal.signal(number, signal.SIG_IGN)


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


def rng_states():
    """The states of Python's, NumPy's and torch's generators, in types a weights_only load accepts."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states):
    """Restore what rng_states() returned (CUDA states only where the same GPUs are present)."""
    random.setstate(_as_tuples(states["python"]))
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value):
    # random.setstate wants the nested tuples back, whatever a round trip made of them.
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file beside `path` for binary writing; on success it is flushed to disk
    and renamed over `path`, on failure removed: `path` is never left half-written.

    A write that fails (a full disk, no permission) becomes a UserError naming `path`.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes files private; give the usual permissions
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        if isinstance(err, OSError):
            raise UserError(f"{path} could not be written ({err.strerror or err}); any earlier copy is intact") from err
        raise


def write_bytes(path, data):
    """Write a whole file at once through atomic_write."""
    with atomic_write(path) as file:
        file.write(data)


def remove_partial_writes(directory, pattern):
    """Delete the temporary files atomic_write left in `directory` for files matching `pattern`
    when its process was killed mid-write (a SIGKILL, a power cut)."""
    directory = Path(directory)
    if directory.is_dir():
        for leftover in directory.glob(f".{pattern}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def writable_dir(path, flag):
    """Create directory `path` if needed and check it can be written in, before hours of work go into it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {path} cannot be created ({err.strerror or err})") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable")
    return path


def save_checkpoint(state, path):
    """torch.save that never leaves a half-written checkpoint behind."""
    with atomic_write(path) as file:
        try:
            torch.save(state, file)
        except RuntimeError as err:  # torch reports a failed write (a full disk) as a RuntimeError
            raise OSError(f"torch.save failed: {str(err).strip().splitlines()[0]}") from err


def _unreadable_reason(path, err):
    if isinstance(err, OSError) and err.strerror:  # no permission, an I/O error
        return err.strerror
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):  # neither torch's zip nor its legacy pickle
        return "it is not a PyTorch checkpoint file"
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "it is truncated (its zip directory is missing)"
    if "Weights only load failed" in str(err):
        return (
            "it holds Python objects besides tensors, numbers and strings, and opening those could run "
            "code; this project's checkpoints never do (torch.load(..., weights_only=False) opens it, "
            "if you trust where it came from)"
        )
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def load_checkpoint(path):
    """Load a checkpoint dict onto the CPU, without running pickled code."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise UserError(f"checkpoint {path} could not be read: {_unreadable_reason(path, err)}") from err
    if not isinstance(checkpoint, dict) or not {"model", "config", "args"} <= checkpoint.keys():
        raise UserError(f"checkpoint {path} is not a checkpoint of this project (no model weights and settings)")
    return checkpoint
