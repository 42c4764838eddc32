"""What several test files share: the project's root, a tiny training command line, running a script
in-process as its command line does, the one-clear-line check of bad input, a rewritten zip, small clips."""

import re
import threading
import zipfile
from pathlib import Path

import numpy as np

from data import write_member

ROOT = Path(__file__).resolve().parent.parent
TINY_SIZE = (48, 64)  # height, width
PROGRESS_BAR = re.compile(r"\d+/\d+ \[[\d:?]+<")


def tiny_train_argv(data, checkpoint_dir, *extra, epochs=1, batch_size=4):
    """train.py's flags (strings) for a tiny CPU run at 64x64; a new run (no --checkpoint among
    `extra`) gets a narrow decoder, a resumed one the checkpoint's. Later flags win."""
    argv = ["--data_dir", data, "--checkpoint_dir", checkpoint_dir, "--epochs", epochs, "--batch_size", batch_size]
    argv += ["--input_size", 64, 64, "--no_pretrained"]
    argv += [] if "--checkpoint" in extra else ["--decoder_width", 0.0625]
    return [str(arg) for arg in argv + list(extra)]


def run_script(script, argv, capsys):
    """(exit status, stdout, stderr) of train.py or evaluate.py (the module) run in-process with `argv`,
    through run_main as on the command line."""
    from utils import run_main

    args = script.get_args_parser().parse_args([str(arg) for arg in argv])
    try:
        run_main(script.main, args)
        status = 0
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_clear_line(result, *needles):
    """Exit status 2 and, besides progress bars, one line on stderr holding all the needles."""
    status, _, err = result
    assert status == 2, err
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def rewrite_zip(source, target, replace=None, drop=()):
    """A copy of zip `source` with some members replaced (name -> bytes) or left out."""
    replace = replace or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in drop:
                write_member(new, name, replace.get(name, old.read(name)))
        for name in replace.keys() - set(old.namelist()):
            write_member(new, name, replace[name])
    return target


def write_clip(path, count=14, rate=12, size=(64, 96), seed=0):
    """A small H.264 clip: a red box sliding over a two-tone wall, with noise."""
    import av

    rng = np.random.default_rng(seed)
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()  # the header, even with no frame
        for index in range(count):
            picture = np.full((height, width, 3), 90, dtype=np.uint8)
            picture[:, : width // 2] = 200
            picture[10:40, 5 + 3 * index : 35 + 3 * index] = (230, 30, 30)
            picture = np.clip(picture + rng.integers(0, 25, picture.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decoded_frames(path):
    """((codec, pixel format, width, height, frame rate), [RGB frames]) of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height,
                stream.average_rate)  # fmt: skip
        return info, [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def threads_of_a_new_thread():
    """torch's thread count as a thread started now sees it at its first torch call."""
    import torch

    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]
