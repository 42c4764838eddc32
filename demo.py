"""A live demo in the browser: a picture or a webcam snapshot in, its depth and a 3-D point cloud out;
the webcam streaming live, its depth beside it as fast as the model goes; a video in, its depth video out.

    pip install -r requirements-demo.txt
    python demo.py                                  # the quick start's model
    python demo.py --model nyu.h5                   # the authors' NYU model (or any checkpoint, .onnx)

It serves a local page (Gradio) and prints its address; nothing in it is fetched from the
internet. Drop or pick a picture, or take one with the webcam: the page shows the picture and
its depth side by side with a colour bar in metres, the scene as coloured 3-D points to turn
with the mouse (the NYU camera's intrinsics scaled to the picture, editable), and the files
evaluate.py --img writes for it: the 16-bit PNG in millimetres, the .npy in metres and the .ply.
The Live tab streams the webcam continuously and shows its depth beside the live picture (no mirror
averaging, one colour scale: the model's range), with the frames per second it achieves; with the
light model (docs/models.md) that is live on a laptop's CPU. The Video tab takes a clip (up to
MAX_VIDEO_MB and MAX_VIDEO_SECONDS, needs requirements-video.txt) and plays its depth beside it, as
evaluate.py --img clip.mp4 --side_by_side writes it, to download. Bad input (a file that is not a
picture, a clip FFmpeg cannot read) is answered with its reason in one line, in the page and the API.
Prediction runs with evaluate.py's device and precision choice (bf16 on a CPU where it measures faster,
int8 on one with AMX where that measures faster still).
"""

import argparse
import collections
import io
import json
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data import NYU_INTRINSICS, scaled_intrinsics
from densedepth.deploy import live_network, onnxruntime_may_run, prediction_model, threads_words
from densedepth.inference import PictureOptions, depth_of_pictures, load_model, picture_outputs
from densedepth.visualize import backproject, colorize_depth
from utils import (
    DEVICE_HELP,
    PREDICTION_PRECISIONS,
    TorchThread,
    UserError,
    choose_device,
    choose_precision,
    run_main,
)

QUICKSTART_MODEL = Path(__file__).resolve().parent / "runs/quickstart/checkpoints/last.pth"
MAX_PIXELS = 40_000_000  # a bigger picture is refused in the page, not fed to the network
MAX_CLOUD_POINTS = 150_000  # the viewer's points; the .ply keeps every pixel
MAX_VIDEO_MB, MAX_VIDEO_SECONDS = 100, 60  # a longer or bigger clip is refused in the page
LIVE_EVERY_S = 0.01  # how often the page looks for a new webcam frame to send; it sends none while one is on its way
# What the page asks the camera for: 320x240, the light model's trained size, rather than whatever the
# camera's largest is (a 1920x1440 frame costs more to send, decode and colour than to predict).
LIVE_CAMERA = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # --host values that serve this machine alone


def get_args_parser():
    parser = argparse.ArgumentParser(description="Depth of pictures in the browser (a local Gradio page)")
    parser.add_argument(
        "--model",
        help="a checkpoint, the authors' nyu.h5 / kitti.h5 or an exported .onnx (default: the quick start's "
        "runs/quickstart/checkpoints/last.pth)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--precision", choices=PREDICTION_PRECISIONS, default="auto", help="as evaluate.py's --precision"
    )
    parser.add_argument(
        "--calibration",
        help="pictures --precision int8 is calibrated on: an Eigen test zip or a folder of pictures like yours "
        "(needed for int8 here: the demo's pictures are not known when it starts; 'auto' never picks int8 in the demo)",
    )
    parser.add_argument("--no_flip", dest="flip", action="store_false", help="skip the mirror-image averaging")
    return parser


def model_path(args):
    if args.model:
        return args.model
    if QUICKSTART_MODEL.is_file():
        return str(QUICKSTART_MODEL)
    raise UserError(
        "no --model given, and the quick start's model (runs/quickstart/checkpoints/last.pth) is not there: run "
        "bash scripts/quickstart.sh (about 6 minutes), or give --model nyu.h5 (the authors' model, see the "
        "README's Pre-trained models)"
    )


class DepthDemo:
    """The page's work: one picture in, the side-by-side picture, the 3-D points and the files out."""

    def __init__(self, model, input_size, device, dtype, flip, out_dir, live_stream):
        self.model, self.input_size, self.device, self.dtype, self.flip = model, input_size, device, dtype, flip
        self.out_dir = Path(out_dir)
        self.live_stream, self.live_rate = live_stream, RateMeter()

    def predict(self, picture, fx=None, fy=None, cx=None, cy=None):
        """picture: (H, W, 3) uint8 RGB (Gradio's numpy image) -> (side by side, .glb, files, summary)."""
        picture = check_picture(picture)
        started = time.perf_counter()
        image = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None]
        depth_m = depth_of_pictures(self.model, image, self.input_size, self.device, self.dtype, self.flip)[0]
        seconds = time.perf_counter() - started
        intrinsics = camera(picture.shape[:2], fx, fy, cx, cy)
        options = PictureOptions(colorbar=True, side_by_side=True, ply=True, intrinsics=intrinsics)
        files = picture_outputs(picture, depth_m, options, self.model.depth_range.max_m)
        folder = Path(tempfile.mkdtemp(dir=self.out_dir))
        written = []
        for suffix in ("_depth_mm.png", "_depth_256.png", "_depth_m.npy", ".ply"):
            if suffix in files:
                (folder / f"picture{suffix}").write_bytes(files[suffix])
                written.append(str(folder / f"picture{suffix}"))
        cloud = folder / "points.glb"
        cloud.write_bytes(point_cloud_glb(depth_m, picture, intrinsics))
        side = np.asarray(decode_png(files["_side_by_side.png"]))
        summary = (
            f"{picture.shape[1]}x{picture.shape[0]} picture: depth {depth_m.min():.2f} to {depth_m.max():.2f} m, "
            f"predicted in {seconds:.2f} s"
        )
        return side, str(cloud), written, summary

    def live(self, frame):
        """One webcam frame (H, W, 3) uint8 -> (its depth in colour, the rate achieved so far), predicted by
        the LiveStream. The frame is first scaled to fit the model's trained size, which the network sees
        anyway: the depth comes back at that size, cheap to colour and send, and the page draws it as large
        as the webcam beside it."""
        if frame is None:
            return None, "Waiting for the camera."
        picture = fit_within(check_picture(frame), max(self.input_size))
        image = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None]
        depth_m, engine = self.live_stream.predict(image)
        low, high = self.model.depth_range.min_m, self.model.depth_range.max_m
        rate = self.live_rate.tick()
        return colorize_depth(depth_m, low, high), (
            f"Live: **{rate:.1f} frames/s** (over the last {self.live_rate.count - 1} frames), the camera's "
            f"{frame.shape[1]}x{frame.shape[0]} predicted at {picture.shape[1]}x{picture.shape[0]} in {engine}; "
            f"colours {low:g} to {high:g} m, near = dark."
        )

    def predict_video(self, path):
        """A video file (Gradio's upload path) -> (the depth video beside the clip, summary)."""
        import gradio as gr

        from densedepth.video import VideoOptions, depth_of_video, video_seconds
        from utils import Stopped

        path = check_video(path)
        try:
            seconds = video_seconds(path)
            if seconds > MAX_VIDEO_SECONDS:
                raise gr.Error(f"The clip is {seconds:.0f} s long, over {MAX_VIDEO_SECONDS} s: cut it first.")
            depth_range = (self.model.depth_range.min_m, self.model.depth_range.max_m)
            options = VideoOptions(self.flip, 4, depth_range, "plasma", side_by_side=True)
            out = Path(tempfile.mkdtemp(dir=self.out_dir)) / f"{Path(path).stem}_depth.mp4"
            report = depth_of_video(self.model, path, out, self.input_size, self.device, self.dtype, options)
        except (UserError, Stopped) as err:
            raise gr.Error(str(err).removeprefix("--img ").replace(str(path), Path(path).name)) from err
        summary = (f"{report.frames} frames in {report.seconds:.1f} s ({report.frames / report.seconds:.1f} "
                   f"frames/s); colours {depth_range[0]:g} to {depth_range[1]:g} m")  # fmt: skip
        return str(report.path), summary


class LiveStream:
    """The Live tab's model, run in a thread of its own on `threads` of torch's: one core fewer than the
    machine's where the browser showing the stream runs beside it (live_threads). What runs it is chosen
    in that thread at the stream's first frame (densedepth.deploy.live_network: onnxruntime where it pays,
    under try_onnxruntime; 2 to 5 s the first time for the light model, then cached), so that a demo whose
    Live tab is not used neither exports nor times anything."""

    def __init__(self, model, input_size, device, dtype, threads, try_onnxruntime):
        self.model, self.input_size, self.device, self.dtype = model, input_size, device, dtype
        self.try_onnxruntime, self.thread, self.chosen = try_onnxruntime, TorchThread(threads), None

    def choose(self):
        """(network, engine): what runs the stream, said in one line; the model itself if choosing fails."""
        try:
            network, engine, why = live_network(self.model, self.input_size, self.device, self.try_onnxruntime)
        except Exception as err:  # noqa: BLE001 (the stream still runs, as the other tabs do)
            network, engine = self.model, f"PyTorch on {threads_words(torch.get_num_threads())}"
            why = f"onnxruntime not tried: {str(err).splitlines()[0][:120]}"
        print(f"live: {engine}{f'; {why}' if why else ''}", flush=True)
        return network, engine

    def predict(self, image):
        """(depth_m, engine): the depth of a (1, 3, H, W) uint8 frame, predicted in the stream's thread, and
        what predicted it. Gradio sends one frame at a time (concurrency_limit=1)."""
        if self.chosen is None:
            self.chosen = self.thread.run(self.choose)
        network, engine = self.chosen
        depth = self.thread.run(depth_of_pictures, network, image, self.input_size, self.device, self.dtype,
                                flip=False)  # fmt: skip
        return depth[0], engine


def live_threads(host):
    """The Live tab's torch threads: one core fewer than the machine's where the demo serves this machine
    alone, as its browser then runs here too (on a 2-core Zen 3 the two fought for both cores: docs/demo.md);
    all of them where it serves others."""
    cores = torch.get_num_threads()
    return max(1, cores - 1) if host in LOOPBACK_HOSTS else cores


class RateMeter:
    """Frames per second over the last `window` frames (a gap of over `reset_s` starts it again)."""

    def __init__(self, window=30, reset_s=2.0):
        self.times = collections.deque(maxlen=window)
        self.reset_s = reset_s
        self.lock = threading.Lock()

    @property
    def count(self):
        return len(self.times)

    def tick(self):
        """Count a frame done now; the rate so far (0 until two frames)."""
        with self.lock:
            now = time.perf_counter()
            if self.times and now - self.times[-1] > self.reset_s:
                self.times.clear()
            self.times.append(now)
            span = self.times[-1] - self.times[0]
            return (len(self.times) - 1) / span if span > 0 else 0.0


def check_video(path):
    """The uploaded clip's path, or a readable error for the page."""
    import gradio as gr

    if not path:
        raise gr.Error("No video: drop a clip here or pick a file.")
    size_mb = Path(path).stat().st_size / 2**20
    if size_mb > MAX_VIDEO_MB:
        raise gr.Error(f"The clip is {size_mb:.0f} MB, over {MAX_VIDEO_MB} MB: cut or shrink it first.")
    return path


def check_picture(picture):
    """The picture as (H, W, 3) uint8, or a readable error for the page."""
    import gradio as gr

    if picture is None:
        raise gr.Error("No picture: drop one here, pick a file, or take one with the webcam.")
    picture = np.asarray(picture)
    if picture.size == 0 or picture.ndim != 3:
        raise gr.Error("The picture is empty (a webcam frame that did not arrive?): try again.")
    if picture.shape[0] * picture.shape[1] > MAX_PIXELS:
        raise gr.Error(
            f"The picture is {picture.shape[1]}x{picture.shape[0]}, over {MAX_PIXELS // 1_000_000} megapixels: "
            "scale it down first."
        )
    return picture[..., :3]  # Gradio hands over RGB uint8 (image_mode "RGB"), whatever the file was


def fit_within(picture, max_side):
    """An (H, W, 3) uint8 picture scaled down (keeping its shape) so that its longer side is at most max_side."""
    scale = max_side / max(picture.shape[:2])
    if scale >= 1:
        return picture
    size = (round(picture.shape[1] * scale), round(picture.shape[0] * scale))
    return np.asarray(Image.fromarray(picture).resize(size, Image.BILINEAR, reducing_gap=2.0))


def camera(size, fx, fy, cx, cy):
    """(fx, fy, cx, cy) from the page's fields; those left empty (or 0, what an empty field sends)
    are the NYU camera's, scaled to the picture."""
    default = scaled_intrinsics(*size)
    given = [fx, fy, cx, cy]
    intrinsics = tuple(float(value) if value else default[i] for i, value in enumerate(given))
    if intrinsics[0] < 0 or intrinsics[1] < 0:
        import gradio as gr

        raise gr.Error("fx and fy must be positive (pixels).")
    return intrinsics


def decode_png(data):
    with Image.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB").copy()


def point_cloud_glb(depth_m, picture, intrinsics, max_points=MAX_CLOUD_POINTS):
    """The back-projected pixels as a binary glTF of POINTS with vertex colours, every n-th pixel so
    that at most max_points remain; y and z flipped from the camera's frame to glTF's (y up, -z ahead)."""
    step = max(1, int(np.ceil(np.sqrt(depth_m.size / max_points))))
    depth = depth_m[::step, ::step]
    fx, fy, cx, cy = intrinsics
    points = backproject(depth, (fx / step, fy / step, cx / step, cy / step)).astype(np.float32)
    points *= np.array([1, -1, -1], dtype=np.float32)
    colours = picture[::step, ::step].reshape(-1, 3).astype(np.uint8)
    colours = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    positions, rgba = points.tobytes(), colours.tobytes()
    gltf = {
        "asset": {"version": "2.0", "generator": "DenseDepth demo.py"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": 0}]}],
        "buffers": [{"byteLength": len(positions) + len(rgba)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(positions), "target": 34962},
            {"buffer": 0, "byteOffset": len(positions), "byteLength": len(rgba), "target": 34962},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(points), "type": "VEC3",
             "min": points.min(axis=0).tolist(), "max": points.max(axis=0).tolist()},
            {"bufferView": 1, "componentType": 5121, "normalized": True, "count": len(points), "type": "VEC4"},
        ],
    }  # fmt: skip
    header = json.dumps(gltf, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 4)
    body = positions + rgba
    body += b"\0" * (-len(body) % 4)
    chunks = struct.pack("<II", len(header), 0x4E4F534A) + header + struct.pack("<II", len(body), 0x004E4942) + body
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def build_app(demo, title):
    """The Gradio page around a DepthDemo."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as err:
        raise UserError("the demo needs gradio, which is not installed: pip install -r requirements-demo.txt") from err

    # System fonts: the default theme would fetch its fonts from the internet.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    fx0, fy0, cx0, cy0 = NYU_INTRINSICS
    with gr.Blocks(title="DenseDepth demo") as app:
        gr.Markdown(f"## DenseDepth: depth from one picture\n{title}")
        with gr.Tab("Picture"):
            picture_tab(gr, demo, fx0, fy0, cx0, cy0)
        with gr.Tab("Live"):
            live_tab(gr, demo)
        with gr.Tab("Video"):
            video_tab(gr, demo)
    return app, theme


def picture_input(gr, **kwargs):
    """gr.Image whose bad files (not a picture, damaged) are answered with the reason in one line, where
    Gradio's own decoding would answer a bare 'Error'. (Its preprocess is wrapped on the instance: a
    subclass of a Gradio component makes Gradio write a .pyi stub beside this file.)"""
    picture = gr.Image(**kwargs)
    decode = picture.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            name = Path(getattr(payload, "orig_name", None) or "the file").name
            reason = str(err).split(" '/")[0].split(" '")[0] or type(err).__name__
            raise gr.Error(f"{name} is not a picture that can be read ({reason}).", print_exception=False) from err

    picture.preprocess = preprocess
    return picture


def picture_tab(gr, demo, fx0, fy0, cx0, cy0):
    """The picture tab: a picture in; depth side by side, 3-D points and files out."""
    with gr.Row():
        picture = picture_input(gr, sources=["upload", "webcam", "clipboard"], type="numpy", label="Picture")
        with gr.Column():
            summary = gr.Markdown("Drop a picture, pick one, or take one with the webcam.")
            gr.Markdown(
                f"Camera for the 3-D points, in the picture's pixels (empty: NYU Depth v2's, fx {fx0:.1f} "
                f"fy {fy0:.1f} cx {cx0:.1f} cy {cy0:.1f} at 640x480, scaled to the picture)"
            )
            with gr.Row():
                fields = [gr.Number(label=name, value=None) for name in ("fx", "fy", "cx", "cy")]
            files = gr.File(label="Downloads: 16-bit PNG (mm), .npy (m), .ply", file_count="multiple")
    depth = gr.Image(label="Picture | depth (m)", type="numpy", format="png", elem_id="depth")
    cloud = gr.Model3D(label="3-D points (drag to turn, scroll to zoom)", display_mode="point_cloud", height=480)
    picture.change(demo.predict, [picture, *fields], [depth, cloud, files, summary], api_name="predict")


def live_tab(gr, demo):
    """The live tab: the webcam streamed continuously, each frame beside its depth, and the rate achieved."""
    gr.Markdown(
        "The webcam, live: press record, allow the camera, and its depth appears beside it as fast as the model "
        "goes (the light model, `--encoder mobilenet_v3_large`, keeps up on a laptop's CPU)."
    )
    with gr.Row():
        camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="webcam",
                          webcam_options=gr.WebcamOptions(mirror=False, constraints=LIVE_CAMERA))  # fmt: skip
        shown = gr.Image(label="Depth (m)", type="numpy", format="jpeg", streaming=True, elem_id="live_depth")
    rate = gr.Markdown("Press the camera's record button to start.", elem_id="live_rate")
    # No progress overlay: redrawn at each frame, it cost the browser 2 frames/s of 17 (2-core Zen 3).
    camera.stream(demo.live, [camera], [shown, rate], stream_every=LIVE_EVERY_S, concurrency_limit=1,
                  show_progress="hidden", api_name="live")  # fmt: skip


def video_tab(gr, demo):
    """The video tab: a clip in; its depth beside it, to play and download."""
    gr.Markdown(
        f"A clip of up to {MAX_VIDEO_SECONDS} s and {MAX_VIDEO_MB} MB (mp4, mov, mkv, avi, webm): its depth is "
        "drawn beside it in one colour scale, the model's depth range."
    )
    with gr.Row():
        clip = gr.Video(sources=["upload"], label="Video")
        with gr.Column():
            summary = gr.Markdown("Drop a clip or pick one.")
            depth = gr.Video(label="Video | depth (play, or download with the arrow)", elem_id="depth_video")
    clip.change(demo.predict_video, [clip], [depth, summary], api_name="predict_video")


def shown_path(path):
    """The model's path as the page shows it: relative to where the demo runs, or the file's name
    alone, so a screenshot does not carry the machine's folders."""
    relative = os.path.relpath(Path(path).resolve())
    return Path(path).name if relative.startswith("..") else relative


def main(args):
    path = model_path(args)
    device = choose_device(args.device)
    dtype = choose_precision(args.precision, device)
    model, input_size = load_model(path, device)
    model, dtype = prediction_model(model, dtype, input_size, args.precision, device, None, args.calibration)
    out_dir = Path(tempfile.mkdtemp(prefix="densedepth-demo-"))
    live_stream = LiveStream(model, input_size, device, dtype, live_threads(args.host),
                             onnxruntime_may_run(args.precision, device, dtype))  # fmt: skip
    demo = DepthDemo(model, input_size, device, dtype, args.flip, out_dir, live_stream)
    title = f"Model `{shown_path(path)}`, on {device}, {str(dtype).removeprefix('torch.')}."
    app, theme = build_app(demo, title)
    print(f"serving the demo at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, quiet=True, theme=theme)


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
