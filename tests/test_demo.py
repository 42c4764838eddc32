"""The browser demo: its server on the loopback interface, driven through its API and in a real
headless browser; bad input gives a message in the page and the server goes on."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, assert_one_clear_line, run_script, threads_of_a_new_thread
from PIL import Image

import demo
import evaluate

pytestmark = pytest.mark.slow

gradio_client = pytest.importorskip("gradio_client", reason="the demo's extras: pip install -r requirements-demo.txt")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def picture(tmp_path_factory, tiny_zips):
    """The first test picture of the tiny zip, as a PNG file."""
    from data import EigenTestZip

    rgb = next(EigenTestZip(tiny_zips[1]).batches(1))[0][0]
    path = tmp_path_factory.mktemp("picture") / "room.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    """demo.py serving the tiny model on 127.0.0.1 (fp32, so its depth can be compared exactly)."""
    port = free_port()
    command = [sys.executable, str(ROOT / "demo.py"), "--model", str(tiny_checkpoint), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(command + ["--precision", "fp32"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the demo did not start: {process.stdout.read()}") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def predict(url, picture_path):
    client = gradio_client.Client(url, verbose=False)
    return client.predict(gradio_client.handle_file(str(picture_path)), None, None, None, None, api_name="/predict")


def test_the_api_gives_evaluates_depth_and_files(server, picture, tiny_checkpoint, tmp_path, capsys):
    side, cloud, files, summary = predict(server, picture)
    argv = ["--model", tiny_checkpoint, "--img", picture, "--output_dir", tmp_path, "--precision", "fp32", "--ply"]
    status, _, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    by_suffix = {name.rsplit("picture", 1)[-1]: name for name in files}
    assert set(by_suffix) == {"_depth_mm.png", "_depth_m.npy", ".ply"}
    assert np.array_equal(np.load(by_suffix["_depth_m.npy"]), np.load(tmp_path / "room_depth_m.npy"))
    for suffix in ("_depth_mm.png", ".ply"):  # byte for byte what evaluate.py --img writes
        assert Path(by_suffix[suffix]).read_bytes() == (tmp_path / f"room{suffix}").read_bytes(), suffix
    assert np.asarray(Image.open(side)).shape[1] > 2 * 64  # picture | depth with its colour bar
    assert Path(cloud).read_bytes()[:4] == b"glTF"
    assert "depth" in summary and "predicted in" in summary


def test_bad_input_gives_a_message_and_the_server_goes_on(server, picture, tmp_path):
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 5200), (90, 90, 90)).save(huge)
    for bad, message in ((not_a_picture, "notes.png is not a picture that can be read (cannot identify image file"),
                         (huge, "over 40 megapixels")):  # fmt: skip
        with pytest.raises(Exception) as error:  # gradio_client raises the page's error
            predict(server, bad)
        assert message in str(error.value)
    client = gradio_client.Client(server, verbose=False)
    with pytest.raises(Exception, match="No picture"):
        client.predict(None, None, None, None, None, api_name="/predict")
    assert predict(server, picture)[3].startswith("64x48 picture")  # still serving


def test_the_video_tab_gives_the_depth_video_and_refuses_bad_clips(server, tmp_path):
    av = pytest.importorskip("av", reason="the video tab needs requirements-video.txt")
    from helpers import decoded_frames, write_clip

    clip = write_clip(tmp_path / "clip.mp4", count=6)
    client = gradio_client.Client(server, verbose=False)
    result, summary = client.predict(gradio_client.handle_file(str(clip)), api_name="/predict_video")
    path = result["video"] if isinstance(result, dict) else result
    (codec, _, width, height, _), frames = decoded_frames(path)
    assert codec == "h264" and len(frames) == 6 and (width, height) == (2 * 96 + 4, 64)
    assert summary.startswith("6 frames")
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 50)
    with pytest.raises(Exception, match="not a video FFmpeg can read"):
        client.predict(gradio_client.handle_file(str(tmp_path / "notes.mp4")), api_name="/predict_video")
    assert av is not None and client.predict(gradio_client.handle_file(str(clip)), api_name="/predict_video")[
        1
    ].startswith("6 frames")  # still serving


def test_without_a_model_it_says_how_to_get_one(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo, "QUICKSTART_MODEL", tmp_path / "last.pth")
    assert_one_clear_line(run_script(demo, [], capsys), "bash scripts/quickstart.sh", "--model nyu.h5")


def test_the_live_tab_runs_in_a_thread_of_its_own(tiny_checkpoint, monkeypatch, tmp_path, capsys):
    """Under 'auto' in fp32 on the CPU, the Live tab's stream runs in onnxruntime (here faster, as said) in a
    thread of its own, on that thread's count of torch threads, with PyTorch's depth, and the page says so;
    with fp32 asked for, in PyTorch on that count, while a thread starting meanwhile gets the process's; one
    core is left to the browser only where the demo serves this machine alone."""
    import torch

    from densedepth import deploy
    from densedepth.inference import load_model
    from densedepth.protocol import predict_depth_m
    from densedepth.visualize import colorize_depth

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    timings = iter([0.2, 0.1])  # PyTorch's, then onnxruntime's
    monkeypatch.setattr(deploy, "seconds_per_batch", lambda run, batch, repeats=2: next(timings))
    cpu, default = torch.device("cpu"), torch.get_num_threads()
    count = default + 1
    model, input_size = load_model(tiny_checkpoint, cpu)
    live = demo.LiveStream(model, input_size, cpu, torch.float32, count, try_onnxruntime=True)
    page = demo.DepthDemo(model, input_size, cpu, torch.float32, True, tmp_path, live)
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # at the model's size
    shown, line = page.live(frame)
    assert f"the camera's 64x48 predicted at 64x48 in onnxruntime on {count} threads; colours" in line
    assert capsys.readouterr().out.startswith(f"live: onnxruntime on {count} threads; onnxruntime 100.0 ms ")
    with torch.no_grad():
        depth_m = predict_depth_m(model, torch.from_numpy(frame).permute(2, 0, 1)[None], input_size, (48, 64),
                                  flip=False)  # fmt: skip
    expected = colorize_depth(depth_m[0, 0].numpy(), model.depth_range.min_m, model.depth_range.max_m)
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1

    live = demo.LiveStream(model, input_size, cpu, torch.float32, count, try_onnxruntime=False)  # fp32 asked for
    page = demo.DepthDemo(model, input_size, cpu, torch.float32, True, tmp_path, live)
    threads_seen, predict = [], demo.depth_of_pictures

    def recording(*args, **kwargs):
        threads_seen.extend([threads_of_a_new_thread(), torch.get_num_threads()])
        return predict(*args, **kwargs)

    monkeypatch.setattr(demo, "depth_of_pictures", recording)
    assert f"predicted at 64x48 in PyTorch on {count} threads; colours" in page.live(frame)[1]
    assert threads_seen == [default, count]

    def broken(*args):
        raise RuntimeError("the exporter broke\nat length")

    monkeypatch.setattr(demo, "live_network", broken)  # the stream goes on in PyTorch, saying why
    capsys.readouterr()
    live = demo.LiveStream(model, input_size, cpu, torch.float32, count, try_onnxruntime=True)
    page = demo.DepthDemo(model, input_size, cpu, torch.float32, True, tmp_path, live)
    assert f"predicted at 64x48 in PyTorch on {count} threads; colours" in page.live(frame)[1]
    assert capsys.readouterr().out == f"live: PyTorch on {count} threads; onnxruntime not tried: the exporter broke\n"

    monkeypatch.setattr(demo.torch, "get_num_threads", lambda: 4)
    assert [demo.live_threads(host) for host in ("127.0.0.1", "localhost", "::1", "0.0.0.0")] == [3, 3, 3, 4]


def video_for_browser(folder):
    """A short clip for the browser test's video tab, or None without PyAV."""
    try:
        import av  # noqa: F401 (only whether it is there)
    except ImportError:
        return None
    from helpers import write_clip

    return write_clip(folder / "clip.mp4", count=6)


def chromium():
    for browser, driver in (("/usr/bin/chromium", "/usr/bin/chromedriver"),):
        if os.path.exists(browser) and os.path.exists(driver):
            return browser, driver
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


needs_chromium = pytest.mark.skipif(chromium() is None, reason="no system Chromium and chromedriver (apt-get install "
                                    "chromium chromium-driver; .ci/run installs them)")  # fmt: skip


def browser_session(*extra_flags):
    """Headless Chromium (the system's, through its chromedriver) on a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1280,1800", *extra_flags):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@needs_chromium
def test_the_webcam_streams_live_depth_in_a_real_browser(server, tmp_path):
    """Chromium's fake camera streams into the Live tab: frame after frame comes back as depth, and the page
    says the rate it keeps."""
    import re

    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    session = browser_session("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    try:
        session.get(server)
        WebDriverWait(session, 60).until(lambda page: page.find_elements(By.CSS_SELECTOR, "button[role=tab]"))
        next(tab for tab in session.find_elements(By.CSS_SELECTOR, "button[role=tab]") if tab.text == "Live").click()
        WebDriverWait(session, 30).until(
            lambda page: any("Webcam" in b.text for b in page.find_elements(By.CSS_SELECTOR, "#webcam button"))
        )
        next(button for button in session.find_elements(By.CSS_SELECTOR, "#webcam button") if "Webcam" in button.text
             ).click()  # fmt: skip
        WebDriverWait(session, 30).until(
            lambda page: any(b.text == "Record" for b in page.find_elements(By.CSS_SELECTOR, "#webcam button"))
        )
        next(b for b in session.find_elements(By.CSS_SELECTOR, "#webcam button") if b.text == "Record").click()

        def frames_counted(page):
            text = page.find_element(By.ID, "live_rate").text
            found = re.search(r"([\d.]+) frames/s \(over the last (\d+) frames\)", text)
            return found and int(found.group(2)) >= 20 and found

        rate = WebDriverWait(session, 120).until(frames_counted)  # 20 frames and more: a stream, not a snapshot
        depth = session.find_element(By.CSS_SELECTOR, "#live_depth img").get_attribute("src")
        text = session.find_element(By.ID, "live_rate").text
        session.save_screenshot(str(tmp_path / "live.png"))
    finally:
        session.quit()
    assert float(rate.group(1)) > 1 and depth, text
    threads = max(1, torch.get_num_threads() - 1)  # the server's: a core left to this browser
    assert f"the camera's 320x240 predicted at 64x48 in PyTorch on {threads} thread" in text, text
    assert "Error" not in text


@needs_chromium
def test_the_page_in_a_real_browser(server, picture, tmp_path):
    """Headless Chromium uploads a picture, waits for its depth, and saves a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    session = browser_session()
    try:
        session.get(server)
        WebDriverWait(session, 60).until(lambda page: page.find_elements(By.CSS_SELECTOR, "input[type=file]"))
        session.find_elements(By.CSS_SELECTOR, "input[type=file]")[0].send_keys(str(picture))
        WebDriverWait(session, 120).until(
            lambda page: "picture_depth_mm" in page.find_element(By.TAG_NAME, "body").text
        )
        time.sleep(3)  # the 3-D view draws its points
        text = session.find_element(By.TAG_NAME, "body").text
        screenshot = tmp_path / "demo.png"
        session.save_screenshot(str(screenshot))
        video_clip = video_for_browser(tmp_path)
        if video_clip is not None:  # the video tab: upload a clip, wait for its depth video
            next(
                tab for tab in session.find_elements(By.CSS_SELECTOR, "button[role=tab]") if tab.text == "Video"
            ).click()
            WebDriverWait(session, 30).until(
                lambda page: len(page.find_elements(By.CSS_SELECTOR, "input[type=file]")) > 1
            )
            file_inputs = session.find_elements(By.CSS_SELECTOR, "input[type=file]")
            file_inputs[-1].send_keys(str(video_clip))
            WebDriverWait(session, 120).until(lambda page: "frames/s" in page.find_element(By.TAG_NAME, "body").text)
            video_text = session.find_element(By.TAG_NAME, "body").text
            session.save_screenshot(str(tmp_path / "demo_video.png"))
    finally:
        session.quit()
    assert "64x48 picture: depth" in text and "predicted in" in text and "Error" not in text, text
    assert Image.open(screenshot).size[0] >= 1000
    if video_clip is not None:
        assert "frames in" in video_text and "frames/s" in video_text and "Error" not in video_text, video_text
