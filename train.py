"""Train DenseDepth on NYU Depth v2, read straight from its zip.

On a GPU (or the CPU, found by itself), the paper's recipe:
    python train.py --data_dir nyu_data.zip --batch_size 8 --checkpoint_dir checkpoints --epochs 20
A short CPU run on the built-in sample data (see sample_data.py):
    python train.py --data_dir data/sample/nyu_data.zip --batch_size 8 --checkpoint_dir runs/sample \
        --epochs 4 --input_size 192 256 --no_pretrained
Resume where a run stopped (epoch and optimizer state):
    python train.py ... --checkpoint checkpoints/last.pth

Speed: the model and its inputs are channels_last; --precision auto (the
default) trains under bf16 autocast on GPUs and CPUs that have bf16, fp16 with
gradient scaling on older GPUs, fp32 elsewhere; the loss is computed in fp32.
--compile adds torch.compile (for CUDA runs; on a CPU it compiles for minutes).

Each epoch ends with the metrics on the zip's test split (the evaluation
protocol of evaluate.py) and writes checkpoint_dir/last.pth; the epoch with
the lowest abs rel is also kept as checkpoint_dir/best.pth.
"""

import argparse
import math
import platform
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import TEST_CSV, TRAIN_CSV, NYUDepthDataset, downsample_depth_m, open_training_data, read_pairs
from evaluate import evaluate_protocol
from loss import DepthLoss
from metrics import DepthMetrics, format_table
from model import (
    DenseDepth,
    count_parameters,
    depth_m_to_target,
    model_from_checkpoint,
    output_size,
    resize,
    target_to_depth_m,
    to_unit_range,
)
from utils import (
    PRECISIONS,
    RunningMean,
    UserError,
    autocast,
    choose_device,
    choose_precision,
    default_workers,
    load_checkpoint,
    precision_name,
    run_main,
    save_checkpoint,
    seed_everything,
)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Training of depth estimation model")
    required = parser.add_argument_group("mandatory arguments")
    required.add_argument(
        "--data_dir",
        required=True,
        help="Train data: nyu_data.zip, or a directory holding it or its extracted 'data' folder",
    )
    required.add_argument("--batch_size", type=int, required=True, help="Batch size to process the train data")
    required.add_argument("--checkpoint_dir", required=True, help="Directory to save checkpoints in")
    required.add_argument("--epochs", type=int, required=True, help="Number of epochs")
    optional = parser.add_argument_group("optional arguments")
    optional.add_argument("--checkpoint", help="Model checkpoint path, to resume training from")
    optional.add_argument("--lr", type=float, default=1e-4, help="Learning rate (Adam)")
    optional.add_argument("--log_interval", type=int, default=100, help="Interval to print the avg. loss and metrics")
    optional.add_argument(
        "--input_size",
        type=int,
        nargs=2,
        default=(480, 640),
        metavar=("HEIGHT", "WIDTH"),
        help="network input size; NYU pictures are 480 640; smaller trains faster on a CPU",
    )
    optional.add_argument(
        "--decoder_width",
        type=float,
        default=1.0,
        help="decoder width factor: 1.0 is the paper's model, 0.5 the original code's default",
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
    optional.add_argument(
        "--device", default="auto", help="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ..."
    )
    optional.add_argument(
        "--seed", type=int, default=0, help="random seed for initialisation, shuffling and augmentation"
    )
    optional.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast precision; 'auto': bf16 where the GPU or CPU has it natively, fp16 with gradient "
        "scaling on older GPUs, else fp32",
    )
    optional.add_argument("--compile", action="store_true", help="torch.compile the model (for CUDA runs)")
    return parser


def check_args(args):
    for flag in ("batch_size", "epochs", "log_interval"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if min(args.input_size) < 1:
        raise UserError(f"--input_size must be two positive numbers, got {list(args.input_size)}")
    if args.lr <= 0 or args.decoder_width <= 0:
        raise UserError("--lr and --decoder_width must be positive")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")


def build_loaders(args, device):
    """Training loader (shuffled, augmented) and validation loader (the zip's test split)."""
    archive = open_training_data(args.data_dir)
    train_set = NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=True)
    val_set = NYUDepthDataset(archive, read_pairs(archive, TEST_CSV), augment=False)
    if len(train_set) < args.batch_size:
        raise UserError(
            f"{args.data_dir} has {len(train_set)} training pairs, fewer than --batch_size {args.batch_size}"
        )
    workers = default_workers(device) if args.workers is None else args.workers
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    train_loader = DataLoader(
        train_set, args.batch_size, shuffle=True, drop_last=True, generator=torch.Generator(), **common
    )
    val_loader = DataLoader(val_set, args.batch_size, shuffle=False, **common)
    return train_loader, val_loader


def build_model(args, checkpoint):
    """The model: the checkpoint's weights and width when resuming, else new (ImageNet encoder if asked)."""
    if checkpoint is None:
        return DenseDepth(args.decoder_width, pretrained=args.pretrained)
    return model_from_checkpoint(checkpoint, args.checkpoint)


def build_optimizer(model, args, device):
    # The fused kernel updates all parameters in one pass: a few percent of a CPU step.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), fused=fused)


def training_batch(images, depth_m, input_size, device):
    """A loader batch on the device at the network's sizes, resized there in one go.

    Images become float in [0, 1] at input_size, channels_last; depth (metres) is
    resized to the output size in DenseDepth's target space.
    """
    images = resize(to_unit_range(images.to(device, non_blocking=True)), input_size)
    depth_m = downsample_depth_m(depth_m.to(device, non_blocking=True), output_size(input_size))
    return images.contiguous(memory_format=torch.channels_last), depth_m


def train_step(model, images, depth_m, criterion, optimizer, scaler, device, dtype):
    """One optimisation step on a batch already on the device; returns the loss and prediction, detached."""
    with autocast(device, dtype):
        pred = model(images)
    loss = criterion(pred.float(), depth_m_to_target(depth_m))  # in fp32, outside autocast
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), pred.detach()


def train_one_epoch(model, loader, criterion, optimizer, scaler, device, dtype, epoch, args):
    """One pass over the training set; returns the mean loss."""
    model.train()
    # The shuffle order depends on the epoch alone, so a resumed run sees the same order.
    loader.generator.manual_seed(args.seed + epoch)
    epoch_loss, interval_loss, interval_metrics = RunningMean(), RunningMean(), DepthMetrics()
    progress = tqdm(
        loader, desc=f"epoch {epoch}/{args.epochs}", unit="img", unit_scale=args.batch_size, dynamic_ncols=True
    )
    for step, (images, depth_m) in enumerate(progress, start=1):
        images, depth_m = training_batch(images, depth_m, args.input_size, device)
        loss, pred = train_step(model, images, depth_m, criterion, optimizer, scaler, device, dtype)
        interval_loss.add(loss)
        interval_metrics.update(target_to_depth_m(pred.float()), depth_m)
        if step % args.log_interval == 0 or step == len(loader):
            mean_loss = float(interval_loss.mean)
            epoch_loss.add(mean_loss, interval_loss.count)
            train_metrics = interval_metrics.compute("pooled")
            progress.set_postfix(loss=f"{mean_loss:.4f}")
            tqdm.write(
                f"epoch {epoch} step {step}/{len(loader)}: loss {mean_loss:.4f}, "
                f"delta1 {train_metrics['delta1']:.3f}, abs_rel {train_metrics['abs_rel']:.3f}"
            )
            interval_loss.reset()
            interval_metrics = DepthMetrics()
    return epoch_loss.mean


def validate(model, loader, args, device, dtype):
    """Metrics on the zip's test split by the evaluation protocol, inside the Eigen crop."""
    metrics = evaluate_protocol(
        model, loader, args.input_size, None, device, dtype, total=len(loader), desc="validating"
    )
    return metrics.compute("per_image")


def make_checkpoint(model, optimizer, scaler, epoch, args, val_metrics, best_abs_rel):
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "args": {key: list(value) if isinstance(value, tuple) else value for key, value in vars(args).items()},
        "config": {"decoder_width": model.decoder_width, "input_size": list(args.input_size)},
        "val_metrics": val_metrics,
        "best_abs_rel": best_abs_rel,
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
    }


def main(args):
    check_args(args)
    seed_everything(args.seed)
    device = choose_device(args.device)
    dtype = choose_precision(args.precision, device)
    checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else None
    train_loader, val_loader = build_loaders(args, device)
    model = build_model(args, checkpoint).to(device, memory_format=torch.channels_last)
    # The compiled wrapper runs the steps; checkpoints hold the plain model's weights.
    step_model = torch.compile(model) if args.compile else model
    criterion = DepthLoss()
    optimizer = build_optimizer(model, args, device)
    # Gradient scaling only matters for fp16, whose range is narrow; with bf16 or fp32 it is off.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start_epoch, best_abs_rel = 1, math.inf
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best_abs_rel = checkpoint["epoch"] + 1, checkpoint["best_abs_rel"]
        print(f"resumed from {args.checkpoint} after epoch {checkpoint['epoch']}")
    print(
        f"DenseDepth, decoder width {model.decoder_width}, {count_parameters(model) / 1e6:.2f} M parameters, "
        f"on {device} in {precision_name(dtype)}; {len(train_loader.dataset)} training pairs, {len(val_loader.dataset)} test pairs, "
        f"input {args.input_size[0]}x{args.input_size[1]}"
    )

    for epoch in range(start_epoch, args.epochs + 1):
        started = time.time()
        train_loss = train_one_epoch(step_model, train_loader, criterion, optimizer, scaler, device, dtype, epoch, args)
        val_metrics = validate(step_model, val_loader, args, device, dtype)
        is_best = val_metrics["abs_rel"] < best_abs_rel
        best_abs_rel = min(best_abs_rel, val_metrics["abs_rel"])
        print(f"epoch {epoch}: train loss {train_loss:.4f}, {time.time() - started:.0f} s; test split (per image):")
        print(format_table(val_metrics))
        state = make_checkpoint(model, optimizer, scaler, epoch, args, val_metrics, best_abs_rel)
        save_checkpoint(state, f"{args.checkpoint_dir}/last.pth")
        if is_best:
            save_checkpoint(state, f"{args.checkpoint_dir}/best.pth")
    print(f"done; checkpoints in {args.checkpoint_dir} (last.pth, best.pth with abs rel {best_abs_rel:.4f})")


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
