"""fill_depth.py and densedepth/fill.py: the NYU toolbox's colorization equations against a loop written as
the MATLAB code is, MATLAB's grey weights, the solve against a dense one, resuming, sharding, bad pairs,
where the outputs go (always inside --output_dir, one per input), the pool's tasks, and training on
what it writes."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_one_clear_line, run_script

import fill_depth
import train
from densedepth import fill
from densedepth.fill import colorization_system, fill_depth_colorization
from sample_data import write_rgbd_folder


def matlab_system(gray, known, alpha=1.0):
    """fill_depth_colorization.m's matrix, pixel by pixel as the toolbox builds it (dense)."""
    height, width = gray.shape
    size = height * width
    matrix = np.zeros((size, size))
    for i in range(height):
        for j in range(width):
            row = i * width + j
            window = [(ii, jj) for ii in range(max(0, i - 1), min(i + 2, height))
                      for jj in range(max(0, j - 1), min(j + 2, width)) if (ii, jj) != (i, j)]  # fmt: skip
            values = np.array([gray[ii, jj] for ii, jj in window])
            current = gray[i, j]
            all_values = np.append(values, current)
            csig = np.mean((all_values - all_values.mean()) ** 2) * 0.6
            mgv = np.min((values - current) ** 2)
            csig = max(csig, -mgv / math.log(0.01), 0.000002)
            weights = np.exp(-((values - current) ** 2) / csig)
            weights /= weights.sum()
            for (ii, jj), weight in zip(window, weights):
                matrix[row, ii * width + jj] = -weight
            matrix[row, row] = 1 + alpha * known[i, j]
    return matrix


def test_the_equations_are_the_toolboxs_and_the_solve_is_exact():
    rng = np.random.default_rng(0)
    gray = rng.random((6, 7))
    gray[:, 3:] = 0.5  # a flat patch: the 2e-6 floor and the min-difference rule both matter
    gray[:3, :3] = [[0.1, 0.15, 0.1], [0.12, 0.9, 0.1], [0.1, 0.1, 0.14]]  # unlike its neighbours: csig from
    # their least difference
    known = rng.random((6, 7)) < 0.3
    np.testing.assert_allclose(colorization_system(gray, known).toarray(), matlab_system(gray, known), atol=1e-12)
    depth_m = np.where(known, rng.uniform(0.2, 40, known.shape), np.nan)  # NaN: not measured, as 0 is
    rows, cols = np.nonzero(known)
    depth_m[rows[:3], cols[:3]] = [0.3, 0.6, 0.9]  # under a metre is measured too
    rgb = np.repeat((gray * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    rgb[2, 5, 0] += 1  # one red level in the flat patch: a grey step of 0.0012, near the 2e-6 floor once squared
    filled = fill_depth_colorization(rgb, depth_m, alpha=0.5)
    gray_used = rgb.astype(np.float64) @ fill.RGB2GRAY / 255
    measured = np.nan_to_num(depth_m)
    largest = measured.max()
    dense = np.linalg.solve(matlab_system(gray_used, known, alpha=0.5), 0.5 * known.ravel() * measured.ravel() / largest)
    np.testing.assert_allclose(filled.ravel(), dense * largest, rtol=1e-9)


def test_the_grey_values_are_matlabs_rgb2gray():
    """rgb2gray's code weighs R, G, B by the first row of the inverse of the NTSC matrix (its documentation
    rounds them to 0.2989, 0.5870, 0.1140, which do not sum to 1)."""
    ntsc = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    np.testing.assert_allclose(fill.RGB2GRAY, np.linalg.inv(ntsc)[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(fill.RGB2GRAY, [0.298936021293775, 0.587043074451121, 0.114020904255103], atol=1e-15)
    assert fill.RGB2GRAY.sum() == pytest.approx(1, abs=1e-15)


def test_the_nested_dissection_solve_equals_scipys_pivoting_solve():
    from scipy.sparse.linalg import spsolve

    rng = np.random.default_rng(2)
    height, width = 41, 67  # several levels of dissection, both split directions, odd sides
    order = fill.nested_dissection_order(height, width)
    np.testing.assert_array_equal(np.sort(order), np.arange(height * width))
    gray = rng.random((height, width))
    known = rng.random((height, width)) < 0.05
    system = colorization_system(gray, known)
    rhs = known.ravel() * rng.uniform(0.1, 1, height * width)
    expected = spsolve(system.tocsc(), rhs)
    np.testing.assert_allclose(fill.solve_on_grid(system, rhs, height, width), expected, rtol=1e-9, atol=1e-12)


def test_constant_depth_stays_constant_and_nothing_measured_is_refused():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    depth_m = np.where(rng.random((20, 30)) < 0.05, 7.5, 0.0)
    depth_m[0, 0] = 7.5
    np.testing.assert_allclose(fill_depth_colorization(rgb, depth_m), 7.5, rtol=1e-9)
    with pytest.raises(ValueError, match="no measured pixel"):
        fill_depth_colorization(rgb, np.zeros((20, 30)))


def test_linear_is_exact_on_a_plane_inside_the_hull_and_filled_outside():
    rng = np.random.default_rng(3)
    rows, cols = np.indices((30, 40), dtype=np.float64)
    plane = 0.1 + 0.02 * rows + 0.01 * cols  # measured: 0.34 m to 1.05 m (under a metre is measured too)
    sparse = np.zeros_like(plane)
    sparse[12::4, ::3] = plane[12::4, ::3]  # scan lines from 12 rows down: nothing above
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    sparse[0, 0] = np.nan  # not measured, as 0 is
    filled = fill.fill_depth_linear(rgb, sparse, alpha=0.5)
    hull = slice(12, 29), slice(0, 40)
    np.testing.assert_allclose(filled[hull], plane[hull], rtol=1e-9)
    hull_depth = np.zeros_like(plane)
    hull_depth[hull] = plane[hull]  # outside the hull: the colorization of the hull's pixels
    np.testing.assert_allclose(filled[:12], fill_depth_colorization(rgb, hull_depth, alpha=0.5)[:12], rtol=1e-9)
    one_line = np.zeros_like(plane)
    one_line[20, ::3] = 7.0 + 0.1 * np.arange(14)  # collinear: no triangle, so the colorization alone
    np.testing.assert_allclose(fill.fill_depth_linear(rgb, one_line, alpha=0.5),
                               fill_depth_colorization(rgb, one_line, alpha=0.5))  # fmt: skip
    with pytest.raises(ValueError, match="^has no measured pixel$"):
        fill.fill_depth_linear(rgb, np.zeros_like(plane))


def test_method_linear_from_the_command_line(tmp_path, capsys):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(1), "png16", png_scale=256)
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path / "out", "--workers", 1]
    status, stdout, err = run_script(fill_depth, [*argv, "--method", "linear"], capsys)
    assert status == 0 and "by linear" in stdout, err
    from data import decode_depth

    depth_m = decode_depth((tmp_path / "out/pairs/depth/00000.png").read_bytes(), 256)[0].numpy()
    truth = 30 / (1 + np.arange(40)[:, None] / 8)
    assert np.median(np.abs(depth_m - truth) / truth)[()] < 0.02


def sparse_pairs(count, seed=0, size=(40, 56)):
    """Pictures and LiDAR-like depth (every 4th row, one pixel in 3), depth growing down the picture."""
    rng = np.random.default_rng(seed)
    height, _width = size
    rows = np.arange(height, dtype=np.float64)[:, None]
    pairs = []
    for index in range(count):
        depth = np.broadcast_to(30 / (1 + rows / 8) + index, size).copy()
        sparse = np.zeros(size, dtype=np.float32)
        sparse[::4, ::3] = depth[::4, ::3]
        shade = np.clip(255 - depth * 6, 0, 255)
        rgb = np.stack([shade, shade, 255 - shade], axis=-1).astype(np.uint8) + rng.integers(0, 5, (*size, 3)).astype(
            np.uint8
        )
        pairs.append((rgb, sparse))
    return pairs


@pytest.mark.slow  # fills twice and trains, 5 s on Zen 3
def test_resuming_sharding_and_training_on_the_result(tmp_path, capsys):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(5), "png16", png_scale=256)
    out = tmp_path / "filled"
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", out, "--workers", 1]
    for shard in ("0/2", "1/2"):
        status, stdout, err = run_script(fill_depth, [*argv, "--shard", shard], capsys)
        assert status == 0, err
    filled = sorted(out.rglob("*.png"))
    assert len(filled) == 5
    stamps = [path.stat().st_mtime_ns for path in filled]
    status, stdout, err = run_script(fill_depth, argv, capsys)
    assert status == 0, err
    assert "5 filled already, 0 to fill" in stdout and stamps == [path.stat().st_mtime_ns for path in filled]
    lines = (out / "filled.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0] == "../pairs/rgb/00000.jpg,pairs/depth/00000.png"
    from data import decode_depth

    depth_m = decode_depth((out / "pairs/depth/00000.png").read_bytes(), 256)[0].numpy()
    assert (depth_m > 0).all()  # dense now
    truth = 30 / (1 + np.arange(40)[:, None] / 8)
    assert np.median(np.abs(depth_m - truth) / truth) < 0.05  # scan lines 4 rows apart on a steep profile

    argv = ["--data_dir", out / "filled.csv", "--depth_scale", 256, "--min_depth", 1, "--max_depth", 80]
    argv += ["--checkpoint_dir", tmp_path / "run", "--epochs", 1, "--batch_size", 2, "--input_size", 64, 64]
    status, _out_text, err = run_script(train, [*argv, "--no_pretrained", "--decoder_width", 0.0625, "--workers", 0],
                                       capsys)  # fmt: skip
    assert status == 0, err
    assert math.isfinite(torch.load(tmp_path / "run/last.pth", weights_only=False)["val_metrics"]["abs_rel"])


def test_half_size_solves_smaller_and_writes_full_size(tmp_path, capsys):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(1), "png16", png_scale=256)
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path / "out", "--workers", 1, "--size", "half"]
    status, _, err = run_script(fill_depth, argv, capsys)
    assert status == 0, err
    from PIL import Image

    assert Image.open(tmp_path / "out/pairs/depth/00000.png").size == (56, 40)


def test_bad_pairs_are_skipped_and_listed(tmp_path, capsys):
    pairs = sparse_pairs(3)
    pairs[1] = (pairs[1][0], np.zeros_like(pairs[1][1]))  # nothing measured
    csv = write_rgbd_folder(tmp_path / "pairs", pairs, "png16", png_scale=256)
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path / "out", "--workers", 1]
    status, _stdout, err = run_script(fill_depth, argv, capsys)
    assert status == 2 and "skipped pairs/depth/00001.png: has no measured pixel" in err
    assert "1 pairs could not be filled (listed above); the others were written" in err
    assert len((tmp_path / "out/filled.csv").read_text().splitlines()) == 2
    assert_one_clear_line(run_script(fill_depth, [*argv, "--shard", "2/2"], capsys), "--shard 2/2")
    assert_one_clear_line(run_script(fill_depth, ["--data", tmp_path / "none.csv", "--output_dir", tmp_path], capsys),
                          "does not exist")  # fmt: skip


def test_a_csv_of_absolute_or_parent_paths_is_filled_inside_the_output_folder(tmp_path, capsys):
    """Absolute depth paths once made the output the input itself ('2 filled already'), and '../' paths
    wrote outside --output_dir: every output now lies inside it, one for each input."""
    relative_csv = write_rgbd_folder(tmp_path / "data" / "pairs", sparse_pairs(2), "png16", png_scale=256)
    rows = [line.split(",") for line in relative_csv.read_text().splitlines()]
    (tmp_path / "lists").mkdir()
    absolute_csv = tmp_path / "lists" / "absolute.csv"
    folder = relative_csv.parent
    absolute_csv.write_text("".join(f"{folder / rgb},{folder / depth}\n" for rgb, depth in rows))
    parent_csv = tmp_path / "lists" / "parent.csv"
    parent_csv.write_text("".join(f"../data/{rgb},../data/{depth}\n" for rgb, depth in rows))
    originals = {path: path.read_bytes() for path in (tmp_path / "data").rglob("*.png")}
    for csv in (absolute_csv, parent_csv):
        out = tmp_path / f"filled_{csv.stem}"
        argv = ["--data", csv, "--depth_scale", 256, "--output_dir", out, "--workers", 1]
        status, stdout, err = run_script(fill_depth, argv, capsys)
        assert status == 0, err
        assert "0 filled already, 2 to fill" in stdout
        written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
        assert written == ["00000.png", "00001.png"]
        listed = [line.split(",")[1] for line in (out / "filled.csv").read_text().splitlines()]
        assert listed == written
    assert originals == {path: path.read_bytes() for path in (tmp_path / "data").rglob("*.png")}  # untouched


def test_an_output_folder_that_would_overwrite_the_inputs_is_refused(tmp_path, capsys):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(1), "png16", png_scale=256)
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path, "--workers", 1]
    assert_one_clear_line(run_script(fill_depth, argv, capsys), "would overwrite the input", "00000.png")


def test_two_depth_files_meeting_in_one_output_are_refused(tmp_path, capsys):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(1), "png16", png_scale=256)
    from data import encode_depth_file

    (tmp_path / "pairs" / "depth" / "00000.npy").write_bytes(encode_depth_file(sparse_pairs(1)[0][1], "npy"))
    csv.write_text(csv.read_text() + "pairs/rgb/00000.jpg,pairs/depth/00000.npy\n")
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path / "out", "--workers", 1]
    assert_one_clear_line(run_script(fill_depth, argv, capsys), "would both be filled into", "00000.png")


def test_left_and_right_pictures_of_one_scan_are_filled_apart(tmp_path, capsys):
    """monodepth2's lists name both cameras of a scan: each gets its own file, projected with its own
    P_rect_0N, and the frames a BTS list gives no ground truth are said."""
    from kitti_tree import RIGHT_CAMERA_FRAME, write_kitti_tree

    tree = write_kitti_tree(tmp_path / "kitti")
    drive, frame = RIGHT_CAMERA_FRAME
    lines = [f"2011_09_26/{drive} {frame} l", f"2011_09_26/{drive} {frame} r"]
    listed = tmp_path / "both.txt"
    listed.write_text("\n".join(lines) + "\n")
    out = tmp_path / "filled"
    argv = ["--data", listed, "--kitti_raw", tree["raw"], "--output_dir", out, "--workers", 1, "--size", "half"]
    status, stdout, err = run_script(fill_depth, argv, capsys)
    assert status == 0, err
    left = out / f"2011_09_26/{drive}/proj_depth/filled/image_02/{frame:010d}.png"
    right = out / f"2011_09_26/{drive}/proj_depth/filled/image_03/{frame:010d}.png"
    assert left.is_file() and right.is_file() and left.read_bytes() != right.read_bytes()
    csv_lines = (out / "filled.csv").read_text().splitlines()
    assert len(csv_lines) == 2 and "image_03/data" in csv_lines[1] and "image_03" in csv_lines[1].split(",")[1]

    argv = ["--data", tree["bts"], "--kitti_raw", tree["raw"], "--kitti_depth", tree["annotated"], "--output_dir",
            tmp_path / "bts", "--workers", 1, "--size", "half", "--shard", "0/6"]  # fmt: skip
    status, stdout, err = run_script(fill_depth, argv, capsys)
    assert status == 0, err
    assert "1 of its 6 frames have no ground truth (None in the list), left out" in stdout


class RecordingPool:
    """multiprocessing's Pool run in this process, recording how many bytes each task pickles to."""

    task_bytes = []

    def __init__(self, processes, initializer=None, initargs=()):
        import pickle

        self.threads = torch.get_num_threads()  # a worker's start sets one thread: not for this process after
        initializer(*[pickle.loads(pickle.dumps(arg)) for arg in initargs])  # what the worker would get, once

    def imap_unordered(self, function, items):
        import pickle

        for item in items:
            RecordingPool.task_bytes.append(len(pickle.dumps((function, item))))
            yield pickle.loads(pickle.dumps(function))(item)

    def terminate(self):
        torch.set_num_threads(self.threads)


def test_the_pools_tasks_are_pair_indices_not_the_dataset(tmp_path, capsys, monkeypatch):
    csv = write_rgbd_folder(tmp_path / "pairs", sparse_pairs(3), "png16", png_scale=256)
    monkeypatch.setattr(fill_depth.multiprocessing, "get_context", lambda method: type("Context", (), {
        "Pool": RecordingPool}))  # fmt: skip
    RecordingPool.task_bytes = []
    argv = ["--data", csv, "--depth_scale", 256, "--output_dir", tmp_path / "out", "--workers", 2, "--size", "half"]
    status, _, err = run_script(fill_depth, argv, capsys)
    assert status == 0, err
    assert len(RecordingPool.task_bytes) == 3 and max(RecordingPool.task_bytes) < 200
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
