"""The machinery a training run stands on, kept out of train.py's recipe: a loader batch on the
device at the network's sizes, one optimisation step, the optimizer and its learning-rate
schedule (also what the benchmark measures); how far a run is (Progress); pairs that fail to
load (SkippedSamples); the batches all processes agree on; and the checkpoint that holds a run.
"""

import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from tqdm import tqdm

from data import downsample_depth_m, resize, resize_measured_depth_m, to_unit_range
from densedepth.depth import NYU_DEPTH_RANGE, depth_m_to_target
from model import model_config, output_size
from utils import GracefulStop, SharedError, autocast, choose_precision, precision_name, rng_states, set_rng_states

LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "amsgrad")


def build_optimizer(model, lr, device, amsgrad=False):
    """Adam (or its AMSGrad variant) with the paper's betas at rate `lr` (learning_rate() moves it
    where a schedule is asked for)."""
    # The fused kernel updates all parameters in one pass: a few percent of a CPU step.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), amsgrad=amsgrad, fused=fused)


@dataclass(frozen=True)
class Schedule:
    """A run's learning rate: `lr` throughout (constant, the paper's), or (cosine) a linear warmup
    over `warmup_steps` to `lr`, then a cosine decay that reaches 0 at the run's end."""

    lr: float
    lr_schedule: str = "constant"
    warmup_steps: int = 0

    @classmethod
    def from_args(cls, args):
        """train.py's --lr, --lr_schedule and --warmup_steps."""
        return cls(args.lr, args.lr_schedule, args.warmup_steps)


def learning_rate(schedule, step, total_steps):
    """The learning rate of global step `step` (from 0) of a run of `total_steps` under `schedule`.
    A function of the step alone, so a run resumed with the same --epochs goes on at the rate it
    stopped at (other --epochs stretch the schedule)."""
    if schedule.lr_schedule == "constant":
        return schedule.lr
    if step < schedule.warmup_steps:
        return schedule.lr * (step + 1) / schedule.warmup_steps
    decay_steps = max(total_steps - schedule.warmup_steps, 1)
    return schedule.lr * 0.5 * (1 + math.cos(math.pi * (step - schedule.warmup_steps) / decay_steps))


def set_learning_rate(optimizer, schedule, step, total_steps):
    """Set every parameter group's rate to learning_rate() of global step `step`."""
    lr = learning_rate(schedule, step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class Learner:
    """What the steps of a run work with: the model (whose weights checkpoints hold) and the
    wrappers the training steps and validation run (DistributedDataParallel, torch.compile,
    or the model itself), the loss, the optimizer and gradient scaler, the device and precision."""

    model: torch.nn.Module
    train_model: torch.nn.Module
    eval_model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype


class Guards(NamedTuple):
    """What can end a loop over a split early: a stop request (GracefulStop), too many pairs that fail
    to load (SkippedSamples)."""

    stop: GracefulStop
    skipped: "SkippedSamples"


@dataclass
class Progress:
    """How far a run is: epochs completed, and how far into the next one it got."""

    epoch: int = 0
    samples_done: int = 0  # of epoch + 1, in TrainingOrder
    loss_sum: float = 0.0  # over the steps done of epoch + 1
    loss_steps: int = 0
    best_abs_rel: float = math.inf
    history: list = field(default_factory=list)  # per finished epoch: train loss, seconds, test metrics

    def finish_epoch(self, val_metrics, seconds):
        """Record the finished epoch and move to the next; returns whether it is the best so far."""
        is_best = val_metrics["abs_rel"] < self.best_abs_rel
        train_loss = self.loss_sum / max(self.loss_steps, 1)
        self.history.append({"epoch": self.epoch + 1, "train_loss": train_loss, "seconds": seconds, **val_metrics})
        self.epoch += 1
        self.samples_done, self.loss_sum, self.loss_steps = 0, 0.0, 0
        self.best_abs_rel = min(self.best_abs_rel, val_metrics["abs_rel"])
        return is_best


class SkippedSamples:
    """Pairs of a split that were skipped, each reported once; the run stopped when those that failed to
    load (not those with nothing measured) pass a share of the split."""

    def __init__(self, split, num_pairs, max_fraction):
        self.split = split
        self.num_pairs = num_pairs
        self.max_fraction = max_fraction
        self.limit = math.floor(max_fraction * num_pairs)
        self.failed = {}

    def add(self, failures):
        for failure in failures:
            if failure.names not in self.failed:
                self.failed[failure.names] = failure
                tqdm.write(f"skipped {self.split} pair {failure.names[0]}: {failure.reason}")
        unreadable = [failure.reason for failure in self.failed.values() if failure.unreadable]
        if len(unreadable) > self.limit:
            raise SharedError(
                f"{len(unreadable)} of the {self.num_pairs} {self.split} pairs failed to load, more than "
                f"--max_bad_fraction {self.max_fraction} allows ({self.limit}); the first: {unreadable[0]}"
            )


def training_batch(images, depth_m, input_size, device, depth_range=NYU_DEPTH_RANGE, mark_invalid=False):
    """A loader batch on the device at the network's sizes, resized there in one go.

    Images become float in [0, 1] at input_size, channels_last; depth (metres) is
    resized to the output size in DenseDepth's target space for depth_range. With
    mark_invalid (datasets of one's own), depth that is 0, NaN or beyond the range is
    left out of the resize (each output pixel averages the valid targets under it, so
    sparse LiDAR-like depth keeps its measurements) and is NaN where none was, for the
    loss to leave out.
    """
    images = resize(to_unit_range(images.to(device, non_blocking=True)), input_size)
    depth_m, size = depth_m.to(device, non_blocking=True), output_size(input_size)
    if mark_invalid:
        depth_m = resize_measured_depth_m(depth_m, size, depth_range.max_m)
    else:
        depth_m = downsample_depth_m(depth_m, size, depth_range)
    return images.contiguous(memory_format=torch.channels_last), depth_m


def train_step(learner, images, depth_m):
    """One optimisation step of `learner` (its train_model, loss, optimizer and scaler, under its
    precision) on a batch already on the device; returns the loss and prediction, detached."""
    criterion = learner.criterion
    with autocast(learner.device, learner.dtype):
        pred = learner.train_model(images)
    loss = criterion(pred.float(), depth_m_to_target(depth_m, criterion.depth_range))  # in fp32, outside autocast
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scaler.scale(loss).backward()
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    return loss.detach(), pred.detach()


def agreed_batches(loader, world, guards):
    """The loader's (images, depth_m) batches as far as all processes go on together.

    A stop requested on any process ends the epoch on all before the next step; a step
    where some process has no pair that loaded gives (None, None) on all, which skip it;
    failed pairs are added to `skipped` on all, so its limit stops them together.
    """
    stop, skipped = guards
    for images, depth_m, failures in loader:
        stop_number, any_missing, any_failed = world.max(stop.number, images is None, len(failures))
        if stop_number:
            stop.adopt(stop_number)
            return
        if any_failed:
            skipped.add(world.gather(failures))
        yield (None, None) if any_missing else (images, depth_m)


def make_checkpoint(learner, progress, args, world, val_metrics):
    """Everything to resume the run exactly and to use the model; refuses weights that are not finite."""
    model = learner.model
    if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():
        raise SharedError(
            f"the weights are no longer finite; the run stopped without saving, {last_good_checkpoint(args)}"
        )
    return {
        "model": model.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "scaler": learner.scaler.state_dict(),
        **asdict(progress),
        "val_metrics": val_metrics,
        "rng": rng_states(),
        "world_size": world.size,
        "precision": {"device": learner.device.type, "name": precision_name(learner.dtype)},
        "args": {key: list(value) if isinstance(value, tuple) else value for key, value in vars(args).items()},
        "config": model_config(model, args.input_size),
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
    }


def last_good_checkpoint(args):
    """What is left of the run after a failure, in words."""
    path = Path(args.checkpoint_dir) / "last.pth"
    if path.is_file():
        return f"keeping the last good checkpoint {path}"
    return "and no checkpoint had been written yet"


def run_precision(name, checkpoint, device):
    """The autocast dtype of a run for --precision `name`. A resumed run under 'auto' keeps the
    precision it was saved in on the same kind of device: 'auto' times bf16 on CPUs, and a busy
    machine can time it the other way, which would change the resumed run's arithmetic."""
    saved = checkpoint["precision"] if checkpoint is not None else None
    if name == "auto" and saved is not None and saved["device"] == device.type:
        return choose_precision(saved["name"], device)
    return choose_precision(name, device)


def restore(checkpoint, learner, args, world):
    """Restore the optimizer, scaler and random generators of a checkpoint; returns the run's Progress."""
    learner.optimizer.load_state_dict(checkpoint["optimizer"])
    if args.lr_schedule == "constant":  # the optimizer state carries the old rate; --lr (or the checkpoint's) wins
        saved_lr = learner.optimizer.param_groups[0]["lr"]
        for group in learner.optimizer.param_groups:
            group["lr"] = args.lr
        if saved_lr != args.lr:
            print(f"learning rate {args.lr:g} from here on (the checkpoint trained at {saved_lr:g})")
    learner.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_states(checkpoint["rng"])
    progress = Progress(**{key: checkpoint[key] for key in Progress.__dataclass_fields__})
    position = f"epoch {progress.epoch + 1}, sample {progress.samples_done}" if progress.samples_done else ""
    print(f"resumed from {args.checkpoint} after epoch {progress.epoch}" + (f" ({position})" if position else ""))
    saved_by = checkpoint["world_size"]
    if saved_by != world.size:
        processes = f"{saved_by} process" + ("es" if saved_by > 1 else "")
        print(f"the run was saved by {processes} and goes on with {world.size}, on the same global batches")
    return progress
