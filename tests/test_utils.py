import errno
import os
import random
import signal

import numpy as np
import pytest
import torch
from helpers import threads_of_a_new_thread

from utils import (
    GracefulStop,
    UserError,
    World,
    atomic_write,
    choose_device,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    seed_everything,
    set_rng_states,
    writable_dir,
)


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "out" / "file.bin"
    with atomic_write(path) as file:
        file.write(b"first")
    assert path.read_bytes() == b"first"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError), atomic_write(path) as file:
        file.write(b"half of the sec")
        raise RuntimeError("killed half-way")
    assert path.read_bytes() == b"first"
    assert os.listdir(path.parent) == ["file.bin"]  # no temporary file left behind


def test_a_failed_write_is_one_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {}, "args": {}}, path)
    before = path.read_bytes()

    def disk_full(file):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        with pytest.raises(UserError, match="last.pth could not be written \\(No space left on device\\)"):
            save_checkpoint({"model": {"w": torch.zeros(2)}, "config": {}, "args": {}}, path)

    def torch_write_fails(state, file):
        file.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 400704 vs 598")

    monkeypatch.setattr(torch, "save", torch_write_fails)
    with pytest.raises(UserError, match="last.pth could not be written \\(torch.save failed: \\[enforce fail"):
        save_checkpoint({"model": {}}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pth"]


def test_output_directories_are_checked_before_the_work(tmp_path):
    assert writable_dir(tmp_path / "a" / "b", "--output_dir").is_dir()
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UserError, match="--checkpoint_dir .*file cannot be created"):
        writable_dir(tmp_path / "file", "--checkpoint_dir")
    with pytest.raises(UserError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoints_round_trip_and_foreign_files_are_refused(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "config": {"decoder_width": 1.0}, "args": {"lr": 1e-4}}
    save_checkpoint(state, tmp_path / "ok.pth")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pth")["model"]["w"], torch.ones(2))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torch.save({"something": 1}, tmp_path / "other.pth")
    for name, needle in (
        ("text.pth", "could not be read"),
        ("other.pth", "not a checkpoint"),
        ("none.pth", "does not exist"),
    ):
        with pytest.raises(UserError, match=needle):
            load_checkpoint(tmp_path / name)


def test_device_choice():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError):
        choose_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            choose_device("cuda")


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    import utils

    assert utils.process_device("cpu", 1, 2) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert utils.process_device("auto", 1, 2) == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA"):
        utils.process_device("cuda", 0, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert utils.process_device("auto", 1, 2) == torch.device("cuda", 1)
    assert utils.process_device("cuda", 0, 2) == torch.device("cuda", 0)
    with pytest.raises(UserError, match="--device cuda:1: under torchrun each process takes its own GPU"):
        utils.process_device("cuda:1", 0, 2)
    with pytest.raises(UserError, match="started 4 processes on this machine, which has 2 GPUs"):
        utils.process_device("cuda", 3, 4)


def test_a_world_of_one_process_needs_no_process_group():
    world = World(torch.device("cpu"))
    assert world.is_main and not world.launched
    assert world.max(3, True, 0) == (3, True, 0) and world.gather([1, 2]) == [1, 2]
    assert torch.equal(world.mean(torch.tensor([1.0, 3.0])), torch.tensor([1.0, 3.0]))
    with pytest.raises(UserError, match="as it was"), world.all_or_none():
        raise UserError("as it was")


def test_graceful_stop_asks_once_then_interrupts(capsys):
    previous = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143
        assert "SIGTERM received: saving a checkpoint at the next step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    seed_everything(1)
    save_checkpoint({"rng": rng_states()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_states(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_precision_auto_follows_the_hardware(monkeypatch):
    import utils

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(utils, "cpu_bf16_speedup", lambda: 2.0)
    assert utils.choose_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(utils, "cpu_bf16_speedup", lambda: 1.1)  # native, but not worth it
    assert utils.choose_precision("auto", cpu) == torch.float32
    monkeypatch.setattr(utils, "cpu_bf16_speedup", lambda: 0.0)  # no native bf16
    assert utils.choose_precision("auto", cpu) == torch.float32
    assert utils.choose_precision("bf16", cpu) == torch.bfloat16  # asked for explicitly: emulated, but honoured
    assert utils.choose_precision("fp16", cpu) == torch.float16
    # A GPU without bf16 (before Ampere) gets fp16, and an explicit bf16 is refused in one sentence.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert utils.choose_precision("auto", cuda) == torch.float16
    with pytest.raises(UserError, match="Tesla V100 has no bf16"):
        utils.choose_precision("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert utils.choose_precision("auto", cuda) == torch.bfloat16
    with pytest.raises(UserError, match="--precision must be one of"):
        utils.choose_precision("fp8", cpu)


def test_the_cpu_bf16_speedup_is_measured_where_the_cpu_has_it(monkeypatch):
    import utils

    def timed(dtype):
        calls.append(dtype)
        return {torch.float32: 0.010, torch.bfloat16: 0.004}[dtype]

    calls = []
    monkeypatch.setattr(utils, "time_convolution", timed)
    utils.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: False)
    assert utils.cpu_bf16_speedup() == 0.0 and calls == []  # nothing to time
    utils.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: True)
    assert utils.cpu_bf16_speedup() == pytest.approx(2.5) and utils.cpu_bf16_speedup() == pytest.approx(2.5)
    assert calls == [torch.float32, torch.bfloat16]  # timed once per process
    utils.cpu_bf16_speedup.cache_clear()


def test_a_convolution_times_in_both_precisions_leaving_the_random_state_alone():
    import utils

    seed_everything(3)
    expected = torch.rand(3)
    seed_everything(3)
    threads = torch.get_num_threads()
    for dtype in (torch.float32, torch.bfloat16):
        assert 0 < utils.time_convolution(dtype, repeats=2) < 5
    assert torch.equal(torch.rand(3), expected)  # a run that chooses its precision after seeding starts the same
    assert torch.get_num_threads() == threads  # timed on one thread, then the run's threads back


def test_autocast_is_off_for_fp32_and_on_otherwise():
    from utils import autocast

    conv, x = torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8)
    with autocast(torch.device("cpu"), torch.float32):
        assert conv(x).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16


def test_a_torch_thread_keeps_its_count_and_leaves_the_others_theirs():
    """A TorchThread's calls run on its count; the calling thread, and threads whose first torch call comes
    after it is made or while it works, keep the process's count (measured in each thread, by torch)."""
    from utils import TorchThread

    default = torch.get_num_threads()
    count = default + 1  # differs from the default on any machine
    worker = TorchThread(count)
    assert worker.run(torch.get_num_threads) == count and torch.get_num_threads() == default
    assert threads_of_a_new_thread() == default
    assert worker.run(threads_of_a_new_thread) == default  # one started while it works
    assert worker.run(lambda: torch.ones(64, 64).matmul(torch.ones(64, 64))[0, 0].item()) == 64.0
    assert worker.run(torch.get_num_threads) == count
