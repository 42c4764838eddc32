"""Train DenseDepth on NYU Depth v2, read straight from its zip.

On a GPU (or the CPU, found by itself), the paper's recipe:
    python train.py --data_dir nyu_data.zip --batch_size 8 --checkpoint_dir checkpoints --epochs 20
A short CPU run from scratch on the built-in sample data, the quick start's (see sample_data.py):
    python train.py --data_dir data/sample/nyu_data.zip --batch_size 8 --checkpoint_dir runs/sample --epochs 4 \
        --input_size 96 128 --decoder_width 0.5 --decoder_padding replicate --no_pretrained --lr 7e-4 \
        --lr_schedule cosine --warmup_steps 30
Fine-tune a trained model (a checkpoint, or the authors' nyu.h5 / kitti.h5) on new data, as a new run:
    python train.py --data_dir my_data.zip --batch_size 8 --checkpoint_dir finetuned --epochs 5 --weights nyu.h5
KITTI from its own files (docs/kitti.md): a BTS or monodepth2 split list, the raw drives, and the annotated
depth (without --kitti_depth, depth projected from the Velodyne); depth 1 to 80 m unless told otherwise:
    python train.py --data_dir eigen_train_files_with_gt.txt --val_data eigen_test_files_with_gt.txt \
        --kitti_raw kitti_raw --kitti_depth data_depth_annotated --input_size 384 1248 --batch_size 8 \
        --checkpoint_dir runs/kitti --epochs 10
A dataset of one's own (a CSV of rgb_path,depth_path lines, or a folder with rgb/ and depth/), here
KITTI-like: 16-bit PNGs of metres x 256, 1 to 80 m:
    python train.py --data_dir kitti/train --val_data kitti/val --depth_scale 256 --min_depth 1 --max_depth 80 \
        --batch_size 8 --checkpoint_dir runs/kitti --epochs 10
Resume where a run stopped, to the same weights as a run that never stopped:
    python train.py --data_dir nyu_data.zip --batch_size 8 --checkpoint_dir checkpoints --epochs 20 \
        --checkpoint checkpoints/last.pth
On the GPUs of one machine (or as CPU processes, with gloo), with PyTorch's torchrun:
    torchrun --nproc_per_node=4 train.py --data_dir nyu_data.zip --batch_size 8 --checkpoint_dir checkpoints \
        --epochs 20
On two machines of 4 GPUs each, the same command on both (HOST: the first machine's address):
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --rdzv_id=nyu \
        train.py --data_dir nyu_data.zip --batch_size 32 --lr 4e-4 --checkpoint_dir checkpoints --epochs 20
--batch_size is the global batch, split evenly over the processes (8 over 4 GPUs: 2 each),
and --lr applies to it: the same command trains the same recipe on any
number of processes, an epoch is the same len(train pairs) // batch_size steps, and a run can
be resumed with another number. Only rank 0 prints, draws and writes checkpoints; --sync_bn
normalises BatchNorm over the global batch rather than each process's share.

The first Ctrl-C (or SIGTERM, as sent by job schedulers) saves the run's state
mid-epoch to checkpoint_dir/last.pth and prints that command; a second one quits
at once. Settings left out when resuming (--input_size, --decoder_width, --lr,
--lr_schedule, --warmup_steps, the loss weights, --seed, the depth range) are the checkpoint's.

Speed: the model and its inputs are channels_last; --precision auto (the
default) trains under bf16 autocast on GPUs that have bf16 and on CPUs where a
convolution times faster in it, fp16 with gradient scaling on older GPUs, fp32
elsewhere; the loss is computed in fp32.
--compile adds torch.compile (for CUDA runs; on a CPU it compiles for minutes).

Each epoch ends with the metrics on the zip's test split (the evaluation
protocol, densedepth/protocol.py) and writes checkpoint_dir/last.pth; the epoch with
the lowest abs rel is also kept as checkpoint_dir/best.pth. Beside them, each
epoch rewrites log.csv (loss and metrics per epoch) and curves.png, adds
predictions/epoch_NNN.png (fixed test-split pictures: input | ground truth |
prediction), and logs to TensorBoard in tensorboard/ if the package is
installed; the run ends with a summary. Checkpoints are written whole or not at
all. Pairs that do not load are skipped and reported, up to --max_bad_fraction of
a split; a loss that is not finite stops the run without saving, keeping the last
good checkpoint. The machinery behind these (steps, checkpoints, agreement between
processes) is in densedepth/training.py and utils.py; this file is the recipe.
"""

import argparse
import contextlib
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import DEPTH_SCALE_HELP, HELD_OUT_EVERY, TrainingOrder, collate_pairs
from densedepth.depth import KITTI_DEPTH_RANGE, NYU_DEPTH_RANGE, DepthRange, target_to_depth_m
from densedepth.encoders import DEFAULT_ENCODER, ENCODERS, LIGHT_ENCODER
from densedepth.kitti import KITTI_GT_RANGE_M, KittiDataset, add_kitti_arguments
from densedepth.nyu_sources import GROUND_TRUTHS
from densedepth.protocol import evaluate_protocol
from densedepth.sources import KITTI_LIST, check_training_flags, data_kind, open_training_data
from densedepth.training import (
    LR_SCHEDULES,
    OPTIMIZERS,
    Guards,
    Learner,
    Progress,
    Schedule,
    SkippedSamples,
    agreed_batches,
    build_optimizer,
    last_good_checkpoint,
    make_checkpoint,
    restore,
    run_precision,
    set_learning_rate,
    train_step,
    training_batch,
)
from densedepth.visualize import TrainingLog, preview_grid, preview_samples
from densedepth.weights import describe, is_keras_file, load_weights
from loss import SSIM_WINDOW, DepthLoss
from metrics import DepthMetrics, format_table
from model import (
    DECODER_PADDINGS,
    DenseDepth,
    Variant,
    count_parameters,
    model_from_checkpoint,
    variant_for,
    variant_from_config,
)
from utils import (
    DEVICE_HELP,
    PRECISIONS,
    GracefulStop,
    SharedError,
    Stopped,
    UserError,
    default_workers,
    ignore_stop_signals,
    load_checkpoint,
    precision_name,
    remove_partial_writes,
    run_main,
    save_checkpoint,
    seed_everything,
    start_world,
    writable_dir,
)

# The smallest input side whose half-size output holds the SSIM window.
MIN_INPUT_SIDE = 2 * SSIM_WINDOW - 1

# Flags whose value the checkpoint replaces when resuming: they are not repeated in the command that resumes a run.
REPLACED_ON_RESUME = ("checkpoint", "weights", "pretrained")


def add_setting(group, flag, default, **kwargs):
    """Add a flag that defines what a run trains: left out, it is the checkpoint's when resuming
    (the model's with --weights), else `default`, which its help is told."""
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    shown = kwargs.pop("default_shown", shown)
    kwargs["help"] = f"{kwargs['help']} (default {shown}, or the checkpoint's)"
    action = group.add_argument(flag, **kwargs)
    action.setting_default = default


def setting_defaults(parser):
    """{dest: default} of the flags added with add_setting."""
    return {action.dest: action.setting_default for action in parser._actions if hasattr(action, "setting_default")}


def get_args_parser():
    parser = argparse.ArgumentParser(description="Training of depth estimation model")
    required = parser.add_argument_group("mandatory arguments")
    required.add_argument(
        "--data_dir",
        required=True,
        help="Train data: nyu_data.zip, or a directory holding it or its extracted 'data' folder; a KITTI split "
        "list (BTS's or monodepth2's .txt, with --kitti_raw); or a dataset of one's own: a CSV of "
        "rgb_path,depth_path lines (relative to it), or a folder with rgb/ and depth/",
    )
    required.add_argument(
        "--batch_size",
        type=int,
        required=True,
        help="Batch size to process the train data (under torchrun: the global batch, over all processes)",
    )
    required.add_argument("--checkpoint_dir", required=True, help="Directory to save checkpoints in")
    required.add_argument("--epochs", type=int, required=True, help="Number of epochs")
    optional = parser.add_argument_group("optional arguments")
    optional.add_argument("--checkpoint", help="Model checkpoint path, to resume training from")
    optional.add_argument(
        "--weights",
        help="start a new run from these model weights, with a new optimizer (fine-tuning): a checkpoint of this "
        "project, or the DenseDepth authors' nyu.h5 / kitti.h5; their architecture and depth range come with them",
    )
    add_setting(optional, "--lr", 1e-4, type=float, help="learning rate (Adam's)")
    add_setting(
        optional,
        "--optimizer",
        "adam",
        choices=OPTIMIZERS,
        help="adam (the paper's) or amsgrad: Adam's variant that never raises a weight's step "
        "size, which the authors' Keras code trains with (Adam(amsgrad=True))",
    )
    add_setting(
        optional,
        "--lr_schedule",
        "constant",
        choices=LR_SCHEDULES,
        help="constant (the paper's) or cosine: a linear warmup over --warmup_steps, then a cosine "
        "decay to 0 at the run's end (for short runs from scratch, as the quick start's)",
    )
    add_setting(optional, "--warmup_steps", 0, type=int, help="steps of linear warmup for --lr_schedule cosine")
    add_setting(
        optional,
        "--l1_weight",
        0.1,
        type=float,
        help="weight of the loss's L1 term (the default is the paper's)",
    )
    add_setting(
        optional,
        "--gradient_weight",
        1.0,
        type=float,
        help="weight of the loss's image-gradient term (the default is the paper's)",
    )
    optional.add_argument(
        "--log_interval",
        type=int,
        default=100,
        help="steps between printed average losses and metrics (default %(default)s)",
    )
    add_setting(
        optional,
        "--input_size",
        (480, 640),
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="network input size (the default is NYU's pictures'); smaller trains faster on a CPU",
    )
    add_setting(
        optional,
        "--encoder",
        DEFAULT_ENCODER,
        choices=tuple(ENCODERS),
        metavar="ENCODER",
        help=f"the ImageNet encoder under DenseDepth's decoder: {', '.join(ENCODERS)}; densenet169 is the "
        f"paper's, {LIGHT_ENCODER} the light model for live depth on a CPU (docs/models.md)",
    )
    add_setting(
        optional,
        "--decoder_width",
        None,
        type=float,
        default_shown="the encoder's recommended width: 1.0 for densenet169, the paper's model",
        help="decoder width factor: the first decoder convolution's channels over the encoder's deepest ones "
        "(0.5 is the original code's default for densenet169)",
    )
    add_setting(
        optional,
        "--decoder_padding",
        "zeros",
        choices=DECODER_PADDINGS,
        help="how the decoder's 3x3 convolutions pad: zeros (the paper's) or replicate, repeating "
        "the border pixels (the quick start's: no bright dots in the corners of a model trained in minutes)",
    )
    optional.add_argument(
        "--no_pretrained",
        dest="pretrained",
        action="store_false",
        help="start the encoder from random weights instead of ImageNet's",
    )
    optional.add_argument(
        "--workers", type=int, help="DataLoader workers (default: a few per GPU, half the cores on a CPU)"
    )
    optional.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_setting(optional, "--seed", 0, type=int, help="random seed for initialisation, shuffling and augmentation")
    optional.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast precision; 'auto': bf16 on GPUs that have it and on CPUs where it measures faster, "
        "fp16 with gradient scaling on older GPUs, else fp32",
    )
    optional.add_argument("--compile", action="store_true", help="torch.compile the model (for CUDA runs)")
    add_data_and_process_arguments(parser, optional)
    return parser


def add_data_and_process_arguments(parser, optional):
    """The groups for data besides NYU's zip (one's own, NYU's other sources, KITTI) and for several
    processes; --max_bad_fraction joins the `optional` group."""
    own = parser.add_argument_group("datasets of one's own")
    own.add_argument(
        "--val_data",
        help="validation pairs (a CSV or rgb/ + depth/ folder; a KITTI split list for KITTI); default: NYU's "
        "test split, or for a dataset of one's own or KITTI every 20th of its pairs, held out",
    )
    own.add_argument("--depth_scale", type=float, help=DEPTH_SCALE_HELP)
    add_setting(
        own,
        "--min_depth",
        NYU_DEPTH_RANGE.min_m,
        type=float,
        help="nearest depth in metres (default 0.1, 1 for KITTI's lists, or the checkpoint's / weights')",
    )
    add_setting(
        own,
        "--max_depth",
        NYU_DEPTH_RANGE.max_m,
        type=float,
        help="farthest depth in metres (default 10, NYU's; 80 for KITTI's lists; give 80 for KITTI-like data of "
        "one's own), or the checkpoint's / weights'",
    )
    nyu = parser.add_argument_group("with --data_dir NYU's labeled .mat or one of BTS's NYU lists (docs/data.md)")
    nyu.add_argument("--splits", help="NYU's splits.mat: trainNdxs train, testNdxs validate")
    nyu.add_argument(
        "--gt",
        choices=GROUND_TRUTHS,
        help="the labeled .mat's depth to train on: filled (depths, the default) or raw (rawDepths, holes masked)",
    )
    nyu.add_argument("--data_root", help="the folder a BTS list's paths are relative to (sync/ for training)")
    nyu.add_argument("--val_data_root", help="the folder --val_data's BTS list is relative to (default: --data_root)")
    kitti = parser.add_argument_group("with --data_dir a KITTI split list (docs/kitti.md)")
    add_kitti_arguments(kitti)
    optional.add_argument(
        "--max_bad_fraction",
        type=float,
        default=0.01,
        help="share of a split's pairs that may fail to load (skipped and reported) before the run stops",
    )
    distributed = parser.add_argument_group("several processes (started by torchrun)")
    distributed.add_argument(
        "--sync_bn",
        action="store_true",
        help="BatchNorm statistics over the global batch rather than each process's share (CUDA only)",
    )
    distributed.add_argument(
        "--dist_url",
        default="env://",
        help="how the processes find each other: env:// (torchrun's MASTER_ADDR and MASTER_PORT, the default) "
        "or file:///a/path/on/a/shared/disk",
    )


def check_args(args):
    if args.checkpoint and args.weights:
        raise UserError(
            "give --checkpoint (resume a run where it stopped) or --weights (start a new run from a model's "
            "weights), not both"
        )
    for flag in ("batch_size", "epochs", "log_interval"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.input_size is not None and min(args.input_size) < 1:
        raise UserError(f"--input_size must be two positive numbers, got {list(args.input_size)}")
    if args.input_size is not None and min(args.input_size) < MIN_INPUT_SIDE:
        raise UserError(
            f"--input_size {args.input_size[0]} {args.input_size[1]} is too small: the loss's SSIM needs an "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} window in the half-size output, so each side must be at least {MIN_INPUT_SIDE}"
        )
    for flag in ("lr", "decoder_width", "depth_scale", "min_depth", "max_depth"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            raise UserError(f"--{flag} must be positive, got {getattr(args, flag)}")
    for flag in ("l1_weight", "gradient_weight"):
        if getattr(args, flag) is not None and not getattr(args, flag) >= 0:
            raise UserError(f"--{flag} must be 0 or more, got {getattr(args, flag)}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise UserError(f"--warmup_steps must be 0 or more, got {args.warmup_steps}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    if not 0 <= args.max_bad_fraction < 1:
        raise UserError(f"--max_bad_fraction must be in [0, 1), got {args.max_bad_fraction}")
    check_training_flags(args)


def resolve_settings(args, checkpoint, weights=None):
    """Fill in the run's settings left out on the command line: the checkpoint's when resuming
    (the model's from --weights when starting from them), else the defaults."""
    if checkpoint is not None and "optimizer" not in checkpoint:
        raise UserError(
            f"checkpoint {args.checkpoint} holds a model's weights but no run to resume; start a new run from it "
            f"with --weights {args.checkpoint}"
        )
    saved = {}
    if checkpoint is not None:  # resuming: the run's settings, and the model's from its config
        saved = {**checkpoint["args"], **model_settings(checkpoint)}
    elif weights is not None:  # a new run from a model: the model's settings only
        saved = model_settings(weights)
    defaults = setting_defaults(get_args_parser())
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, saved.get(name, default))
    if args.decoder_width is None:
        args.decoder_width = ENCODERS[args.encoder].decoder_width
    args.input_size = tuple(args.input_size)
    if checkpoint is not None:
        # What the checkpoint's weights and optimizer state were made for.
        fixed = {flag: value for flag, value in model_settings(checkpoint).items() if flag != "input_size"}
        fixed["optimizer"] = saved.get("optimizer", defaults["optimizer"])
        resume_advice = "leave the flag out to resume with the checkpoint's"
        refuse_changes(args, fixed, f"checkpoint {args.checkpoint}", resume_advice)
    if not args.min_depth < args.max_depth:  # checked once both are known (a flag, the checkpoint's, the default)
        raise UserError(f"--min_depth {args.min_depth} must be below --max_depth {args.max_depth}")
    if weights is not None:  # what the weights' layers were made for
        made_for = model_settings(weights)
        fixed = {flag: made_for[flag] for flag in ("encoder", "decoder_width", "decoder_padding")}
        refuse_changes(args, fixed, f"--weights {args.weights}", "leave the flag out to use the weights' model")


def refuse_changes(args, fixed, source, advice):
    """Stop with a UserError naming the first flag set to other than what `source` was made with."""
    for flag, value in fixed.items():
        if getattr(args, flag) != value:
            raise UserError(f"--{flag} {getattr(args, flag)} differs from the {value} of {source}; {advice}")


def model_settings(checkpoint):
    """The settings of the model a checkpoint holds, under their flags' names."""
    config = checkpoint["config"]
    return {
        "encoder": config.get("encoder", DEFAULT_ENCODER),
        "decoder_width": config["decoder_width"],
        "decoder_padding": variant_from_config(config).decoder_padding,
        "input_size": config["input_size"],
        "min_depth": config["min_depth_m"],
        "max_depth": config["max_depth_m"],
    }


def check_world(args, world):
    """The settings that depend on the processes: the global batch splits evenly; --sync_bn wants CUDA."""
    if args.batch_size % world.size:
        raise UserError(
            f"--batch_size {args.batch_size} is the global batch, split over the {world.size} processes; "
            f"give a multiple of {world.size}"
        )
    if args.sync_bn and world.launched and world.device.type != "cuda":
        raise UserError("--sync_bn needs CUDA GPUs: torch's SyncBatchNorm does not run on the CPU")
    if args.sync_bn and not world.launched:
        print("--sync_bn ignored: a single process normalises over the whole batch already")


def build_loaders(args, world):
    """Training loader (this process's share of each global batch, in TrainingOrder, augmented) and
    validation loader (its share of the zip's test split, or of --val_data)."""
    train_set, val_set = open_training_data(args, HELD_OUT_EVERY)
    if train_set.own_data:  # sparse depth: a pair with nothing measured in range is skipped and reported
        train_set.measured_up_to_m = args.max_depth
    if len(train_set) < args.batch_size:
        raise UserError(
            f"{args.data_dir} has {len(train_set)} training pairs, fewer than --batch_size {args.batch_size}"
        )
    workers = default_workers(world.device, world.local_size) if args.workers is None else args.workers
    common = {
        "num_workers": workers,
        "pin_memory": world.device.type == "cuda",
        "persistent_workers": workers > 0,
        "collate_fn": collate_pairs,
        "worker_init_fn": ignore_stop_signals,
    }
    share = args.batch_size // world.size
    order = TrainingOrder(len(train_set), args.seed, args.batch_size, world.rank, world.size)
    train_loader = DataLoader(train_set, share, sampler=order, drop_last=True, **common)
    # Each test pair on one process, none padded in: the sums over processes are the split's own.
    val_order = range(world.rank, len(val_set), world.size)
    val_loader = DataLoader(val_set, share, sampler=val_order, **common)
    return train_loader, val_loader


def build_model(args, checkpoint, world, weights=None):
    """The model on the device, channels_last: the checkpoint's weights and settings when resuming,
    those of --weights when starting from them, else new (ImageNet encoder if asked); with --sync_bn
    under torchrun, its BatchNorms synchronised."""
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, args.checkpoint)
    elif weights is not None:
        model = model_from_checkpoint(weights, args.weights)
    else:
        model = None
        # The first process on each machine downloads the ImageNet weights; the others then read its copy.
        for first_on_machine in (True, False):
            with world.all_or_none():
                if (world.local_rank == 0) == first_on_machine:
                    variant = variant_for(args.encoder, decoder_padding=args.decoder_padding)
                    model = DenseDepth(args.decoder_width, args.pretrained, variant=variant, encoder=args.encoder)
    # A new run's range, or a fine-tuning's (which may change the weights'); a resumed run's is checked equal.
    model.depth_range = DepthRange(args.min_depth, args.max_depth)
    if args.sync_bn and world.launched:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(world.device, memory_format=torch.channels_last)


def parallelize(model, args, world):
    """(train_model, eval_model): what the training steps and validation run.

    Under torchrun the steps run DistributedDataParallel, which averages the gradients over
    the processes; validation runs the plain model, each process on its share of the split,
    so it needs no collectives. --compile compiles them; checkpoints hold `model`'s weights.
    """
    if not world.launched:
        step_model = torch.compile(model) if args.compile else model
        return step_model, step_model
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    train_model = DistributedDataParallel(model, device_ids=device_ids)
    if args.compile:
        return torch.compile(train_model), torch.compile(model)
    return train_model, model


def build_learner(model, train_loader, args, world, dtype):
    """The model with what trains it: its wrappers (parallelize), the loss for its depth range with the
    run's term weights (masking invalid depth for a dataset of one's own), Adam, and the gradient
    scaler (on for fp16 only)."""
    train_model, eval_model = parallelize(model, args, world)
    criterion = DepthLoss(
        model.depth_range,
        l1_weight=args.l1_weight,
        gradient_weight=args.gradient_weight,
        mask_invalid=train_loader.dataset.own_data,
    )
    optimizer = build_optimizer(model, args.lr, world.device, amsgrad=args.optimizer == "amsgrad")
    # Gradient scaling only matters for fp16, whose range is narrow; with bf16 or fp32 it is off.
    scaler = torch.amp.GradScaler(world.device.type, enabled=dtype == torch.float16)
    return Learner(model, train_model, eval_model, criterion, optimizer, scaler, world.device, dtype)


@dataclass
class Run:
    """What every stage of a run consults: its flags, its processes, the stop request, the splits'
    failed pairs, and rank 0's log (None on the other processes)."""

    args: argparse.Namespace
    world: object
    stop: GracefulStop
    skipped_train: SkippedSamples
    skipped_test: SkippedSamples
    log: TrainingLog = None


class StopRequested(Exception):
    """A stop request (Ctrl-C, SIGTERM) ended an epoch's training or validation early, on every process."""


def train_one_epoch(learner, loader, progress, run):
    """Train on the rest of epoch progress.epoch + 1, keeping `progress` up to date; raises
    StopRequested when a stop request ends it early (after a whole step, on every process).

    Losses are checked at each log line (one device sync per interval, not per step) and go to
    rank 0's log.
    """
    args, world, criterion = run.args, run.world, learner.criterion
    learner.train_model.train()
    epoch, steps = progress.epoch + 1, loader.sampler.steps_per_epoch
    first_step = progress.samples_done // args.batch_size + 1
    losses, metrics = [], DepthMetrics()  # of the current log interval
    bar = tqdm(
        agreed_batches(loader, world, Guards(run.stop, run.skipped_train)),
        desc=f"epoch {epoch}/{args.epochs}",
        initial=first_step - 1,
        total=steps,
        unit="img",
        unit_scale=args.batch_size if args.batch_size > 1 else False,
        dynamic_ncols=True,
        disable=not world.is_main,
    )

    def end_interval(step):
        loss = report_interval(losses, metrics, step, steps, progress, run)
        if loss is not None and run.log is not None:
            run.log.add_loss(samples_seen(progress, steps, args.batch_size), loss)
        bar.set_postfix(loss=f"{progress.loss_sum / max(progress.loss_steps, 1):.4f}")
        losses.clear()
        metrics.reset()

    steps_taken, schedule = 0, Schedule.from_args(args)
    for step, (images, depth_m) in enumerate(bar, start=first_step):
        if args.lr_schedule != "constant":
            set_learning_rate(learner.optimizer, schedule, progress.epoch * steps + step - 1, args.epochs * steps)
        if images is not None:
            images, depth_m = training_batch(
                images, depth_m, args.input_size, world.device, criterion.depth_range, criterion.mask_invalid
            )
            loss, pred = train_step(learner, images, depth_m)
            losses.append((step, loss))
            metrics.update(target_to_depth_m(pred.float(), criterion.depth_range), depth_m)
        progress.samples_done += args.batch_size
        steps_taken += 1
        if step % args.log_interval == 0 or step == steps:
            end_interval(step)
    if losses:  # a stop ended the epoch inside a log interval
        end_interval(step)
    if steps_taken < len(loader):
        raise StopRequested


def samples_seen(progress, steps_per_epoch, batch_size):
    """Training samples seen since the run began: the x axis of its TensorBoard curves."""
    return progress.epoch * steps_per_epoch * batch_size + progress.samples_done


def report_interval(losses, metrics, step, steps, progress, run):
    """Check the interval's losses (averaged over the processes) are finite, add them to the epoch's,
    print a line; returns their mean."""
    if not losses:
        return None
    epoch, world = progress.epoch + 1, run.world
    values = world.mean(torch.stack([loss for _, loss in losses]).float()).cpu()
    finite = torch.isfinite(values)
    if not finite.all():
        bad_step = losses[int((~finite).nonzero()[0])][0]
        raise SharedError(
            f"the loss became {values[~finite][0].item()} at epoch {epoch} step {bad_step}; the run stopped "
            f"without saving, {last_good_checkpoint(run.args)} (try a lower --lr, or look for broken pairs)"
        )
    progress.loss_sum += float(values.sum())
    progress.loss_steps += len(losses)
    world.sum_in_place(metrics.sums(world.device))
    train_metrics = metrics.compute("pooled")
    tqdm.write(
        f"epoch {epoch} step {step}/{steps}: loss {values.mean():.4f}, "
        f"delta1 {train_metrics['delta1']:.3f}, abs_rel {train_metrics['abs_rel']:.3f}"
    )
    return float(values.mean())


def validate(model, loader, args, world, dtype, guards, depth_range=None):
    """The epoch's metrics on the validation pairs (NYU's test split, or --val_data) by the evaluation
    protocol: NYU's inside the Eigen crop; KITTI's inside Garg's, ground truth 1e-3 < d < 80 m; a
    dataset of one's own over whole pictures, the ground truth capped at the model's depth range.
    Each process takes its share, and their sums and counts are added up before the metrics are
    taken, as one process would. Raises StopRequested if a stop was requested (on any process)
    before the end. depth_range: the model's, given when `model` is a compiled wrapper."""
    stop, skipped = guards
    failures = []

    def batches():
        for images, depth_m, failed in loader:
            failures.extend(failed)
            if stop.requested:
                return
            if images is not None:
                yield images, depth_m

    own_data, kitti = loader.dataset.own_data, isinstance(loader.dataset, KittiDataset)
    crop_name = "garg" if kitti else "none" if own_data else None
    metrics = DepthMetrics(  # counting the ground truth inside these bounds
        max_depth_m=(depth_range or model.depth_range).max_m if own_data and not kitti else None,
        gt_range_m=KITTI_GT_RANGE_M if kitti else None,
    )
    evaluate_protocol(
        model, batches(), args.input_size, crop_name, world.device, dtype, metrics=metrics, depth_range=depth_range,
        bar={"total": len(loader), "desc": "validating", "disable": not world.is_main},
    )  # fmt: skip
    stop_number, any_failed = world.max(stop.number, len(failures))
    if any_failed:
        skipped.add(world.gather(failures))
    if stop_number:
        stop.adopt(stop_number)
        raise StopRequested
    world.sum_in_place(metrics.sums(world.device))
    return metrics.compute("per_image")


def save_checkpoints(world, state, *paths):
    """Rank 0 writes the checkpoint to each path; should that fail, every process stops with its error."""

    def save_all():
        for path in paths:
            save_checkpoint(state, path)

    world.on_main(save_all)


def resume_command(args, path, world):
    """The command line that resumes this run from checkpoint `path`: the mandatory flags, and the
    others given that the checkpoint does not hold (how the run goes rather than what it trains)."""
    flags = ["--data_dir", args.data_dir, "--batch_size", args.batch_size, "--checkpoint_dir", args.checkpoint_dir]
    flags += ["--epochs", args.epochs, "--checkpoint", path]
    parser = get_args_parser()
    held = set(setting_defaults(parser)) | set(REPLACED_ON_RESUME)
    for action in parser._actions:
        if action.required or not action.option_strings or action.dest in held or action.dest == "help":
            continue
        value = getattr(args, action.dest)
        if value != action.default:
            flags += [action.option_strings[0]] + ([] if isinstance(value, bool) else [value])
    if not world.launched:
        launcher = "python"
    elif world.local_size == world.size:
        launcher = f"torchrun --nproc_per_node={world.size}"
    else:  # several machines: their rendezvous flags are torchrun's, not known here
        launcher = "torchrun (this run's flags, on each machine)"
    script = sys.argv[0] if Path(sys.argv[0]).name == "train.py" else "train.py"  # as it was started
    return f"{launcher} {shlex.quote(script)} " + shlex.join(str(flag) for flag in flags)


def stop_run(learner, progress, run):
    """Save the state of a run stopped by a signal and raise Stopped with how to resume it."""
    args, world = run.args, run.world
    path = Path(args.checkpoint_dir) / "last.pth"
    save_checkpoints(world, make_checkpoint(learner, progress, args, world, None), path)
    raise Stopped(
        f"stopped by {run.stop.signal.name} in epoch {progress.epoch + 1} after step "
        f"{progress.samples_done // args.batch_size}; saved {path}. "
        f"Resume with: {resume_command(args, path, world)}",
        run.stop.exit_code,
    )


def end_epoch(learner, progress, run, epoch_metrics, seconds):
    """Report the finished epoch and save it as last.pth, and as best.pth when its abs rel is the lowest yet."""
    is_best = progress.finish_epoch(epoch_metrics, seconds)
    row = progress.history[-1]
    print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, {seconds:.0f} s; test split (per image):")
    print(format_table(epoch_metrics))
    state = make_checkpoint(learner, progress, run.args, run.world, epoch_metrics)
    checkpoint_dir = Path(run.args.checkpoint_dir)
    save_checkpoints(run.world, state, checkpoint_dir / "last.pth", *([checkpoint_dir / "best.pth"] if is_best else []))


def skipped_samples(train_loader, test_loader, args):
    """The counters of training and test pairs that fail to load, each stopping the run past --max_bad_fraction."""
    return (
        SkippedSamples("training", len(train_loader.dataset), args.max_bad_fraction),
        SkippedSamples("test", len(test_loader.dataset), args.max_bad_fraction),
    )


def log_epoch(run, learner, progress, preview, steps_per_epoch):
    """Rank 0's record of the finished epoch: its history, the preview pictures' depth, the samples seen."""
    grid = preview_grid(learner.model, preview, run.args.input_size, learner.device, learner.dtype, progress.epoch)
    run.log.end_epoch(progress.history, grid, samples_seen(progress, steps_per_epoch, run.args.batch_size))


def summarize(progress, args, log):
    """The end-of-run summary: the best epoch, its metrics, and where the files are."""
    if progress.history:
        best = min(progress.history, key=lambda row: row["abs_rel"])
        print(f"done: {progress.epoch} epochs; the best, epoch {best['epoch']} (best.pth), on the test split:")
        print(format_table(best))
    files = "last.pth, best.pth, log.csv (per-epoch loss and metrics), curves.png, predictions/epoch_NNN.png"
    if log.tensorboard is not None:
        files += f", tensorboard/ (tensorboard --logdir {Path(args.checkpoint_dir) / 'tensorboard'})"
    print(f"files in {args.checkpoint_dir}: {files}")


def padding_note(model):
    """', replicate-padded' for a decoder that does not pad with zeros as the paper's does; else ''."""
    padding = model.variant.decoder_padding
    return "" if padding == Variant.decoder_padding else f", {padding}-padded"


def describe_run(model, train_loader, test_loader, args, world, dtype):
    processes = ""
    if world.launched:
        backend = "nccl" if world.device.type == "cuda" else "gloo"
        processes = (
            f"; {world.size} processes ({backend}), each {args.batch_size // world.size} of the global batch "
            f"of {args.batch_size}"
        )
    if args.weights:
        print(f"a new run from the weights of {args.weights}: new optimizer, from epoch 1")
    print(
        f"DenseDepth on {model.encoder_name}, decoder width {model.decoder_width}{padding_note(model)}, "
        f"{count_parameters(model) / 1e6:.2f} M parameters, "
        f"on {world.device} in {precision_name(dtype)}{processes}; {len(train_loader.dataset)} training pairs, "
        f"{len(test_loader.dataset)} test pairs, input {args.input_size[0]}x{args.input_size[1]}, depth "
        f"{model.depth_range.min_m:g} to {model.depth_range.max_m:g} m"
    )


def load_start(args, world):
    """The checkpoint to resume (--checkpoint) or weights to start from (--weights), if any; the run's
    settings resolved with them; the checkpoint directory cleared of half-written files."""
    checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else None
    weights = load_weights(args.weights) if args.weights else None
    if weights is not None and is_keras_file(args.weights):
        print(describe(weights))
    if checkpoint is None and weights is None and data_kind(args.data_dir) == KITTI_LIST:  # kitti.h5's range
        args.min_depth = KITTI_DEPTH_RANGE.min_m if args.min_depth is None else args.min_depth
        args.max_depth = KITTI_DEPTH_RANGE.max_m if args.max_depth is None else args.max_depth
    resolve_settings(args, checkpoint, weights)
    check_world(args, world)
    if world.is_main:
        remove_partial_writes(writable_dir(args.checkpoint_dir, "--checkpoint_dir"), "*.pth")
    return checkpoint, weights


def main(args):
    check_args(args)
    with start_world(args.device, args.dist_url) as world:
        with world.all_or_none():  # a file one machine lacks stops every process, reported once
            checkpoint, weights = load_start(args, world)
            seed_everything(args.seed)
            dtype = run_precision(args.precision, checkpoint, world.device)
            train_loader, test_loader = build_loaders(args, world)
        dtype = world.from_main(dtype)  # every process trains in the precision rank 0 timed
        model = build_model(args, checkpoint, world, weights)
        learner = build_learner(model, train_loader, args, world, dtype)
        progress = restore(checkpoint, learner, args, world) if checkpoint is not None else Progress()
        describe_run(model, train_loader, test_loader, args, world, dtype)
        if progress.epoch >= args.epochs:
            print(f"{args.checkpoint} has finished {progress.epoch} epochs already; raise --epochs to train on")

        preview = preview_samples(test_loader.dataset) if world.is_main else []
        steps = train_loader.sampler.steps_per_epoch
        log = world.on_main(TrainingLog, args.checkpoint_dir, samples_seen(progress, steps, args.batch_size))
        with GracefulStop(announce=world.is_main) as stop, contextlib.closing(log) if log else contextlib.nullcontext():
            run = Run(args, world, stop, *skipped_samples(train_loader, test_loader, args), log)
            try:
                for epoch in range(progress.epoch + 1, args.epochs + 1):
                    started = time.time()
                    train_loader.sampler.start(epoch, progress.samples_done)
                    train_one_epoch(learner, train_loader, progress, run)
                    epoch_metrics = validate(
                        learner.eval_model, test_loader, args, world, dtype, Guards(stop, run.skipped_test),
                        model.depth_range,
                    )  # fmt: skip
                    end_epoch(learner, progress, run, epoch_metrics, time.time() - started)
                    world.on_main(log_epoch, run, learner, progress, preview, steps)
            except StopRequested:  # in training or validation: save where the run is, say how to go on
                stop_run(learner, progress, run)
        if world.is_main:
            summarize(progress, args, log)


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
