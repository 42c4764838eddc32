"""train.py as torchrun runs it: two CPU processes with gloo, each started with torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK) and meeting through a file, so nothing listens
beyond the loopback interface; every run is bounded by a timeout."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from helpers import ROOT, rewrite_zip, run_script, tiny_train_argv

import train
from data import TRAIN_CSV, TrainingOrder, collate_pairs
from densedepth.depth import depth_m_to_target
from loss import DepthLoss
from model import model_from_checkpoint
from sample_data import write_sample_data
from utils import GracefulStop, World, seed_everything

pytestmark = pytest.mark.slow

TIMEOUT_S = 240


def loopback_interface():
    return next(name for _, name in socket.if_nameindex() if name.startswith("lo"))


class Processes:
    """`world_size` train.py processes (or `python *command`) with torchrun's environment; their
    output goes to files."""

    def __init__(self, argv, tmp_path, world_size=2, command=("train.py",)):
        self.out_dir = tmp_path / "processes"
        self.out_dir.mkdir(exist_ok=True)
        rendezvous = tmp_path / f"rendezvous-{time.monotonic_ns()}"
        common = {
            **os.environ,
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "GLOO_SOCKET_IFNAME": loopback_interface(),  # gloo's own sockets on the loopback only
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        argv = [str(arg) for arg in argv] + ["--device", "cpu", "--dist_url", rendezvous.as_uri()]
        self.processes = []
        for rank in range(world_size):
            env = {**common, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            with open(self.out_dir / f"{rank}.out", "w") as out, open(self.out_dir / f"{rank}.err", "w") as err:
                process = subprocess.Popen(
                    [sys.executable, *command, *argv],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            self.processes.append(process)

    def output(self, rank, stream="out"):
        return (self.out_dir / f"{rank}.{stream}").read_text()

    def signal_when(self, text, number):
        """Send `number` to every process (as torchrun passes a SIGTERM on) once rank 0 printed `text`."""
        deadline = time.monotonic() + TIMEOUT_S
        while text not in self.output(0):
            assert time.monotonic() < deadline and self.processes[0].poll() is None, self.output(0, "err")
            time.sleep(0.05)
        for process in self.processes:
            os.killpg(process.pid, number)

    def wait(self):
        """The exit statuses, once all ended (all killed past the timeout)."""
        try:
            return [process.wait(timeout=TIMEOUT_S) for process in self.processes]
        except subprocess.TimeoutExpired:
            for process in self.processes:
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the processes ran past {TIMEOUT_S} s: {self.output(0, 'err')[-2000:]}")


@pytest.fixture(scope="module")
def odd_zip(tmp_path_factory):
    """8 training pairs and 5 test pairs: two processes validate 3 and 2 of them, so an average of
    the two processes' averages would differ from the split's average."""
    out_dir = tmp_path_factory.mktemp("odd")
    return write_sample_data(
        out_dir, train_images=8, test_images=5, width=64, height=48, views_per_scene=4, seed=1, workers=1
    )[0]


def argv_for(data, checkpoint_dir, *extra, batch_size=8):
    return tiny_train_argv(data, checkpoint_dir, "--workers", 0, "--precision", "fp32", *extra, batch_size=batch_size)


def one_step_on_one_process(data, checkpoint_dir):
    """What train.py's first step computes, done by hand in one process on the same global batch of 8,
    in two halves as the two processes take it: BatchNorm normalises each half by its own statistics,
    the gradient is the mean of the halves', and the running statistics kept are the first half's
    (rank 0's, which DistributedDataParallel hands to the others).

    Returns {name: (weight after the step, its gradient)} and the buffers.
    """
    args = train.get_args_parser().parse_args(argv_for(data, checkpoint_dir))
    train.resolve_settings(args, None)
    world = World(torch.device("cpu"))
    seed_everything(args.seed)  # as train.main before it builds the model
    train_loader, _ = train.build_loaders(args, world)
    model = train.build_model(args, None, world)
    optimizer = train.build_optimizer(model, args.lr, world.device, amsgrad=args.optimizer == "amsgrad")
    order = TrainingOrder(len(train_loader.dataset), args.seed, batch_size=8)
    order.start(epoch=1)
    global_batch = list(order)
    parameters = dict(model.named_parameters())
    optimizer.zero_grad()
    for half in (global_batch[:4], global_batch[4:]):
        images, depth_m, _ = collate_pairs([train_loader.dataset[item] for item in half])
        images, depth_m = train.training_batch(images, depth_m, args.input_size, world.device)
        loss = DepthLoss()(model(images).float(), depth_m_to_target(depth_m))
        (loss / 2).backward()
        if half == global_batch[:4]:
            buffers = {name: value.clone() for name, value in model.state_dict().items() if name not in parameters}
    optimizer.step()
    return {name: (param.detach(), param.grad) for name, param in parameters.items()}, buffers


def validate_on_one_process(checkpoint_path, data, tmp_path):
    """The test-split metrics of a checkpoint by train.py's validation, in one process."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    args = train.get_args_parser().parse_args(argv_for(data, tmp_path / "unused"))
    train.resolve_settings(args, checkpoint)
    world = World(torch.device("cpu"))
    _, val_loader = train.build_loaders(args, world)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    skipped = train.SkippedSamples("test", len(val_loader.dataset), 0.0)
    return train.validate(model, val_loader, args, world, torch.float32, (GracefulStop(), skipped))


def test_two_processes_take_the_step_one_process_takes_on_the_global_batch(odd_zip, tmp_path):
    checkpoint_dir = tmp_path / "run"
    processes = Processes(argv_for(odd_zip, checkpoint_dir, "--epochs", 1), tmp_path)
    assert processes.wait() == [0, 0], processes.output(0, "err") + processes.output(1, "err")

    # Rank 0 alone prints and writes: one checkpoint of each kind a single process writes, once.
    assert processes.output(1) == ""
    assert processes.output(0).count("epoch 1: train loss") == 1
    assert "2 processes (gloo), each 4 of the global batch of 8" in processes.output(0)
    assert sorted(path.name for path in checkpoint_dir.glob("*.pth")) == ["best.pth", "last.pth"]
    assert not list(checkpoint_dir.glob(".*.tmp"))
    assert len(list((checkpoint_dir / "predictions").iterdir())) == 1

    saved = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["world_size"], saved["optimizer"]["state"][0]["step"].item()) == (1, 2, 1)
    reference, buffers = one_step_on_one_process(odd_zip, tmp_path / "reference")
    largest_gradient = max(gradient.abs().max() for _, gradient in reference.values())
    compared = 0
    for index, (name, (weight, gradient)) in enumerate(reference.items()):
        # Adam's first average is 0.1 g: the gradient the processes agreed on, averaged over them.
        gradient_of_two = saved["optimizer"]["state"][index]["exp_avg"] / 0.1
        torch.testing.assert_close(gradient_of_two, gradient, rtol=1e-4, atol=1e-6 * largest_gradient, msg=name)
        # Adam's first step moves a weight by lr g / (|g| + 1e-8): lr = 1e-4 where |g| >> 1e-8, so
        # there the weights agree as closely; where |g| is near 1e-8 it magnifies float rounding.
        difference = (saved["model"][name] - weight).abs()
        assert difference.max() < 2e-4, name  # the same start: nowhere more than the two steps apart
        well_conditioned = gradient.abs() > 1e-6
        assert torch.where(well_conditioned, difference, 0).max() < 1e-7, name
        compared += int(well_conditioned.sum())
    assert compared > 100_000  # of 12.9 M (the encoder's gradients are tiny at a random start)
    for name, buffer in buffers.items():
        torch.testing.assert_close(saved["model"][name], buffer, rtol=1e-5, atol=1e-6, msg=name)

    # The validation metrics: 3 + 2 images, summed over the processes, as one process sees all 5.
    one_process = validate_on_one_process(checkpoint_dir / "last.pth", odd_zip, tmp_path)
    assert saved["val_metrics"].keys() == one_process.keys()
    for name, value in one_process.items():
        assert saved["val_metrics"][name] == pytest.approx(value, rel=1e-5), name


TAKE_RANK_0S_CHOICE = """
import sys
from utils import start_world
with start_world("cpu", sys.argv[-1]) as world:
    print(world.from_main(f"chosen by rank {world.rank}"), file=sys.stderr)
"""


def test_every_process_takes_the_choice_rank_0_made(tmp_path):
    # As train.py does with --precision auto, whose timing of bf16 could differ between processes.
    processes = Processes([], tmp_path, command=["-c", TAKE_RANK_0S_CHOICE])
    assert processes.wait() == [0, 0], processes.output(0, "err") + processes.output(1, "err")
    assert [processes.output(rank, "err") for rank in (0, 1)] == ["chosen by rank 0\n"] * 2


def stop_argv(data, checkpoint_dir):
    # Batches of 2: 4 steps an epoch, each logged.
    return argv_for(data, checkpoint_dir, "--epochs", 1, "--log_interval", 1, batch_size=2)


@pytest.fixture(scope="module")
def straight_two_process_run(odd_zip, tmp_path_factory):
    """last.pth of an epoch of two processes that were never stopped."""
    tmp_path = tmp_path_factory.mktemp("straight")
    processes = Processes(stop_argv(odd_zip, tmp_path / "run"), tmp_path)
    assert processes.wait() == [0, 0], processes.output(0, "err")
    return torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=True)


def test_a_stopped_two_process_run_resumes_with_two_or_one(straight_two_process_run, odd_zip, tmp_path, capsys):
    checkpoint_dir = tmp_path / "run"
    processes = Processes(stop_argv(odd_zip, checkpoint_dir), tmp_path)
    processes.signal_when("epoch 1 step 1/4", signal.SIGTERM)  # to both, as torchrun passes it on
    assert processes.wait() == [143, 143]
    err = processes.output(0, "err")
    assert "Traceback" not in err + processes.output(1, "err")
    assert "stopped by SIGTERM in epoch 1 after step" in err
    assert "stopped by" not in processes.output(1, "err")  # said once, by rank 0
    command = err.split("Resume with: ")[1].strip()
    assert command.startswith("torchrun --nproc_per_node=2 train.py --data_dir")
    assert "--workers 0 --device cpu --precision fp32 --dist_url file://" in command  # the run's flags, repeated
    stopped = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert stopped["epoch"] == 0 and 2 <= stopped["samples_done"] < 8 and stopped["world_size"] == 2
    shutil.copy(checkpoint_dir / "last.pth", tmp_path / "stopped.pth")

    # Two processes again: the same weights as the run that never stopped, bit for bit.
    resumed_argv = [*stop_argv(odd_zip, checkpoint_dir), "--checkpoint", tmp_path / "stopped.pth"]
    processes = Processes(resumed_argv, tmp_path)
    assert processes.wait() == [0, 0], processes.output(0, "err")
    resumed = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert all(
        torch.equal(resumed["model"][name], straight_two_process_run["model"][name]) for name in resumed["model"]
    )

    # One process: the same global batches go on, from the sample where the two stopped.
    status, out, err = run_script(train, [*resumed_argv[:-1], tmp_path / "stopped.pth"], capsys)
    assert status == 0, err
    assert "saved by 2 processes and goes on with 1" in out
    assert f"epoch 1 step {stopped['samples_done'] // 2 + 1}/4" in out
    resumed = torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)
    assert (resumed["epoch"], resumed["world_size"], resumed["optimizer"]["state"][0]["step"].item()) == (1, 1, 4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch_size", 3], "--batch_size 3 is the global batch, split over the 2 processes; give a multiple of 2"),
        (["--sync_bn"], "--sync_bn needs CUDA GPUs"),
        (["--checkpoint", "nowhere.pth"], "checkpoint nowhere.pth does not exist"),
        (["--lr", 1e30, "--batch_size", 4], "at epoch 1 step 2; the run stopped without saving"),  # weights blow up
    ],
)
def test_bad_input_stops_every_process_and_is_reported_once(odd_zip, tmp_path, extra, message):
    processes = Processes([*argv_for(odd_zip, tmp_path / "run", "--epochs", 1), *extra], tmp_path)
    assert processes.wait() == [2, 2]
    errors = processes.output(0, "err") + processes.output(1, "err")
    assert message in processes.output(0, "err")
    assert errors.count("error:") == 1 and "Traceback" not in errors


def test_a_broken_pair_on_rank_1_is_reported_once_by_rank_0(odd_zip, tmp_path):
    # In batches of 2, rank 1 takes the second pair of epoch 1's order: break that one.
    order = TrainingOrder(8, seed=0, batch_size=2, rank=1, world_size=2)
    rank_1_index = next(iter(order))[0]
    with zipfile.ZipFile(odd_zip) as archive:
        rgb_name = archive.read(TRAIN_CSV).decode().splitlines()[rank_1_index].split(",")[0]
    broken = rewrite_zip(odd_zip, tmp_path / "broken.zip", {rgb_name: b"garbage"})

    # Within --max_bad_fraction: both processes skip the step, and rank 0 names the pair.
    argv = argv_for(broken, tmp_path / "run", "--epochs", 1, "--log_interval", 1, batch_size=2)
    processes = Processes([*argv, "--max_bad_fraction", 0.2], tmp_path)
    assert processes.wait() == [0, 0], processes.output(0, "err")
    out = processes.output(0)
    assert out.count("skipped training pair") == 1 and f"{rgb_name} does not decode as a picture" in out
    assert out.count("epoch 1 step") == 3  # of 4: the step with the broken pair was skipped by both

    # Past it: both stop, with one line.
    processes = Processes(argv, tmp_path)
    assert processes.wait() == [2, 2]
    errors = processes.output(0, "err") + processes.output(1, "err")
    assert errors.count("error:") == 1 and "1 of the 8 training pairs failed to load" in processes.output(0, "err")
