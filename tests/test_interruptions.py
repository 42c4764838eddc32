"""Interrupted and failing runs lose nothing: atomic checkpoints, stop-and-resume to the same
weights, non-finite losses stopped before they are saved, outputs written whole."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_SIZE, tiny_train_argv

import evaluate
import train
from data import EIGEN_CROP, EIGEN_DEPTH, EIGEN_RGB, write_npy_member
from densedepth.training import Schedule, learning_rate
from utils import Stopped, UserError, load_checkpoint, save_checkpoint


def run_argv(data, checkpoint_dir, epochs, *extra):
    # 8 training pairs in batches of 2: 4 steps an epoch, each logged.
    return tiny_train_argv(data, checkpoint_dir, "--log_interval", 1, *extra, epochs=epochs, batch_size=2)


def train_in_process(data, checkpoint_dir, epochs, *extra):
    train.main(train.get_args_parser().parse_args(run_argv(data, checkpoint_dir, epochs, *extra)))
    return torch.load(checkpoint_dir / "last.pth", map_location="cpu", weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


@pytest.fixture(scope="module")
def straight_run(tiny_zips, tmp_path_factory):
    """Two epochs without a stop: the result every resumed run must reproduce."""
    return train_in_process(tiny_zips[0], tmp_path_factory.mktemp("straight"), 2, "--workers", 0)


@pytest.mark.slow  # with the straight run, 16 s on Zen 3
def test_resuming_after_an_epoch_gives_the_same_weights(straight_run, tiny_zips, tmp_path):
    first = train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0)
    assert first["epoch"] == 1 and first["samples_done"] == 0
    resumed = train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert_same_weights(resumed["model"], straight_run["model"])
    assert resumed["optimizer"]["state"][0]["step"] == straight_run["optimizer"]["state"][0]["step"]
    assert_same_weights(resumed["optimizer"]["state"][5], straight_run["optimizer"]["state"][5])


def ctrl_c_during_step(number, monkeypatch):
    """Make train.py's step `number` (counted from 1 over the run) send this process a SIGINT;
    returns the real train_step."""
    real_step, calls = train.train_step, []

    def step_with_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", step_with_ctrl_c)
    return real_step


@pytest.mark.slow  # 12 s on Zen 3
def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_to_the_same_weights(
    straight_run, tiny_zips, tmp_path, monkeypatch
):
    # The signal arrives during the 6th step (epoch 2, step 2): the step ends, then the run saves and stops.
    real_step = ctrl_c_during_step(6, monkeypatch)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Stopped) as stopped:
        train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 0)
    assert stopped.value.exit_code == 130
    assert "stopped by SIGINT in epoch 2 after step 2" in str(stopped.value)
    assert f"--checkpoint {tmp_path / 'last.pth'}" in str(stopped.value)
    saved = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (saved["epoch"], saved["samples_done"], saved["loss_steps"]) == (1, 4, 2)
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers given back
    monkeypatch.setattr(train, "train_step", real_step)
    # Two workers this time: the batches and their augmentation do not depend on the worker count.
    resumed = train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 2, "--checkpoint", tmp_path / "last.pth")
    assert_same_weights(resumed["model"], straight_run["model"])
    assert resumed["loss_sum"] == 0 and resumed["epoch"] == 2


def test_a_stop_inside_a_log_interval_keeps_its_losses(tiny_zips, tmp_path, monkeypatch):
    ctrl_c_during_step(2, monkeypatch)
    with pytest.raises(Stopped, match="stopped by SIGINT in epoch 1 after step 2"):
        train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0, "--log_interval", 100)
    saved = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (saved["samples_done"], saved["loss_steps"]) == (4, 2) and saved["loss_sum"] > 0

@pytest.mark.slow
def test_a_stop_during_validation_resumes_with_the_validation(straight_run, tiny_zips, tmp_path, monkeypatch):
    real_protocol = train.evaluate_protocol

    def protocol_with_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_protocol(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate_protocol", protocol_with_sigterm)
    with pytest.raises(Stopped, match="stopped by SIGTERM in epoch 1 after step 4") as stopped:
        train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 0)
    assert stopped.value.exit_code == 143
    saved = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (saved["epoch"], saved["samples_done"], saved["val_metrics"]) == (0, 8, None)
    monkeypatch.setattr(train, "evaluate_protocol", real_protocol)
    resumed = train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert_same_weights(resumed["model"], straight_run["model"])
    assert resumed["val_metrics"] == straight_run["val_metrics"]

@pytest.mark.slow
def test_a_resumed_auto_run_keeps_the_precision_it_was_saved_in(tiny_zips, tmp_path, monkeypatch, capsys):
    # 'auto' times bf16 on the CPU; a busy machine can time it the other way on the day of the resume.
    import utils

    monkeypatch.setattr(utils, "cpu_bf16_speedup", lambda: 2.0)
    ctrl_c_during_step(2, monkeypatch)
    with pytest.raises(Stopped):
        train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0)
    saved = torch.load(tmp_path / "last.pth", weights_only=True)
    assert saved["precision"] == {"device": "cpu", "name": "bf16"}
    monkeypatch.setattr(utils, "cpu_bf16_speedup", lambda: 0.0)  # a fresh run would train in fp32
    resume = ("--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert train_in_process(tiny_zips[0], tmp_path, 1, *resume)["precision"]["name"] == "bf16"
    assert "on cpu in bf16" in capsys.readouterr().out
    # An explicit --precision is the user's choice, not the checkpoint's.
    argv = run_argv(tiny_zips[0], tmp_path, 2, *resume, "--precision", "fp32")
    train.main(train.get_args_parser().parse_args(argv))
    assert torch.load(tmp_path / "last.pth", weights_only=True)["precision"]["name"] == "fp32"

@pytest.mark.slow
def test_the_decoder_padding_is_the_checkpoints_and_cannot_change(tiny_zips, tmp_path, capsys):
    from test_bad_input import assert_one_clear_line

    from model import model_from_checkpoint
    from utils import run_main

    def status_of(argv):
        try:
            run_main(train.main, train.get_args_parser().parse_args(argv))
        except SystemExit as exit:
            return exit.code, *capsys.readouterr()
        return 0, *capsys.readouterr()

    first = run_argv(tiny_zips[0], tmp_path, 1, "--workers", 0, "--decoder_padding", "replicate")
    status, out, err = status_of(first)
    assert status == 0, err
    assert "decoder width 0.0625, replicate-padded" in out
    saved = load_checkpoint(tmp_path / "last.pth")
    assert saved["config"]["decoder_padding"] == "replicate"
    assert model_from_checkpoint(saved, "last.pth").head.padding_mode == "replicate"
    resume = ("--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert_one_clear_line(
        status_of(run_argv(tiny_zips[0], tmp_path, 2, *resume, "--decoder_padding", "zeros")),
        "--decoder_padding zeros differs from the replicate of checkpoint",
    )
    fine_tune = run_argv(tiny_zips[0], tmp_path / "new", 1, "--weights", tmp_path / "last.pth", "--decoder_padding",
                         "zeros")  # fmt: skip
    assert_one_clear_line(status_of(fine_tune), "--decoder_padding zeros differs from the replicate of --weights")
    assert status_of(run_argv(tiny_zips[0], tmp_path, 2, *resume))[0] == 0  # left out: the checkpoint's
    assert load_checkpoint(tmp_path / "last.pth")["config"]["decoder_padding"] == "replicate"


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_workers(straight_run, tiny_zips, tmp_path):
    # As a job scheduler does: SIGTERM to the main process and its DataLoader workers at once.
    argv = run_argv(tiny_zips[0], tmp_path, 2, "--workers", 2)
    process = subprocess.Popen(
        [sys.executable, "train.py", *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:
        if "epoch 1 step 1/4" in line:
            os.killpg(process.pid, signal.SIGTERM)
            break
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM in epoch 1" in err
    command = shlex.split(err.split("Resume with: ")[1].strip())
    assert command[:2] == ["python", "train.py"]
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    resumed = torch.load(tmp_path / "last.pth", weights_only=True)
    assert resumed["args"]["decoder_width"] == 0.0625  # from the checkpoint
    assert resumed["args"]["workers"] == 2 and resumed["args"]["log_interval"] == 1  # repeated in the command
    assert_same_weights(resumed["model"], straight_run["model"])


@pytest.mark.slow  # 6 s on Zen 3
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_zips, tmp_path, monkeypatch):
    real_loss, calls = train.DepthLoss.forward, []

    def loss_going_nan(self, pred, target):
        calls.append(1)
        loss = real_loss(self, pred, target)
        return loss * torch.nan if len(calls) == 2 else loss

    train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0)
    good = (tmp_path / "last.pth").read_bytes()
    monkeypatch.setattr(train.DepthLoss, "forward", loss_going_nan)
    with pytest.raises(UserError, match=r"the loss became nan at epoch 2 step 2; the run stopped without saving"):
        train_in_process(tiny_zips[0], tmp_path, 3, "--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert (tmp_path / "last.pth").read_bytes() == good


def test_weights_that_are_not_finite_are_never_saved(tiny_zips, tmp_path, monkeypatch):
    real_step, calls = train.train_step, []

    def step_breaking_a_weight(learner, *args, **kwargs):
        result = real_step(learner, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # the epoch's last step: a finite loss, then an update that overflowed
            with torch.no_grad():
                learner.model.head.bias.fill_(torch.inf)
        return result

    monkeypatch.setattr(train, "train_step", step_breaking_a_weight)
    with pytest.raises(UserError, match="the weights are no longer finite; the run stopped without saving, and no"):
        train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0)
    assert not (tmp_path / "last.pth").exists()


SAVER = """
import torch
from utils import save_checkpoint
states = [{{"model": {{"w": torch.full((4_000_000,), float(i))}}, "config": {{}}, "args": {{}}}} for i in range(2)]
save_checkpoint(states[1], {path!r})
print("ready", flush=True)  # a whole checkpoint exists: every kill from now on can only hit a later save
i = 0
while True:
    save_checkpoint(states[i % 2], {path!r})
    i += 1
"""


@pytest.mark.slow
def test_a_run_killed_while_saving_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.pth"
    rng = np.random.default_rng(0)
    for _ in range(4):
        saver = subprocess.Popen(
            [sys.executable, "-c", SAVER.format(path=str(path))], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert saver.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 0.6))
        saver.kill()  # SIGKILL: no handler runs, mid-write most of the time
        saver.wait()
        weights = load_checkpoint(path)["model"]["w"]
        assert weights.numel() == 4_000_000 and weights.min() == weights.max() in (0.0, 1.0)
    # Killed writes leave hidden temporary files; train.py clears them when it starts.
    from utils import remove_partial_writes

    remove_partial_writes(tmp_path, "*.pth")
    assert sorted(os.listdir(tmp_path)) == ["last.pth"]


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    # Tag the storages as CUDA ones, as torch.save does on a GPU; this machine may have none.
    state = {"model": {"w": torch.ones(3)}, "config": {"decoder_width": 1.0}, "args": {}}
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(state, tmp_path / "gpu.pth")
    with zipfile.ZipFile(tmp_path / "gpu.pth") as archive:
        pickle_name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        assert b"cuda:0" in archive.read(pickle_name)
    loaded = load_checkpoint(tmp_path / "gpu.pth")
    assert loaded["model"]["w"].device.type == "cpu" and torch.equal(loaded["model"]["w"], torch.ones(3))


def test_evaluation_that_fails_half_way_leaves_earlier_results_alone(straight_run, tmp_path, capsys):
    torch.save(straight_run, tmp_path / "model.pth")
    (tmp_path / "metrics.json").write_text('{"earlier": true}')
    count, (height, width) = 8, TINY_SIZE
    with zipfile.ZipFile(tmp_path / "short.zip", "w") as archive:
        write_npy_member(archive, EIGEN_RGB, np.zeros((count, height, width, 3), np.uint8))
        write_npy_member(archive, EIGEN_CROP, np.array([2, 45, 2, 61]))
        # A header that promises 8 depth maps over data for 5: the failure comes after 5 images.
        header = np.lib.format.header_data_from_array_1_0(np.zeros((count, height, width), np.float32))
        with archive.open(EIGEN_DEPTH, "w") as stream:
            np.lib.format.write_array_header_1_0(stream, header)
            stream.write(np.full((5, height, width), 2.0, np.float32).tobytes())
    args = evaluate.get_args_parser().parse_args(
        ["--model", str(tmp_path / "model.pth"), "--data", str(tmp_path / "short.zip"), "--output_dir", str(tmp_path)]
        + ["--batch_size", "2"]
    )
    with pytest.raises(UserError, match="short.zip ends early"):
        evaluate.main(args)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"earlier": True}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model.pth", "short.zip"]


def test_the_cosine_schedule_rises_then_decays_and_constant_stays():
    cosine = Schedule(lr=1e-3, lr_schedule="cosine", warmup_steps=4)
    rates = [learning_rate(cosine, step, 10) for step in range(10)]
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4] == pytest.approx(1e-3) and all(a > b > 0 for a, b in zip(rates[4:], rates[5:]))
    assert learning_rate(cosine, 10, 10) == pytest.approx(0, abs=1e-12)
    constant = Schedule(lr=1e-4, lr_schedule="constant", warmup_steps=4)
    assert {learning_rate(constant, step, 10) for step in range(10)} == {1e-4}

@pytest.mark.slow
def test_a_cosine_run_stopped_mid_epoch_resumes_to_the_same_weights(tiny_zips, tmp_path, monkeypatch):
    schedule = ("--workers", 0, "--lr", 1e-3, "--lr_schedule", "cosine", "--warmup_steps", 3)
    straight = train_in_process(tiny_zips[0], tmp_path / "straight", 2, *schedule)
    real_step = ctrl_c_during_step(6, monkeypatch)
    with pytest.raises(Stopped, match="stopped by SIGINT in epoch 2 after step 2"):
        train_in_process(tiny_zips[0], tmp_path / "stopped", 2, *schedule)
    monkeypatch.setattr(train, "train_step", real_step)
    # The schedule's flags left out: the checkpoint's.
    resumed = train_in_process(
        tiny_zips[0], tmp_path / "stopped", 2, "--workers", 0, "--checkpoint", tmp_path / "stopped" / "last.pth"
    )
    assert (resumed["args"]["lr_schedule"], resumed["args"]["warmup_steps"]) == ("cosine", 3)
    assert_same_weights(resumed["model"], straight["model"])
    # 2 epochs of 4 steps: the last step ran at the rate of global step 7 of 8.
    last_rate = learning_rate(Schedule(lr=1e-3, lr_schedule="cosine", warmup_steps=3), 7, 8)
    assert straight["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last_rate)
    assert resumed["optimizer"]["param_groups"][0]["lr"] == straight["optimizer"]["param_groups"][0]["lr"]

@pytest.mark.slow
def test_the_loss_weights_are_settings_of_the_run(tiny_zips, tmp_path, monkeypatch):
    real_forward, weights_used = train.DepthLoss.forward, set()

    def recording_forward(self, pred, target):
        weights_used.add((self.l1_weight, self.gradient_weight))
        return real_forward(self, pred, target)

    monkeypatch.setattr(train.DepthLoss, "forward", recording_forward)
    weights = ("--l1_weight", 0.5, "--gradient_weight", 0.25)
    first = train_in_process(tiny_zips[0], tmp_path, 1, "--workers", 0, *weights)
    assert (first["args"]["l1_weight"], first["args"]["gradient_weight"]) == (0.5, 0.25)
    assert weights_used == {(0.5, 0.25)}
    # Left out when resuming: the checkpoint's, not the paper's 0.1 and 1.
    weights_used.clear()
    train_in_process(tiny_zips[0], tmp_path, 2, "--workers", 0, "--checkpoint", tmp_path / "last.pth")
    assert weights_used == {(0.5, 0.25)}
    weights_used.clear()
    train_in_process(tiny_zips[0], tmp_path / "default", 1, "--workers", 0)
    assert weights_used == {(0.1, 1.0)}

@pytest.mark.slow
def test_amsgrad_is_a_setting_of_the_run_and_resumes_to_the_same_weights(
    straight_run, tiny_zips, tmp_path, monkeypatch
):
    amsgrad = ("--workers", 0, "--optimizer", "amsgrad")
    straight = train_in_process(tiny_zips[0], tmp_path / "straight", 2, *amsgrad)
    assert straight["optimizer"]["param_groups"][0]["amsgrad"] and "max_exp_avg_sq" in straight["optimizer"]["state"][0]
    assert not torch.equal(straight["model"]["head.weight"], straight_run["model"]["head.weight"])
    real_step = ctrl_c_during_step(6, monkeypatch)
    with pytest.raises(Stopped):
        train_in_process(tiny_zips[0], tmp_path / "stopped", 2, *amsgrad)
    monkeypatch.setattr(train, "train_step", real_step)
    checkpoint = tmp_path / "stopped" / "last.pth"
    with pytest.raises(UserError, match="--optimizer adam differs from the amsgrad of checkpoint"):
        train_in_process(tiny_zips[0], tmp_path / "stopped", 2, "--checkpoint", checkpoint, "--optimizer", "adam")
    resumed = train_in_process(tiny_zips[0], tmp_path / "stopped", 2, "--workers", 0, "--checkpoint", checkpoint)
    assert resumed["args"]["optimizer"] == "amsgrad"
    assert_same_weights(resumed["model"], straight["model"])
