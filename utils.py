"""Helpers shared by the scripts: user-facing errors, device choice, torchrun's processes, seeding,
checkpoints."""

import concurrent.futures
import contextlib
import functools
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


class UserError(Exception):
    """A problem with the user's input or environment; scripts print it as one line, no trace."""


class Stopped(Exception):
    """A run that stopped on request (a signal) after saving its state; the message says how to go on."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class SharedError(UserError):
    """A UserError that every process of a torchrun job raises together: decided from values they
    all share (summed or gathered losses, failures, the synchronised weights) or by World.all_or_none."""


def run_main(main, args):
    """Run a script's main(args): a UserError becomes one line on stderr and exit status 2,
    a Stopped run its message and the shell's status for its signal (130 for Ctrl-C).

    Under torchrun, rank 0 alone reports what every process raised together (a SharedError,
    a Stopped run); another rank's own error is printed with its rank.
    """
    rank = int(os.environ.get("RANK", "0"))
    try:
        main(args)
    except UserError as err:
        if rank == 0 or not isinstance(err, SharedError):
            print(f"error: {'' if rank == 0 else f'rank {rank}: '}{err}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stop:
        if rank == 0:
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

    def __init__(self, announce=True):
        self.signal = None
        self.announce = announce  # say what happens on stderr (off for torchrun's ranks but 0)
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
        if self.announce:
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
    def number(self):
        """The signal's number, 0 if none came: what processes compare to agree on stopping."""
        return int(self.signal or 0)

    def adopt(self, number):
        """Stop for signal `number` as well, when another process received it (0: nothing to adopt)."""
        if number and self.signal is None:
            self.signal = signal.Signals(number)

    @property
    def exit_code(self):
        """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signal


def ignore_stop_signals(worker_id=None):
    """DataLoader worker_init_fn: leave Ctrl-C and SIGTERM to the main process, which stops the run in order."""
    for number in GracefulStop.SIGNALS:
        signal.signal(number, signal.SIG_IGN)


DEVICE_HELP = "'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ..."  # for every script's --device


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
# Prediction also runs a model quantised to int8 (deploy.choose_int8) on the CPU; torch.int8 stands
# for it where a dtype is passed down, and autocast is off for it.
PREDICTION_PRECISIONS = (*PRECISIONS, "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as file:
            return set(file.read().split())
    except OSError:
        return set()


def cpu_has_amx_int8():
    """Whether the CPU has AMX's INT8 tiles (Intel Xeon 4th generation, Sapphire Rapids, and later)."""
    return "amx_int8" in cpu_flags()


def cpu_has_native_bf16():
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on Arm).

    Read from /proc/cpuinfo; where there is none (macOS, Windows) the answer is no, and
    --precision bf16 still asks for it explicitly.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def time_convolution(dtype, repeats=5):
    """Best-of-`repeats` seconds of one of DenseNet's 3x3 convolutions (128 to 32 channels, on a
    60x80 map, channels_last) on the CPU, under autocast to `dtype` (float32: none), on one thread.

    One thread, because on a busy machine the threads of one call wait for each other: with two
    threads and other work on both cores, every repeat could take a whole time slice (16 ms
    instead of 1 ms), and a run would time bf16 as slower than it is."""
    own_rng = torch.Generator().manual_seed(0)  # the run's random state stays untouched
    weight = torch.rand(32, 128, 3, 3, generator=own_rng).contiguous(memory_format=torch.channels_last)
    features = torch.rand(1, 128, 60, 80, generator=own_rng).contiguous(memory_format=torch.channels_last)
    seconds = []
    with torch_threads(1), torch.inference_mode(), autocast(torch.device("cpu"), dtype):
        for _ in range(repeats + 1):  # the first call compiles oneDNN's kernel
            start = time.perf_counter()
            torch.nn.functional.conv2d(features, weight, padding=1)
            seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


@contextlib.contextmanager
def torch_threads(count):
    """torch's CPU threads set to `count` inside the block, and set back after it: for the calling
    thread; a thread whose first torch call falls inside the block keeps `count` (TorchThread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchThread:
    """A thread of its own whose torch calls run on `count` CPU threads, while the others keep theirs.
    With torch's OpenMP backend (its Linux and Windows wheels) each thread takes its count from the
    process's setting at its first torch call, so the count is set inside the new thread and the calling
    thread's count put back at once; create it while no other thread is making its first torch call.
    (torch_threads around calls in a web server's shared workers left the count with every worker that
    started meanwhile.) A daemon thread: a run still going does not hold up the process's exit."""

    def __init__(self, count):
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self._work, daemon=True, name="torch-thread").start()
        default = torch.get_num_threads()
        self.run(_set_own_threads, count)
        torch.set_num_threads(default)

    def _work(self):
        while True:
            future, function, args, kwargs = self.jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as err:  # noqa: BLE001 (handed to the caller, who raises it)
                    future.set_exception(err)

    def submit(self, function, *args, **kwargs):
        """function(*args, **kwargs) in the thread, as a concurrent.futures.Future."""
        future = concurrent.futures.Future()
        self.jobs.put((future, function, args, kwargs))
        return future

    def run(self, function, *args, **kwargs):
        """function(*args, **kwargs) in the thread; its result (or its exception, raised here)."""
        return self.submit(function, *args, **kwargs).result()


def _set_own_threads(count):
    torch.get_num_threads()  # the thread's first call takes the process's count; ours comes after it
    torch.set_num_threads(count)


@functools.cache
def cpu_bf16_speedup():
    """How many times faster this CPU convolves under bf16 autocast than in fp32 (0 where it has
    no native bf16, without timing). Measured once per process, in about 0.1 s: the flag alone
    does not tell, as AVX512-BF16 made the network's convolutions 2x faster on an AMD EPYC and
    about 2x slower on an Intel Xeon whose hypervisor hides AMX."""
    if not cpu_has_native_bf16():
        return 0.0
    return time_convolution(torch.float32) / time_convolution(torch.bfloat16)


CPU_BF16_MIN_SPEEDUP = 1.2  # below it, fp32's exactness is worth more than the time saved


def choose_precision(name, device):
    """The autocast dtype for --precision `name` on `device`; torch.float32 means autocast off.

    'auto': bf16 on a GPU that has it, else fp16 (with gradient scaling in training);
    bf16 on a CPU that runs convolutions at least CPU_BF16_MIN_SPEEDUP times faster in it
    (cpu_bf16_speedup), else fp32.
    """
    if name not in PREDICTION_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PREDICTION_PRECISIONS)}, got {name!r}")
    if name == "int8" and device.type != "cpu":
        raise UserError(f"--precision int8 runs on the CPU (oneDNN's INT8 kernels), not on {device}: use bf16 there")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported(including_emulation=False)
        if name == "auto":
            return torch.bfloat16 if bf16_ok else torch.float16
        if name == "bf16" and not bf16_ok:
            raise UserError(f"--precision bf16 asked for, but {torch.cuda.get_device_name(device)} has no bf16")
    elif name == "auto":
        fast_bf16 = device.type == "cpu" and cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP
        return torch.bfloat16 if fast_bf16 else torch.float32
    return _DTYPES[name]


def auto_precision_reason(dtype, device):
    """Why choose_precision('auto', device) gave `dtype`, in a few words."""
    if device.type == "cuda":
        return "this GPU has bf16" if dtype == torch.bfloat16 else "this GPU has no bf16"
    if not cpu_has_native_bf16():
        return "this CPU has no native bf16"
    verb = "run" if dtype == torch.bfloat16 else "only run"
    return f"bf16 convolutions {verb} {cpu_bf16_speedup():.1f}x as fast as fp32's here"


def autocast(device, dtype):
    """The one mixed-precision context: autocast to `dtype` on `device`, or nothing for float32 (and
    int8, whose model is quantised itself)."""
    if dtype in (torch.float32, torch.int8):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype):
    return {value: key for key, value in _DTYPES.items()}[dtype]


def default_workers(device, processes=1):
    """DataLoader workers for each of `processes` on this machine: a few per GPU; on the CPU
    leave the cores to the model."""
    cpus = (os.cpu_count() or 1) // processes
    return min(8, max(cpus, 1)) if device.type == "cuda" else min(4, cpus // 2)


# ----------------------------------------------------------------------------- torchrun's processes


@dataclass
class World:
    """The processes of a run and this one's place among them: a plain `python train.py` is a
    World of one; under torchrun (`launched`) there is a process group, even of one process.

    Small agreements between processes (stop requests, failed pairs, errors) go through a gloo
    group on the CPU, so they never wait for a GPU; tensors go through the device's own group.
    """

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # among the processes on this machine
    local_size: int = 1
    launched: bool = False
    control_group: object = None  # None: the default group (itself gloo on the CPU)

    @property
    def is_main(self):
        """Rank 0: the process that writes checkpoints, logs and pictures, and prints."""
        return self.rank == 0

    def max(self, *values):
        """The largest of each integer over all processes, on every process."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control_group)
        return tuple(tensor.tolist())

    def mean(self, tensor):
        """The element-wise mean of `tensor` (on this process's device) over all processes."""
        if self.size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.size

    def sum_in_place(self, tensors):
        """Replace each tensor (on this process's device) by its element-wise sum over all processes."""
        if self.size > 1:
            for tensor in tensors:
                dist.all_reduce(tensor)

    def from_main(self, value):
        """Rank 0's `value` (picklable), on every process: for a choice made by measuring, such as
        --precision auto's timing of bf16, which could come out differently on another process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control_group)
        return box[0]

    def gather(self, items):
        """Every process's list of (picklable) items joined in rank order, on every process."""
        if self.size == 1:
            return list(items)
        parts = [None] * self.size
        dist.all_gather_object(parts, list(items), group=self.control_group)
        return [item for part in parts for item in part]

    @contextlib.contextmanager
    def all_or_none(self):
        """A block every process runs: a UserError in it on any of them is raised on all, once
        all got to its end, so none is left waiting for the others (rank 0's, else the first)."""
        if self.size == 1:
            yield
            return
        error = None
        try:
            yield
        except UserError as err:
            error = str(err)
        errors = self.gather([(self.rank, error)] if error else [])
        if errors:
            rank, message = errors[0]
            raise SharedError(message if rank == 0 else f"on rank {rank}: {message}")

    def on_main(self, function, *args, **kwargs):
        """function(*args, **kwargs) on rank 0 alone (its result; None on the others), in a block every
        process joins, so a UserError it raises (a full disk) stops them all together."""
        result = None
        with self.all_or_none():
            if self.is_main:
                result = function(*args, **kwargs)
        return result


def launched_by_torchrun():
    return {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= os.environ.keys()


@contextlib.contextmanager
def start_world(device_name="auto", dist_url="env://"):
    """The World of this process, its device chosen once: one process, or under torchrun (which
    sets RANK, WORLD_SIZE, LOCAL_RANK) a process group for the block, NCCL on GPUs, gloo on the
    CPU. Other ranks' standard output is discarded: rank 0 prints for the run."""
    if not launched_by_torchrun():
        yield World(choose_device(device_name))
        return
    env = os.environ
    rank, size, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    device = process_device(device_name, local_rank, local_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=dist_url, rank=rank, world_size=size, device_id=device)
    else:
        dist.init_process_group("gloo", init_method=dist_url, rank=rank, world_size=size)
    try:
        control_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
        world = World(device, rank, size, local_rank, local_size, launched=True, control_group=control_group)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(sys.stdout if rank == 0 else devnull):
            yield world
    finally:
        dist.destroy_process_group()


def process_device(name, local_rank, local_size):
    """The device of torchrun's process `local_rank`: GPU number local_rank for --device auto or
    cuda (auto falls back to the CPU without CUDA), or the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise UserError(
            f"--device {name}: under torchrun each process takes its own GPU (number LOCAL_RANK); "
            "give --device cuda, auto or cpu"
        )
    if not torch.cuda.is_available():
        raise UserError("--device cuda asked for CUDA, but torch sees no CUDA device here")
    if local_size > torch.cuda.device_count():
        raise UserError(
            f"torchrun started {local_size} processes on this machine, which has {torch.cuda.device_count()} "
            f"GPUs; give --nproc_per_node={torch.cuda.device_count()} or fewer"
        )
    return torch.device("cuda", local_rank)


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
        # Only this process's GPU: asking for all of them would open a CUDA context on each.
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
    }


def set_rng_states(states):
    """Restore what rng_states() returned (the CUDA state on the current GPU, where there is one)."""
    random.setstate(_as_tuples(states["python"]))
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if isinstance(states["cuda"], torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


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


# The first 8 bytes of an HDF5 file (the authors' Keras models; MATLAB v7.3 files have it after 512 bytes).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _unreadable_reason(path, err):
    if isinstance(err, OSError) and err.strerror:  # no permission, an I/O error
        return err.strerror
    with open(path, "rb") as file:
        magic = file.read(8)
    if magic == HDF5_SIGNATURE:
        return (
            "it is an HDF5 file, such as the DenseDepth authors' Keras models: start a run from it with --weights, "
            "or convert it once with convert_weights.py"
        )
    magic = magic[:4]
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
