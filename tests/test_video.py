"""Depth of videos: the clip written (frames, size, rate, codec), its frames' depth equal to the depth
of the same frames as pictures, Ctrl-C leaving a playable partial file, and bad input."""

import sys

import numpy as np
import pytest
from helpers import assert_one_clear_line, decoded_frames, run_script, write_clip
from PIL import Image

import evaluate
from densedepth import video

av = pytest.importorskip("av", reason="PyAV is in requirements-video.txt, which scripts/test.sh installs")

SIZE = (64, 96)  # height, width
RATE = 12
COUNT = 14


def test_a_video_gives_a_depth_video_and_the_depth_of_each_frame(varied_checkpoint, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    argv = ["--model", varied_checkpoint, "--img", clip, "--output_dir", out, "--precision", "fp32"]
    status, stdout, err = run_script(evaluate, [*argv, "--frames", "--batch_size", 4], capsys)
    assert status == 0, err
    assert f"{COUNT} frames" in stdout
    (codec, pix_fmt, width, height, rate), frames = decoded_frames(out / "clip_depth.mp4")
    assert (codec, pix_fmt, width, height, rate) == ("h264", "yuv420p", SIZE[1], SIZE[0], RATE)
    assert len(frames) == COUNT
    assert sorted(path.name for path in (out / "clip_frames").iterdir())[:2] == [
        "000000_depth_m.npy",
        "000000_depth_mm.png",
    ]
    assert len(list((out / "clip_frames").glob("*_depth_m.npy"))) == COUNT
    assert not list(out.glob(".*"))  # no temporary file left

    # frame k as a picture: the same depth as frame k of the video (its batch of 4 against a batch of 1)
    _, source_frames = decoded_frames(clip)
    for k in (0, 9):
        Image.fromarray(source_frames[k]).save(tmp_path / f"frame{k}.png")
        status, _, err = run_script(evaluate, ["--model", varied_checkpoint, "--img", tmp_path / f"frame{k}.png",
                                               "--output_dir", tmp_path / "pictures", "--precision", "fp32"], capsys)  # fmt: skip
        assert status == 0, err
        picture_m = np.load(tmp_path / "pictures" / f"frame{k}_depth_m.npy")
        frame_m = np.load(out / "clip_frames" / f"{k:06d}_depth_m.npy")
        np.testing.assert_allclose(frame_m, picture_m, atol=1e-5)
        millimetres = np.asarray(Image.open(out / "clip_frames" / f"{k:06d}_depth_mm.png"), dtype=np.float64)
        assert np.abs(millimetres - frame_m * 1000).max() <= 0.5 + 1e-3

    status, _, err = run_script(evaluate, [*argv, "--side_by_side", "--output_dir", tmp_path / "sbs"], capsys)
    assert status == 0, err
    (_, _, width, height, _), frames = decoded_frames(tmp_path / "sbs" / "clip_depth.mp4")
    assert (width, height, len(frames)) == (2 * SIZE[1] + 4, SIZE[0], COUNT)


def test_ctrl_c_leaves_the_frames_done_as_a_playable_partial_file(varied_checkpoint, tmp_path, capsys, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4")
    real, calls = video.depth_of_pictures, []

    def interrupted_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "depth_of_pictures", interrupted_on_the_third_batch)
    argv = ["--model", varied_checkpoint, "--img", clip, "--output_dir", tmp_path / "out", "--batch_size", 4]
    status, _, err = run_script(evaluate, argv, capsys)
    assert status == 130
    partial = tmp_path / "out" / "clip_depth.partial.mp4"
    assert f"the 8 frames done so far are in {partial}" in err
    assert not (tmp_path / "out" / "clip_depth.mp4").exists() and not list((tmp_path / "out").glob(".*"))
    _, frames = decoded_frames(partial)
    assert len(frames) == 8


class FailingContainer:
    """A PyAV container whose decoding stops with an error FFmpeg never raises, after `good` frames."""

    def __init__(self, container, good):
        self.container, self.good, self.closed = container, good, False

    def decode(self, stream):
        for index, frame in enumerate(self.container.decode(stream)):
            if index == self.good:
                raise RuntimeError("the decoder broke")
            yield frame

    def close(self):
        self.closed = True
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_a_decoding_failure_keeps_the_frames_done_and_fails(varied_checkpoint, tmp_path, capsys, monkeypatch):
    """Any error of the decoder (not only FFmpeg's) ends the run with one line and a non-zero status; the
    frames done are kept as a playable partial file; the decoder thread ends and the video is closed."""
    import threading

    clip = write_clip(tmp_path / "clip.mp4")
    real_open, opened = video.open_video, []

    def open_failing(path):
        container, stream = real_open(path)
        opened.append(FailingContainer(container, good=9))
        return opened[-1], stream

    monkeypatch.setattr(video, "open_video", open_failing)
    threads = threading.active_count()
    argv = ["--model", varied_checkpoint, "--img", clip, "--output_dir", tmp_path / "out", "--batch_size", 4]
    result = run_script(evaluate, argv, capsys)
    partial = tmp_path / "out" / "clip_depth.partial.mp4"
    assert_one_clear_line(result, "a frame could not be decoded (RuntimeError: the decoder broke)",
                          f"the 9 frames done so far are in {partial}")  # fmt: skip
    assert not (tmp_path / "out" / "clip_depth.mp4").exists() and not list((tmp_path / "out").glob(".*"))
    assert len(decoded_frames(partial)[1]) == 9
    assert all(container.closed for container in opened) and threading.active_count() == threads


def test_bad_videos_are_one_line_each(varied_checkpoint, tmp_path, capsys):
    def run(path):
        argv = ["--model", varied_checkpoint, "--img", path, "--output_dir", tmp_path / "out"]
        return run_script(evaluate, argv, capsys)

    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 50)
    assert_one_clear_line(run(tmp_path / "notes.mp4"), "notes.mp4", "is not a video FFmpeg can read")
    with av.open(str(tmp_path / "sound.mp4"), "w") as container:  # audio only
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert_one_clear_line(run(tmp_path / "sound.mp4"), "sound.mp4", "has no video stream")
    write_clip(tmp_path / "empty.mp4", count=0)  # FFmpeg sees a track without samples as no stream
    assert_one_clear_line(run(tmp_path / "empty.mp4"), "empty.mp4", "has no video stream")
    broken = tmp_path / "broken.mp4"
    data = bytearray(write_clip(tmp_path / "whole.mp4").read_bytes())
    middle = len(data) // 2
    data[48:middle] = bytes(middle - 48)  # the coded frames zeroed: nothing decodes
    broken.write_bytes(data)
    result = run(broken)
    assert_one_clear_line(result, "broken.mp4")
    assert_one_clear_line(run(tmp_path / "missing.mp4"), "missing.mp4", "does not exist")
    assert not (tmp_path / "out").exists() or not any(path.suffix == ".mp4" for path in (tmp_path / "out").iterdir())


def test_without_pyav_a_video_says_what_to_install(tmp_path, capsys, monkeypatch):
    write_clip(tmp_path / "clip.mp4", count=2)
    monkeypatch.setitem(sys.modules, "av", None)
    result = run_script(evaluate, ["--model", "x.pth", "--img", tmp_path / "clip.mp4"], capsys)
    assert_one_clear_line(result, "pip install -r requirements-video.txt")


def test_odd_sized_frames_are_padded_with_their_edge(tmp_path):
    """yuv420p needs even sides: a 63x95 frame is written at 64x96, its last row and column repeated
    (np.pad's 'edge': not black, not the row or column before), where the depth climbs steeply towards
    both edges (yuv420p shares chroma between columns 94 and 95: it is the brightness that tells); the
    64x96 frames of every other test are written as they are."""
    options = video.VideoOptions(flip=False, batch_size=1, depth_range_m=(0.1, 10.0), cmap="plasma")
    writer = video.DepthVideoWriter(tmp_path / "odd.mp4", 12, (63, 95), options, None)
    ramp = lambda count: np.clip(np.arange(count) - (count - 5), 0, None) * 1.0  # 0, then +1 m each of 4 steps
    depth_m = (1 + ramp(63)[:, None] + ramp(95)[None, :]).astype(np.float32)  # 1 to 9 m
    for _ in range(3):
        writer.write(np.zeros((63, 95, 3), np.uint8), depth_m)
    writer.close(complete=True)
    (_, _, width, height, _), frames = decoded_frames(tmp_path / "odd.mp4")
    assert (width, height, len(frames)) == (96, 64, 3)
    frame = frames[0].astype(np.int16)
    repeated = max(np.abs(frame[:, 95] - frame[:, 94]).mean(), np.abs(frame[63] - frame[62]).mean())
    one_step = min(np.abs(frame[:, 94] - frame[:, 93]).mean(), np.abs(frame[62] - frame[61]).mean())
    assert repeated < 8 and one_step > 16, (repeated, one_step)  # measured: 2.9 and 32 (reflect: 21, black: 105)
