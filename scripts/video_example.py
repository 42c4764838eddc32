"""The animated example of docs/evaluation.md#video: a camera panning across a rendered test room (a
640x480 view seen through a sliding 320x240 window), its depth video by evaluate.py --img, and the
two side by side as an animated GIF.

    python -m scripts.video_example --model runs/quickstart/checkpoints/last.pth --out docs/sample/video.gif
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image

from rendering.scenes import render_scene

FRAMES, RATE = 24, 12


def pan_clip(path):
    _, views = render_scene(3, 1, 2, 1, 640, 480)
    room = views[0][0]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(FRAMES):
            left = round(index * (640 - 320) / (FRAMES - 1))
            frame = np.ascontiguousarray(room[120:360, left : left + 320])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="docs/sample/video.gif")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "pan.mp4"
        pan_clip(clip)
        command = [sys.executable, "evaluate.py", "--model", args.model, "--img", str(clip), "--output_dir", folder,
                   "--side_by_side", "--depth_range", "1.5", "4"]  # fmt: skip
        subprocess.run(command, check=True)
        with av.open(str(Path(folder) / "pan_depth.mp4")) as container:
            frames = [Image.fromarray(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    frames = [frame.quantize(colors=128, method=Image.Quantize.MEDIANCUT) for frame in frames]
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=1000 // RATE, loop=0, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB, {len(frames)} frames)")


if __name__ == "__main__":
    main()
