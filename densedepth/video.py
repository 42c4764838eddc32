"""Depth of videos: frames decoded, predicted in batches and encoded as they come, one colour scale.

Three threads share the work so the network never waits on FFmpeg: a decoder puts frames into a
bounded queue, the caller's thread runs them through the network in batches, and an encoder
writes the depth video (H.264, yuv420p, in an .mp4 every browser and player opens) and, on request,
each frame's depth as a 16-bit PNG and .npy in metres. Memory does not grow with the video's length:
the queues hold a few batches at most. The video is written under a temporary name and renamed
when complete; Ctrl-C closes what was done so far as a playable NAME_depth.partial.mp4.
Decoding and encoding are PyAV's (its wheels carry FFmpeg): requirements-video.txt.
"""

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data import encode_picture, encode_test_depth_png
from densedepth.inference import depth_of_pictures
from densedepth.visualize import colorize_depth, side_by_side
from utils import Stopped, UserError, write_bytes

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
INSTALL_HINT = "videos are read and written with PyAV: pip install -r requirements-video.txt"
_END = object()  # the end of a queue's stream


def is_video(path):
    """Whether a path names a video, by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError as err:
        raise UserError(INSTALL_HINT) from err
    return av


@dataclass(frozen=True)
class VideoOptions:
    """What to make of a video: flip averaging, frames per network batch, the colour scale (metres),
    the colour map, whether to put the picture beside its depth, whether to write every frame's
    depth files, and the model's farthest depth (which 16-bit PNG format the frames use)."""

    flip: bool
    batch_size: int
    depth_range_m: tuple
    cmap: str
    side_by_side: bool = False
    frames: bool = False
    max_depth_m: float = 10.0


@dataclass
class VideoReport:
    """What a video gave: the file written, its frames, and how the time went."""

    path: Path
    frames: int
    seconds: float
    network_seconds: float
    partial: bool = False


def open_video(path):
    """(container, its first video stream) of a video file FFmpeg reads; one clear error otherwise."""
    av = _av()
    try:
        container = av.open(str(path))
    except FileNotFoundError as err:
        raise UserError(f"--img {path} does not exist") from err
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"--img {path} is not a video FFmpeg can read ({err})") from err
    if not container.streams.video:
        container.close()
        raise UserError(f"--img {path} has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        container.close()
        raise UserError(f"--img {path}: its video codec is not one FFmpeg can decode")
    stream.thread_type = "AUTO"  # FFmpeg's own decoding threads
    return container, stream


def require_av():
    """Stop with one line saying what to install if PyAV is missing."""
    _av()


def video_frame_count(path):
    """How many frames a video holds: its container's count, else its length times its frame rate."""
    container, stream = open_video(path)
    with container:
        if stream.frames:
            return stream.frames
        rate = float(stream.average_rate or stream.base_rate or 30)
    return round(video_seconds(path) * rate)


def first_frames(path, count):
    """The first `count` frames of a video as (3, H, W) uint8 tensors (fewer if it is shorter)."""
    frames = []
    if count <= 0:
        return frames
    container, stream = open_video(path)
    with container:
        try:
            for frame in container.decode(stream):
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
                if len(frames) == count:
                    break
        except _av().FFmpegError as err:
            raise UserError(f"--img {path}: a frame could not be decoded ({err})") from err
    return frames


def video_seconds(path):
    """The length of a video in seconds (0 if its container does not say)."""
    container, stream = open_video(path)
    with container:
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return (container.duration or 0) / 1e6


class DecodeFailed(Exception):
    """The decoder thread could not go on; its message says why."""


def _decode(path, container, stream, frames, stop):
    """The decoder thread: RGB frames (H, W, 3) uint8 into `frames`, then _END; whatever stops it
    early (FFmpeg's errors, and anything else) goes into the queue first as a DecodeFailed."""
    try:
        for frame in container.decode(stream):
            if stop.is_set():
                break
            frames.put(frame.to_ndarray(format="rgb24"))
    except Exception as err:  # noqa: BLE001 (a thread boundary: the caller's thread reports it)
        frames.put(DecodeFailed(f"a frame could not be decoded ({type(err).__name__}: {err})"))
    finally:
        frames.put(_END)


class DepthVideoWriter:
    """The encoder thread's side: H.264 in yuv420p, at the input's frame rate, under a temporary
    name; the frame files beside it on request."""

    def __init__(self, out_path, rate, size, options, frames_dir):
        av = _av()
        self.out_path, self.options, self.frames_dir = Path(out_path), options, frames_dir
        self.tmp_path = self.out_path.with_name(f".{self.out_path.stem}.{os.getpid()}.tmp.mp4")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp_path), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate)
        height, width = size
        self.stream.width, self.stream.height = width + width % 2, height + height % 2  # yuv420p: even sides
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "18", "preset": "veryfast"}
        self.count = 0

    def write(self, rgb, depth_m):
        """Encode one frame's colour map (beside its picture if asked) and write its depth files if asked."""
        vmin, vmax = self.options.depth_range_m
        picture = colorize_depth(depth_m, vmin, vmax, self.options.cmap)
        if self.options.side_by_side:
            picture = side_by_side(rgb, picture)
        height, width = picture.shape[:2]
        if (height, width) != (self.stream.height, self.stream.width):  # np.pad copies even when it adds nothing
            picture = np.pad(picture, ((0, self.stream.height - height), (0, self.stream.width - width), (0, 0)),
                             "edge")  # fmt: skip
        frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        self.container.mux(self.stream.encode(frame))
        if self.frames_dir is not None:
            self._write_frame_files(depth_m)
        self.count += 1

    def _write_frame_files(self, depth_m):
        stem = self.frames_dir / f"{self.count:06d}"
        if self.options.max_depth_m * 1000 <= np.iinfo(np.uint16).max:
            write_bytes(stem.with_name(stem.name + "_depth_mm.png"), encode_test_depth_png(depth_m))
        else:  # past 65.5 m: KITTI's metres x 256
            value = np.clip(np.rint(depth_m * 256), 0, 65535).astype(np.uint16)
            write_bytes(stem.with_name(stem.name + "_depth_256.png"), encode_picture(value, "PNG"))
        with open(stem.with_name(stem.name + "_depth_m.npy"), "wb") as file:
            np.save(file, depth_m.astype(np.float32))

    def close(self, complete):
        """Flush the encoder and close the file: renamed to the final name if complete, else to
        NAME.partial.mp4 (playable, the frames so far); nothing if no frame was written. Returns the path."""
        if self.count:
            self.container.mux(self.stream.encode(None))
        self.container.close()
        if not self.count:
            self.tmp_path.unlink(missing_ok=True)
            return None
        target = self.out_path if complete else self.out_path.with_suffix(".partial.mp4")
        os.replace(self.tmp_path, target)
        return target

    def discard(self):
        """Close and remove the temporary file after an error."""
        try:
            self.container.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


def _encode(writer, results, errors):
    """The encoder thread: (pictures, depths) batches from `results` until _END."""
    try:
        while (item := results.get()) is not _END:
            for rgb, depth_m in zip(*item):
                writer.write(rgb, depth_m)
    except Exception as err:  # noqa: BLE001 (a thread boundary: the caller's thread reports it)
        errors.append(err)
        while results.get() is not _END:  # keep the network's side from blocking on a full queue
            pass


def depth_of_video(model, path, out_path, input_size, device, dtype, options, frames_dir=None):
    """Write the depth video of `path` to out_path (and frame files into frames_dir): a VideoReport.

    The network sees batches of options.batch_size frames, at the size depth_of_pictures gives a
    picture of the video's size; the colour scale is options.depth_range_m for every frame. If the
    video cannot be decoded to its end, or the run is interrupted, the frames done so far are kept
    as NAME.partial.mp4 and the error (or Stopped) says so; the threads are joined and the video
    closed on every path.
    """
    container, stream = open_video(path)
    try:
        return _depth_of_open_video(model, path, container, stream, out_path, input_size, device, dtype, options,
                                    frames_dir)  # fmt: skip
    finally:
        container.close()


def _depth_of_open_video(model, path, container, stream, out_path, input_size, device, dtype, options, frames_dir):
    rate = stream.average_rate or stream.base_rate or 30
    size = (stream.codec_context.height, stream.codec_context.width)
    if options.side_by_side:
        size = (size[0], 2 * size[1] + 4)
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    writer = DepthVideoWriter(out_path, rate, size, options, frames_dir)
    frames, results = queue.Queue(maxsize=2 * options.batch_size), queue.Queue(maxsize=2)
    stop, errors = threading.Event(), []
    decoder = threading.Thread(target=_decode, args=(path, container, stream, frames, stop), daemon=True)
    encoder = threading.Thread(target=_encode, args=(writer, results, errors), daemon=True)
    decoder.start()
    encoder.start()
    bar = tqdm(total=stream.frames or None, unit="frame", desc=Path(path).name, leave=False)
    started, network_seconds, ended_by = time.perf_counter(), 0.0, None
    try:
        for batch in _batches(frames, options.batch_size):
            ticked = time.perf_counter()
            depth_m = depth_of_pictures(model, torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2), input_size,
                                        device, dtype, options.flip)  # fmt: skip
            network_seconds += time.perf_counter() - ticked
            results.put((batch, depth_m))
            bar.update(len(batch))
            if errors:
                break
    except KeyboardInterrupt:
        ended_by = "interrupted"
    except DecodeFailed as err:
        ended_by = f"--img {path}: {err}"
    except BaseException:
        _finish_threads(stop, frames, results, decoder, encoder)
        writer.discard()
        raise
    finally:
        bar.close()
    _finish_threads(stop, frames, results, decoder, encoder)
    if errors:
        writer.discard()
        raise UserError(f"{out_path} could not be written ({errors[0]})")
    written = writer.close(complete=ended_by is None)
    if written is None and ended_by is None:
        raise UserError(f"--img {path} has no video frames")
    report = VideoReport(written, writer.count, time.perf_counter() - started, network_seconds, ended_by is not None)
    if ended_by is not None:
        done = f"the {writer.count} frames done so far are in {written}" if written else "no frame was done"
        if ended_by == "interrupted":
            raise Stopped(f"interrupted: {done}", 130)
        raise UserError(f"{ended_by}; {done}")
    return report


def _finish_threads(stop, frames, results, decoder, encoder):
    """Stop the decoder and let the encoder write what it was given; both threads joined."""
    stop.set()
    results.put(_END)
    while decoder.is_alive():  # a decoder blocked on a full queue sees the stop once there is room
        _drain(frames)
        decoder.join(timeout=0.05)
    encoder.join()


def _batches(frames, batch_size):
    """Lists of up to batch_size frames from the decoder's queue; its DecodeFailed is raised here, after
    the frames before it."""
    batch = []
    while (item := frames.get()) is not _END:
        if isinstance(item, DecodeFailed):
            if batch:
                yield batch
            raise item
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _drain(frames):
    """Empty the decoder's queue so a decoder blocked on it can see the stop and end."""
    while True:
        try:
            frames.get_nowait()
        except queue.Empty:
            return
