import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from data import (
    EIGEN_CROP_NYU,
    NYU_INTRINSICS,
    TEST_CSV,
    TRAIN_CSV,
    DirectoryArchive,
    EigenTestZip,
    FailedSample,
    NYUDepthDataset,
    TrainingOrder,
    ZipArchive,
    augment,
    collate_pairs,
    decode_depth_png,
    downsample_depth_m,
    encode_test_depth_png,
    encode_train_depth_png,
    open_training_data,
    read_pairs,
    write_npy_member,
)
from densedepth.protocol import scaled_eigen_crop
from rendering import scenes
from sample_data import write_sample_data
from utils import UserError


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the generated zips


def test_training_zip_has_the_nyu_layout_and_encodings(tiny_zips):
    train_zip, _ = tiny_zips
    with zipfile.ZipFile(train_zip) as archive:
        rows = archive.read(TRAIN_CSV).decode().splitlines()
        assert len(rows) == 8
        rgb_name, depth_name = rows[0].split(",")
        assert rgb_name.startswith("data/nyu2_train/") and rgb_name.endswith("_out/1.jpg")
        rgb, depth = Image.open(io.BytesIO(archive.read(rgb_name))), Image.open(io.BytesIO(archive.read(depth_name)))
        assert (rgb.format, rgb.mode, rgb.size) == ("JPEG", "RGB", (64, 48))
        assert (depth.format, depth.mode, depth.size) == ("PNG", "L", (64, 48))
        test_rows = archive.read(TEST_CSV).decode().splitlines()
        assert test_rows[0] == "data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png"
        test_rgb = Image.open(io.BytesIO(archive.read("data/nyu2_test/00000_colors.png")))
        test_depth = Image.open(io.BytesIO(archive.read("data/nyu2_test/00000_depth.png")))
        assert (test_rgb.format, test_rgb.mode) == ("PNG", "RGB")
        assert (test_depth.format, test_depth.mode) == ("PNG", "I;16")


def test_eigen_zip_arrays_and_agreement_with_the_training_zip(tiny_zips):
    train_zip, test_zip = tiny_zips
    with zipfile.ZipFile(test_zip) as archive:
        rgb = np.load(io.BytesIO(archive.read("eigen_test_rgb.npy")))
        depth = np.load(io.BytesIO(archive.read("eigen_test_depth.npy")))
        crop = np.load(io.BytesIO(archive.read("eigen_test_crop.npy")))
    assert (rgb.dtype, rgb.shape) == (np.uint8, (4, 48, 64, 3))
    assert (depth.dtype, depth.shape) == (np.float32, (4, 48, 64))
    assert list(crop) == list(scaled_eigen_crop(48, 64))
    assert 0.3 < depth.min() and depth.max() <= 10.0
    # the test split in the training zip holds the same pictures, depth in millimetres
    with zipfile.ZipFile(train_zip) as archive:
        png_rgb = np.asarray(Image.open(io.BytesIO(archive.read("data/nyu2_test/00003_colors.png"))))
        depth_mm = np.asarray(Image.open(io.BytesIO(archive.read("data/nyu2_test/00003_depth.png"))))
    assert np.array_equal(png_rgb, rgb[3])
    assert np.abs(depth_mm / 1000 - depth[3]).max() <= 0.0005


def test_generation_is_deterministic(tmp_path, tiny_zips):
    again = write_sample_data(tmp_path / "again", 8, 4, 64, 48, 4, seed=0, workers=2)
    other = write_sample_data(tmp_path / "other", 8, 4, 64, 48, 4, seed=1, workers=1)
    assert [sha256(p) for p in again] == [sha256(p) for p in tiny_zips]
    assert sha256(other[0]) != sha256(tiny_zips[0])


def test_eigen_crop_scales_from_480x640():
    assert scaled_eigen_crop(480, 640) == EIGEN_CROP_NYU == (20, 459, 24, 615)
    assert scaled_eigen_crop(240, 320) == (10, 229, 12, 307)


# ----------------------------------------------------------------------------- the renderer


def empty_room_camera(width=64, height=48):
    scene = scenes.Scene(np.random.default_rng(0), "bedroom")
    scene.pieces, scene.primitives, scene.first_part_index = [], [], []
    scene.room.size = np.float32([5.0, 2.8, 7.0])  # width, height, depth
    position = (2.5, 1.2, 1.0)
    flip = np.diag([1.0, -1.0, 1.0]).astype(np.float32)  # level camera looking along +z
    return scene, scenes.Camera(position, flip, width, height)


def test_rendered_depth_is_exact_z_depth():
    scene, camera = empty_room_camera(640, 480)
    _, t, hit_id = scenes.trace(scene, camera)
    depth = t.reshape(480, 640)
    # the far wall is parallel to the image plane: the same z-depth wherever it is seen
    far_wall = depth[200:300, 250:400]
    assert np.allclose(far_wall, 6.0, atol=1e-4)
    # floor below the horizon: z = camera height * fy / (v - cy)
    row = 470
    _, fy, _, cy = NYU_INTRINSICS
    assert depth[row, 320] == pytest.approx(1.2 * fy / (row - cy), rel=1e-4)
    assert (hit_id == -1).all()


def test_rays_parallel_to_walls_still_hit_the_room():
    scene, _ = empty_room_camera()
    dirs = np.float32([[0.0, 1.0, 0.0, 0.3], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # columns are rays
    t = scene.room.intersect(np.float32([2.5, 1.2, 1.0]), dirs)
    assert np.allclose(t, [6.0, 2.5, 1.2, 2.5 / 0.3])


def test_rendered_depth_is_finite_and_in_range_everywhere():
    for scene_index in range(3):
        _, frames = scenes.render_scene(7, 0, scene_index, 2, 160, 120)
        for rgb, depth_m in frames:
            assert np.isfinite(depth_m).all() and depth_m.min() > 0.3 and depth_m.max() <= 10
            assert rgb.dtype == np.uint8 and rgb.shape == (120, 160, 3)


def test_rendered_pictures_carry_a_perspective_cue(tiny_zips):
    """Over many views, lower rows (floor, near furniture) are nearer than the middle of the picture."""
    _, test_zip = tiny_zips
    rgb, depth = next(EigenTestZip(test_zip).batches(4))
    assert (np.median(depth[:, -6:], axis=(1, 2)) < np.median(depth[:, 20:28], axis=(1, 2))).all()
    assert rgb.std() > 20  # textured and shaded, not flat


# ----------------------------------------------------------------------------- reading


def test_depth_png_encodings():
    depth_m = np.array([[0.0, 1.0, 5.0, 10.0]], dtype=np.float32)
    eight_bit = decode_depth_png(encode_train_depth_png(depth_m))
    assert torch.allclose(eight_bit, torch.tensor([[[0.0, 1.0, 5.0, 10.0]]]), atol=10 / 255 / 2)
    assert decode_depth_png(encode_train_depth_png(np.full((1, 1), 10.0)))[0, 0, 0] == 10.0  # 255 means 10 m
    sixteen_bit = decode_depth_png(encode_test_depth_png(np.array([[1.234, 0.5]])))
    assert torch.allclose(sixteen_bit, torch.tensor([[[1.234, 0.5]]]))


def test_csv_with_crlf_and_blank_lines(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("a.jpg", "a.png", "b.jpg", "b.png"):
        (tmp_path / "data" / name).write_bytes(b"")
    (tmp_path / TRAIN_CSV).write_bytes(b"data/a.jpg,data/a.png\r\ndata/b.jpg,data/b.png\r\n\r\n")
    assert read_pairs(DirectoryArchive(tmp_path), TRAIN_CSV) == [
        ("data/a.jpg", "data/a.png"),
        ("data/b.jpg", "data/b.png"),
    ]
    (tmp_path / TRAIN_CSV).write_text("data/a.jpg;data/a.png\n")
    with pytest.raises(UserError, match="line 1"):
        read_pairs(DirectoryArchive(tmp_path), TRAIN_CSV)


def test_training_data_from_zip_extracted_folder_or_folder_with_the_zip(tiny_zips, tmp_path):
    train_zip, _ = tiny_zips
    with zipfile.ZipFile(train_zip) as archive:
        archive.extractall(tmp_path / "extracted")
    (tmp_path / "holder").mkdir()
    (tmp_path / "holder" / "nyu_data.zip").write_bytes(train_zip.read_bytes())
    sources = [
        open_training_data(train_zip),
        open_training_data(tmp_path / "extracted"),
        open_training_data(tmp_path / "holder"),
    ]
    assert [type(s) for s in sources] == [ZipArchive, DirectoryArchive, ZipArchive]
    first = [s.read(read_pairs(s, TRAIN_CSV)[0][0]) for s in sources]
    assert first[0] == first[1] == first[2]
    with pytest.raises(UserError, match="does not exist"):
        open_training_data(tmp_path / "nowhere.zip")


def test_training_samples_shapes_units_and_augmentation(tiny_zips):
    archive = open_training_data(tiny_zips[0])
    dataset = NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=True)
    image, depth_m = dataset[0]
    assert image.shape == (3, 48, 64) and depth_m.shape == (1, 48, 64)  # as stored; resized on the device
    assert image.dtype == torch.uint8 and image.max() > 0
    assert 0 <= depth_m.min() and depth_m.max() <= 10
    original, _ = NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=False)[0]
    unchanged = []
    for seed in range(16):
        torch.manual_seed(seed)
        unchanged.append(torch.equal(dataset[0][0], original))
    assert any(unchanged) and not all(unchanged)  # p = 0.25 of neither flip nor permutation


def test_training_order_depends_on_seed_and_epoch_alone_and_starts_mid_epoch():
    order = TrainingOrder(10, seed=3, batch_size=1)
    order.start(epoch=2)
    epoch_two = list(order)
    assert sorted(index for index, _ in epoch_two) == list(range(10)) and len(order) == 10
    assert list(TrainingOrder(10, seed=3, batch_size=1)) != epoch_two  # epoch 1 differs
    again = TrainingOrder(10, seed=3, batch_size=1)
    again.start(epoch=2, samples_done=4)
    assert list(again) == epoch_two[4:] and len(again) == 6
    other_seed = TrainingOrder(10, seed=4, batch_size=1)
    other_seed.start(epoch=2)
    assert list(other_seed) != epoch_two
    whole_batches = TrainingOrder(10, seed=3, batch_size=4)
    whole_batches.start(epoch=2)
    assert list(whole_batches) == epoch_two[:8] and whole_batches.steps_per_epoch == 2  # the partial batch dropped


@pytest.mark.parametrize("world_size", [2, 3])
def test_processes_share_each_global_batch_and_resume_with_another_count(world_size):
    """Each global batch of 6 is split over the processes in rank order; resuming at sample 6
    with another number of processes goes on with the same batches."""
    one = TrainingOrder(20, seed=1, batch_size=6)
    one.start(epoch=3)
    batches = [list(one)[start : start + 6] for start in range(0, 18, 6)]
    shares = []
    for rank in range(world_size):
        order = TrainingOrder(20, seed=1, batch_size=6, rank=rank, world_size=world_size)
        order.start(epoch=3, samples_done=6)
        assert len(order) == 2 * 6 // world_size
        items = list(order)
        shares.append([items[start : start + 6 // world_size] for start in range(0, len(items), 6 // world_size)])
    for step, batch in enumerate(batches[1:]):
        assert [item for share in shares for item in share[step]] == batch
    with pytest.raises(ValueError, match="does not split"):
        TrainingOrder(20, seed=1, batch_size=6, rank=0, world_size=4)


def test_an_augmentation_seed_gives_the_same_sample_anywhere(tiny_zips):
    archive = open_training_data(tiny_zips[0])
    dataset = NYUDepthDataset(archive, read_pairs(archive, TRAIN_CSV), augment=True)
    samples = [dataset[(0, seed)] for seed in range(12)]
    torch.manual_seed(123)  # the global generator plays no part
    assert all(torch.equal(a[0], b[0]) for a, b in zip(samples, [dataset[(0, seed)] for seed in range(12)]))
    assert len({bytes(image.numpy()) for image, _ in samples}) > 1


def test_pairs_that_fail_are_left_out_of_the_batch_and_other_sizes_resized(tiny_zips, tmp_path):
    archive = open_training_data(tiny_zips[0])
    pairs = read_pairs(archive, TRAIN_CSV)
    (tmp_path / "data").mkdir()
    rgb_name, depth_name = pairs[0]
    for index in range(2):
        image = Image.open(io.BytesIO(archive.read(rgb_name)))
        depth = Image.open(io.BytesIO(archive.read(depth_name)))
        if index == 1:  # the same pair at twice the size
            image, depth = image.resize((128, 96)), depth.resize((128, 96), Image.Resampling.NEAREST)
        image.save(tmp_path / f"data/{index}.jpg", quality=95)
        depth.save(tmp_path / f"data/{index}.png")
    (tmp_path / "data/bad.jpg").write_bytes(b"not a picture")
    rows = ["data/0.jpg,data/0.png", "data/1.jpg,data/1.png", "data/bad.jpg,data/0.png"]
    (tmp_path / TRAIN_CSV).write_text("\n".join(rows))
    folder = DirectoryArchive(tmp_path)
    dataset = NYUDepthDataset(folder, read_pairs(folder, TRAIN_CSV), augment=False)
    failed = dataset[2]
    assert isinstance(failed, FailedSample) and failed.names == ("data/bad.jpg", "data/0.png")
    assert failed.reason.startswith("data/bad.jpg does not decode as a picture")
    images, depth_m, failures = collate_pairs([dataset[0], dataset[1], dataset[2]])
    assert images.shape == (2, 3, 48, 64) and depth_m.shape == (2, 1, 48, 64) and failures == [failed]
    assert (depth_m[1] - depth_m[0]).abs().mean() < 0.1  # the same scene, resized back
    assert collate_pairs([failed]) == (None, None, [failed])


def test_augmentation_flips_image_and_depth_together_and_permutes_channels():
    image = torch.zeros(3, 4, 6)
    image[0, :, :3] = 1.0  # red on the left
    depth_m = torch.ones(1, 4, 6)
    depth_m[:, :, :3] = 0.5  # the left is near
    flips = permutations = 0
    torch.manual_seed(0)
    for _ in range(200):
        out_image, out_depth = augment(image, depth_m)
        lit = out_image.sum(0) > 0
        assert torch.equal(lit, out_depth[0] == 0.5)  # the red side is the near side
        flips += bool(lit[0, -1])
        permutations += not torch.equal(out_image.sum((1, 2)), image.sum((1, 2)))
        assert sorted(out_image.sum((1, 2)).tolist()) == sorted(image.sum((1, 2)).tolist())
    assert 70 < flips < 130 and 40 < permutations < 110  # p = 0.5 each; 2/3 of permutations move red


def test_target_downsampling_keeps_constant_depth_and_averages_in_target_space():
    assert torch.allclose(downsample_depth_m(torch.full((2, 1, 8, 8), 2.5), (4, 4)), torch.full((2, 1, 4, 4), 2.5))
    halves = torch.tensor([[1.0, 4.0]]).repeat_interleave(2, 1).repeat(2, 1)[None, None]  # 1 m | 4 m, 2x4
    # y = 1000 / depth_cm: mean of 10 and 2.5 is 6.25, i.e. 1.6 m (not the metric mean, 2.5 m)
    assert torch.allclose(downsample_depth_m(halves, (1, 1)), torch.tensor(1.6))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_eigen_zip_is_streamed_in_order(tmp_path, compression):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9, (5, 8, 12)).astype(np.float32)
    path = tmp_path / "test.zip"
    with zipfile.ZipFile(path, "w", compression) as archive:
        write_npy_member(archive, "eigen_test_rgb.npy", rgb)
        write_npy_member(archive, "eigen_test_depth.npy", depth)
        write_npy_member(archive, "eigen_test_crop.npy", np.array([1, 6, 2, 9]))
    test_set = EigenTestZip(path)
    assert (len(test_set), test_set.rgb_shape[1:3], test_set.crop) == (5, (8, 12), (1, 6, 2, 9))
    batches = list(test_set.batches(2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert np.array_equal(np.concatenate([b[0] for b in batches]), rgb)
    assert np.array_equal(np.concatenate([b[1] for b in batches]), depth)


def test_eigen_zip_missing_an_array_is_refused(tmp_path):
    path = tmp_path / "test.zip"
    with zipfile.ZipFile(path, "w") as archive:
        write_npy_member(archive, "eigen_test_rgb.npy", np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="eigen_test_depth.npy"):
        EigenTestZip(path)
