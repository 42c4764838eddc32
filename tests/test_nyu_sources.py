"""NYU Depth v2 from the sources that still exist: the labeled .mat in MATLAB's transposed layout with
splits.mat, and BTS's lists; orientation, split indices, both ground truths and crops, one test set
read three ways giving one answer, training, and the bad inputs."""

import json
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest
from helpers import assert_one_clear_line, run_script
from PIL import Image

import evaluate
import train
from data import EIGEN_CROP, EIGEN_DEPTH, EIGEN_RGB, DecodeError, encode_depth_file, write_npy_member
from densedepth import nyu_sources
from densedepth.nyu_sources import (
    LabeledDataset,
    LabeledMat,
    read_bts_nyu_list,
    read_splits,
    write_labeled_mat,
    write_splits,
)
from densedepth.protocol import crop_box
from utils import UserError

COUNT = 6
TRAIN, TEST = [1, 3, 5], [2, 4, 6]  # 1-based, as splits.mat
SCENES = ["bathroom", "bedroom", "kitchen"]


def nyu_pictures():
    """Six 480x640 pictures with an asymmetric pattern (a white block top left, red growing to the right,
    green downwards, noise), filled depth that varies, raw depth in whole millimetres with holes."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:480, 0:640]
    pictures, filled, raw = [], [], []
    for index in range(COUNT):
        picture = np.stack([cols * 255 // 639, rows * 255 // 479, np.full_like(rows, 40 * index)], axis=-1)
        picture = np.clip(picture + rng.integers(-20, 20, picture.shape), 0, 255).astype(np.uint8)
        picture[:60, :80] = 255
        depth = (1.0 + 6.0 * rows / 479 + 2.0 * cols / 639 + 0.3 * index).astype(np.float32)
        holes = rng.random(depth.shape) < 0.2
        holes[:, :7] = True  # raw depth's border is empty, as NYU's
        pictures.append(picture)
        filled.append(depth)
        raw.append(np.where(holes, 0, np.round(depth * 1000) / 1000).astype(np.float32))
    return np.stack(pictures), np.stack(filled), np.stack(raw)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same six pictures as NYU's labeled .mat + splits.mat, BTS's official_splits/test folder + list,
    and two Eigen test zips of the test pictures (with the raw and with the filled depth)."""
    root = tmp_path_factory.mktemp("nyu_sources")
    pictures, filled, raw = nyu_pictures()
    write_labeled_mat(root / "nyu_depth_v2_labeled.mat", pictures, filled, raw)
    write_splits(root / "splits.mat", TRAIN, TEST)
    test = [index - 1 for index in TEST]
    lines = []
    for number, index in enumerate(test):
        folder = root / "official_splits" / "test" / SCENES[number]
        folder.mkdir(parents=True)
        Image.fromarray(pictures[index]).save(folder / f"rgb_{index:05d}.png")
        (folder / f"sync_depth_{index:05d}.png").write_bytes(encode_depth_file(raw[index], "png16", 1000))
        lines.append(f"{SCENES[number]}/rgb_{index:05d}.png {SCENES[number]}/sync_depth_{index:05d}.png 518.8579")
    (root / "nyudepthv2_test_files_with_gt.txt").write_text("\n".join(lines))  # no newline at the end, as BTS's
    for name, depth in (("raw", raw), ("filled", filled)):
        with zipfile.ZipFile(root / f"nyu_test_{name}.zip", "w") as archive:
            write_npy_member(archive, EIGEN_RGB, pictures[test])
            write_npy_member(archive, EIGEN_DEPTH, depth[test])
            write_npy_member(archive, EIGEN_CROP, np.array([20, 459, 24, 615]))
    return {"root": root, "mat": root / "nyu_depth_v2_labeled.mat", "splits": root / "splits.mat",
            "list": root / "nyudepthv2_test_files_with_gt.txt", "data_root": root / "official_splits" / "test",
            "pictures": pictures, "filled": filled, "raw": raw}  # fmt: skip


def test_pictures_come_out_upright_and_unmirrored(sources):
    mat = LabeledMat(sources["mat"], "--data")
    assert mat.count == COUNT and mat.has_raw
    with h5py.File(sources["mat"]) as file:
        assert file["images"].shape == (COUNT, 3, 640, 480)  # MATLAB's layout, as NYU's file
    for index in (0, 4):
        picture = mat.picture(index)
        assert picture.shape == (480, 640, 3)
        assert (picture[:60, :80] == 255).all() and picture[400, 600, 0] > picture[400, 40, 0]  # block top left
        np.testing.assert_array_equal(picture, sources["pictures"][index])
        np.testing.assert_array_equal(mat.depth_m(index, "filled"), sources["filled"][index])
        np.testing.assert_array_equal(mat.depth_m(index, "raw"), sources["raw"][index])
        assert mat.depth_m(index, "raw").dtype == np.float32 and picture.dtype == np.uint8
    copy = pickle.loads(pickle.dumps(mat))  # as a spawned worker gets it: no handle, opened there
    assert copy._file is None and copy._pid is None
    np.testing.assert_array_equal(copy.picture(4), sources["pictures"][4])
    copy._file.close()
    mat._file.close()


def test_a_picture_that_cannot_be_read_is_named(sources, monkeypatch):
    dataset = LabeledDataset(LabeledMat(sources["mat"], "--data"), [1, 3], "raw")
    monkeypatch.setattr(LabeledMat, "picture", lambda self, index: (_ for _ in ()).throw(OSError("truncated")))
    with pytest.raises(DecodeError, match=r"^nyu_depth_v2_labeled\.mat:images\[3\] could not be read \(truncated\)$"):
        dataset.load_pair(1)


def test_a_bts_list_is_read_past_blank_lines_and_refused_in_one_line(sources, tmp_path):
    lines = sources["list"].read_text().splitlines()
    gaps = tmp_path / "gaps.txt"
    gaps.write_text("\n".join([lines[0], "", "  \t", *lines[1:]]) + "\n\n")  # a blank line does not end it
    pairs, focals = read_bts_nyu_list(gaps, sources["data_root"], "--data")
    assert pairs == [tuple(line.split()[:2]) for line in lines]
    assert focals == [float(line.split()[2]) for line in lines]
    (tmp_path / "blank.txt").write_text("\n \n")
    for args, message in [
        ((gaps, None, "--data"), f"--data {gaps} is one of BTS's NYU lists: give --data_root, the folder its paths "
                                 "are in (sync/ for the training list, official_splits/test/ for the test list)"),
        ((gaps, tmp_path / "nowhere", "--data"), f"--data_root {tmp_path / 'nowhere'} is not a folder"),
        ((tmp_path / "blank.txt", sources["data_root"], "--val_data"), f"--val_data {tmp_path / 'blank.txt'} lists no pairs"),
    ]:  # fmt: skip
        with pytest.raises(UserError) as caught:
            read_bts_nyu_list(*args)
        assert str(caught.value) == message


def test_a_labeled_mat_that_is_not_nyus_is_refused_in_one_line(sources, tmp_path):
    plain = tmp_path / "plain.mat"  # HDF5 without MATLAB's 512-byte header is HDF5 too
    with h5py.File(plain, "w") as file:
        file["accelData"] = np.zeros((3, 4))
    assert nyu_sources.is_hdf5(plain) and nyu_sources.is_hdf5(sources["mat"]) and not nyu_sources.is_hdf5(sources["splits"])
    for path, flag, message in [
        (plain, "--data_dir", f"--data_dir {plain} has no images or depths: it holds accelData, not NYU's labeled "
                              "dataset"),
        (sources["splits"], "--data", f"--data {sources['splits']} is not a MATLAB v7.3 (HDF5) file: the labeled "
                                      "dataset nyu_depth_v2_labeled.mat is one (a MATLAB v5 file such as splits.mat "
                                      "goes to --splits)"),
    ]:  # fmt: skip
        with pytest.raises(UserError) as caught:
            LabeledMat(path, flag)
        assert str(caught.value) == message
    no_raw = tmp_path / "no_raw.mat"
    no_raw.write_bytes(sources["mat"].read_bytes())
    with h5py.File(no_raw, "a") as file:
        del file["rawDepths"]
    mat = LabeledMat(no_raw, "--data")
    assert not mat.has_raw and len(LabeledDataset(mat, [0], "filled")) == 1
    with pytest.raises(UserError) as caught:
        LabeledDataset(mat, [0], "raw")
    assert str(caught.value) == f"{no_raw} has no rawDepths for --gt raw"


def test_splits_that_are_not_nyus_are_refused_in_one_line(sources, tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "other.mat", {"trainIdx": np.ones((3, 1))})
    savemat(tmp_path / "empty.mat", {})
    (tmp_path / "text.mat").write_text("not a .mat")
    for path, message in [
        (tmp_path / "missing.mat", f"--splits {tmp_path / 'missing.mat'} does not exist"),
        (sources["mat"], f"--splits {sources['mat']} is a MATLAB v7.3 (HDF5) file; splits.mat is MATLAB v5 (the "
                         "labeled dataset itself goes to --data / --data_dir)"),
        (tmp_path / "other.mat", f"--splits {tmp_path / 'other.mat'} has no trainNdxs (it holds trainIdx): not NYU's "
                                 "splits.mat"),
        (tmp_path / "empty.mat", f"--splits {tmp_path / 'empty.mat'} has no trainNdxs (it holds nothing): not NYU's "
                                 "splits.mat"),
    ]:  # fmt: skip
        with pytest.raises(UserError) as caught:
            read_splits(path, COUNT)
        assert str(caught.value) == message
    with pytest.raises(UserError, match=r"^--splits .*text\.mat is not a MATLAB \.mat file that can be read \(.+\)$"):
        read_splits(tmp_path / "text.mat", COUNT)


def test_split_indices_are_one_based(sources):
    train_indices, test_indices = read_splits(sources["splits"], COUNT)
    assert (train_indices, test_indices) == ([0, 2, 4], [1, 3, 5])
    dataset = LabeledDataset(LabeledMat(sources["mat"], "--data"), test_indices, "raw")
    image, depth_m = dataset[0]
    assert image.shape == (3, 480, 640) and depth_m.shape == (1, 480, 640) and dataset.own_data
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), sources["pictures"][1])


def test_the_bts_crop():
    assert crop_box("eigen_bts", 480, 640) == (45, 470, 41, 600)  # their [45:471, 41:601]
    assert crop_box("eigen", 480, 640) == (20, 459, 24, 615)


def scores(varied_checkpoint, out, capsys, *data):
    argv = ["--model", varied_checkpoint, *data, "--output_dir", out, "--precision", "fp32", "--num_examples", 1]
    status, stdout, err = run_script(evaluate, argv, capsys)
    assert status == 0, err
    return json.loads((out / "metrics.json").read_text()), stdout


@pytest.mark.slow  # evaluate.py three times, 12 s on Zen 3
def test_one_test_set_three_ways_one_answer(sources, varied_checkpoint, tmp_path, capsys):
    """BTS's protocol (raw depth, their crop, 1e-3 < d < 10 m) on the labeled .mat, BTS's folder and a zip
    of the same pictures; DenseDepth's (filled depth, Eigen crop) on the .mat and the zip."""
    root = sources["root"]
    from_mat, stdout = scores(varied_checkpoint, tmp_path / "mat", capsys, "--data", sources["mat"], "--splits",
                              sources["splits"], "--protocol", "bts")  # fmt: skip
    from_list, _ = scores(varied_checkpoint, tmp_path / "list", capsys, "--data", sources["list"], "--data_root",
                          sources["data_root"])  # fmt: skip
    from_zip, _ = scores(varied_checkpoint, tmp_path / "zip", capsys, "--data", root / "nyu_test_raw.zip",
                         "--protocol", "bts")  # fmt: skip
    assert "eigen_bts crop, raw ground truth 0.001 < d < 10 m" in stdout
    for report in (from_mat, from_list, from_zip):
        assert report["ground_truth"] == "raw"
        assert report["protocol"] == "bts" and report["crop"] == "eigen_bts" and report["num_images"] == 3
        for aggregation in ("per_image", "pooled"):
            assert report[aggregation] == pytest.approx(from_mat[aggregation], rel=1e-6, abs=1e-9)
    assert from_list["focal_px"] == [518.8579] and from_mat["ground_truth"] == "raw"
    assert from_mat["num_valid_pixels"] == from_zip["num_valid_pixels"] == from_list["num_valid_pixels"]

    filled_mat, _ = scores(varied_checkpoint, tmp_path / "filled", capsys, "--data", sources["mat"], "--splits",
                           sources["splits"])  # fmt: skip
    filled_zip, _ = scores(varied_checkpoint, tmp_path / "filled_zip", capsys, "--data", root / "nyu_test_filled.zip")
    assert filled_mat["protocol"] == "densedepth" and filled_mat["ground_truth"] == "filled"
    assert filled_mat["per_image"] == pytest.approx(filled_zip["per_image"], rel=1e-6)
    assert filled_mat["num_valid_pixels"] == 3 * 440 * 592  # dense: every pixel of the Eigen crop
    assert filled_mat["per_image"] != pytest.approx(from_mat["per_image"], rel=1e-3)  # another ground truth


def test_ground_truth_and_crop_can_be_set_apart_from_the_protocol(sources, varied_checkpoint, tmp_path, capsys):
    report, _ = scores(varied_checkpoint, tmp_path, capsys, "--data", sources["mat"], "--splits", sources["splits"],
                       "--gt", "raw", "--crop", "eigen")  # fmt: skip
    assert (report["ground_truth"], report["crop"], report["protocol"]) == ("raw", "eigen", "densedepth")


@pytest.mark.slow  # trains and evaluates, 4 to 5 s each on Zen 3
@pytest.mark.parametrize("source", ["mat", "list"])
def test_training_on_the_labeled_mat_and_on_a_bts_list(sources, tmp_path, capsys, source):
    if source == "mat":
        data = ["--data_dir", sources["mat"], "--splits", sources["splits"]]
    else:  # the test list stands in for the training list: same shape, with a leading slash
        listed = sources["list"].read_text().splitlines()
        (tmp_path / "train.txt").write_text("\n".join("/" + line.replace(" ", " /", 1) for line in listed) + "\n")
        data = ["--data_dir", tmp_path / "train.txt", "--data_root", sources["data_root"]]
    argv = [*data, "--checkpoint_dir", tmp_path / "run", "--epochs", 1, "--batch_size", 2, "--input_size", 64, 64]
    argv += ["--no_pretrained", "--decoder_width", 0.0625, "--workers", 0]
    status, out, err = run_script(train, argv, capsys)
    assert status == 0, err
    assert ("3 training pairs, 3 test pairs" if source == "mat" else "2 training pairs, 1 test pairs") in out


def test_bad_nyu_input_is_one_line_each(sources, tmp_path, capsys):
    def run(*data):
        return run_script(evaluate, ["--model", "x.pth", *data, "--output_dir", tmp_path / "out"], capsys)

    with h5py.File(tmp_path / "other.mat", "w", userblock_size=512) as file:
        file["accelData"] = np.zeros((3, 4))
        file["labels"] = np.zeros((3, 4))
    assert_one_clear_line(run("--data", tmp_path / "other.mat", "--splits", sources["splits"]),
                          "has no images or depths", "accelData, labels")  # fmt: skip
    write_splits(tmp_path / "past.mat", [1], [2, 7])
    assert_one_clear_line(run("--data", sources["mat"], "--splits", tmp_path / "past.mat"),
                          "testNdxs runs from 2 to 7", "pictures 1 to 6")  # fmt: skip
    assert_one_clear_line(run("--data", sources["splits"], "--splits", sources["splits"]),
                          "not a MATLAB v7.3 (HDF5) file")  # fmt: skip
    assert_one_clear_line(run("--data", sources["mat"], "--splits", sources["mat"]),
                          "--splits", "is a MATLAB v7.3 (HDF5) file; splits.mat is MATLAB v5")  # fmt: skip
    assert_one_clear_line(run("--data", sources["mat"]), "give --splits")
    lines = sources["list"].read_text().splitlines()
    (tmp_path / "list.txt").write_text("\n".join([lines[0], "bathroom/rgb_00001.png 518.8579"]))
    assert_one_clear_line(run("--data", tmp_path / "list.txt", "--data_root", sources["data_root"]),
                          "line 2 has 2 fields")  # fmt: skip
    (tmp_path / "list.txt").write_text("\n".join([lines[0], lines[1].replace("rgb_", "rgb_9")]))
    assert_one_clear_line(run("--data", tmp_path / "list.txt", "--data_root", sources["data_root"]),
                          "line 2 names", "does not exist")  # fmt: skip
    assert_one_clear_line(run("--data", sources["list"]), "give --data_root")
    assert_one_clear_line(run("--data", tmp_path / "missing.mat", "--splits", sources["splits"]), "does not exist")


def test_bts_protocol_on_a_zip_of_filled_depth_is_refused(sources, varied_checkpoint, tmp_path, capsys):
    """nyu_test.zip holds filled depth: BTS's protocol (raw depth) on it would score another ground truth
    under BTS's name. BTS's crop on it stays possible, and says which ground truth it is."""
    filled_zip = sources["root"] / "nyu_test_filled.zip"
    argv = ["--model", varied_checkpoint, "--data", filled_zip, "--output_dir", tmp_path, "--protocol", "bts"]
    assert_one_clear_line(run_script(evaluate, argv, capsys), "--protocol bts scores raw depth", "--crop eigen_bts")
    report, _ = scores(varied_checkpoint, tmp_path, capsys, "--data", filled_zip, "--crop", "eigen_bts")
    assert report["crop"] == "eigen_bts" and report["ground_truth"] == "filled" and "protocol" not in report


def test_the_labeled_mat_is_opened_by_each_process_itself(sources, monkeypatch):
    """No HDF5 handle is left open by the checks, for a forked DataLoader worker to inherit; workers read
    the pictures with handles of their own."""
    import h5py
    from torch.utils.data import DataLoader

    open_files = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    dataset = LabeledDataset(LabeledMat(sources["mat"], "--data"), [1, 3, 5], "raw")
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == open_files
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    for (image, depth_m), index in zip(loader, [1, 3, 5]):
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), sources["pictures"][index])
        np.testing.assert_array_equal(depth_m[0].numpy(), sources["raw"][index])
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == open_files
    image, depth_m = dataset.load_pair(2)  # in this process too
    np.testing.assert_array_equal(depth_m[0].numpy(), sources["raw"][5])
    handle = dataset.mat._open()
    assert dataset.mat._open() is handle  # opened once a process
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as a worker forked after a read sees it: a handle of its own
    worker_handle = dataset.mat._open()
    assert worker_handle is not handle
    handle.close(), worker_handle.close()


class CountingPair(tuple):
    """A list's pair that counts how often it is hashed (looked up in a set or dict)."""

    hashes = 0

    def __hash__(self):
        CountingPair.hashes += 1
        return tuple.__hash__(self)


def test_holding_out_pairs_of_a_bts_list_looks_nothing_up(monkeypatch):
    """Every 20th pair validates; the others train. Done by position: a set rebuilt for each pair made it
    quadratic (1.9 s for BTS's 24,231 pairs)."""
    pairs = [CountingPair((f"scene/rgb_{i:05d}.jpg", f"scene/sync_depth_{i:05d}.png")) for i in range(2000)]
    monkeypatch.setattr(nyu_sources, "read_bts_nyu_list", lambda *args: (pairs, [518.8579] * len(pairs)))
    CountingPair.hashes = 0
    train_set, val_set = nyu_sources.open_bts_sets("list.txt", None, "root", None, 20)
    assert val_set.pairs == pairs[19::20] and len(train_set) == 1900
    assert train_set.pairs == [pair for number, pair in enumerate(pairs, start=1) if number % 20]
    assert CountingPair.hashes <= len(pairs)


def test_training_flags_that_do_not_fit_the_source_are_refused(sources, tmp_path, capsys):
    """--val_data beside the labeled .mat (which validates on testNdxs) and --gt beside BTS's list (which has
    one depth) were ignored without a word."""
    argv = ["--checkpoint_dir", tmp_path, "--epochs", 1, "--batch_size", 2, "--no_pretrained"]
    result = run_script(train, ["--data_dir", sources["mat"], "--splits", sources["splits"], "--val_data",
                                sources["list"], *argv], capsys)  # fmt: skip
    assert_one_clear_line(result, "--val_data is not for --data_dir", "testNdxs")
    result = run_script(train, ["--data_dir", sources["list"], "--data_root", sources["data_root"], "--gt", "raw",
                                *argv], capsys)  # fmt: skip
    assert_one_clear_line(result, "--gt is for --data_dir nyu_depth_v2_labeled.mat")
    result = run_script(train, ["--data_dir", sources["list"], "--data_root", sources["data_root"],
                                "--val_data_root", sources["data_root"], *argv], capsys)  # fmt: skip
    assert_one_clear_line(result, "--val_data_root is the folder of --val_data's BTS list")
