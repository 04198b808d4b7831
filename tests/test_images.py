"""keras_fewshot.data.images and .labelled: your own image folders, checked and converted."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_fewshot.data import LabelledImages, read_image_folder, read_images

CLASSES = {"zebra": 3, "apple": 4, "mango": 2}  # sorted: apple, mango, zebra


def png(array):
    return tf.io.encode_png(np.asarray(array, np.uint8)).numpy()


@pytest.fixture
def folder(tmp_path, write_image_folder):
    """(root, {class: [images]}) of a 3-class RGB folder, 12x10 images."""
    written = write_image_folder(tmp_path / "data", CLASSES)
    return tmp_path / "data", written


def test_folder_reads_every_image_with_its_class(folder):
    root, written = folder
    (root / ".DS_Store").write_bytes(b"junk")  # hidden files and files beside the classes
    (root / "apple" / ".hidden.png").write_bytes(b"junk")  # are not read
    (root / "README.txt").write_text("not a class")
    data = read_image_folder(root)
    assert data.class_names == ("apple", "mango", "zebra")
    assert data.images.dtype == np.uint8 and data.images.shape == (9, 12, 10, 3)
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 0, 1, 1, 2, 2, 2])
    expected = np.stack(written["apple"] + written["mango"] + written["zebra"])
    np.testing.assert_array_equal(data.images, expected)  # PNG is lossless
    np.testing.assert_array_equal(data.groups, [0, 0, 0])


def test_channels_conversion_matches_numpy(tmp_path, rng):
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 7, np.uint8)], axis=-1)
    for name, image in (("rgb", rgb), ("gray", gray), ("rgba", rgba)):
        (tmp_path / f"{name}.png").write_bytes(png(image))
    as_gray = read_images([tmp_path / "rgb.png", tmp_path / "gray.png"], channels=1)
    np.testing.assert_array_equal(as_gray[0], np.round(rgb.mean(-1, keepdims=True)))
    np.testing.assert_array_equal(as_gray[1], gray)
    as_rgb = read_images([tmp_path / "gray.png", tmp_path / "rgba.png"], channels=3)
    np.testing.assert_array_equal(as_rgb[0], np.repeat(gray, 3, axis=-1))
    np.testing.assert_array_equal(as_rgb[1], rgb)  # alpha dropped
    with pytest.raises(ValueError, match=r"rgba\.png has 4 channels .*pass channels=1 or 3"):
        read_images([tmp_path / "rgba.png"])


def test_image_size_resizes_by_area(tmp_path, rng):
    blocks = rng.integers(0, 256, (3, 2, 1), dtype=np.uint8)
    image = np.kron(blocks, np.ones((4, 4, 1), np.uint8))  # 12x8, constant 4x4 blocks
    (tmp_path / "a.png").write_bytes(png(image))
    small = read_images([tmp_path / "a.png"], image_size=4)[0]
    # area interpolation to 4x4: each output pixel averages a 3x2 patch of the 12x8 image
    expected = image.astype(np.float64).reshape(4, 3, 4, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(small[..., 0], np.round(expected))


def test_jpeg_gif_and_bmp_are_read(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = (200, 40, 40)
    for fmt in ("JPEG", "GIF", "BMP"):
        buffer = io.BytesIO()
        options = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
        Image.fromarray(image).save(buffer, format=fmt, **options)
        (tmp_path / f"x.{fmt.lower()}").write_bytes(buffer.getvalue())
        (decoded,) = read_images([tmp_path / f"x.{fmt.lower()}"])
        assert decoded.shape == (8, 8, 3), fmt
        np.testing.assert_allclose(decoded.astype(int), image.astype(int), atol=8,
                                   err_msg=fmt)  # JPEG is lossy


def test_non_image_and_broken_files_are_named(folder):
    root, _ = folder
    (root / "mango" / "notes.txt").write_text("a note")
    with pytest.raises(ValueError, match=r"Cannot read .*mango/notes\.txt as an image"):
        read_image_folder(root)
    (root / "mango" / "notes.txt").unlink()
    (root / "apple" / "cut.png").write_bytes(png(np.zeros((12, 10, 3)))[:40])
    with pytest.raises(ValueError, match=r"Cannot read .*apple/cut\.png as an image"):
        read_image_folder(root)


def test_mixed_channels_are_refused_unless_converted(folder, rng):
    root, _ = folder
    (root / "zebra" / "gray.png").write_bytes(png(rng.integers(0, 256, (12, 10, 1))))
    with pytest.raises(ValueError, match=r"Mixed channel counts: .*apple/000\.png has 3, "
                                         r".*zebra/gray\.png has 1; pass channels=1 or 3"):
        read_image_folder(root)
    assert read_image_folder(root, channels=1).images.shape == (10, 12, 10, 1)


def test_mixed_sizes_are_refused_unless_resized(folder, rng):
    root, _ = folder
    (root / "mango" / "big.png").write_bytes(png(rng.integers(0, 256, (20, 20, 3))))
    with pytest.raises(ValueError, match=r"Images differ in size: .*apple/000\.png is 12x10, "
                                         r".*mango/big\.png is 20x20; pass image_size"):
        read_image_folder(root)
    assert read_image_folder(root, image_size=7).images.shape == (10, 7, 7, 3)


def test_folder_layout_errors(tmp_path, write_image_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png(np.zeros((4, 4, 1))))
    with pytest.raises(ValueError, match=r"no class sub-folders.*<class name>/<image files>"):
        read_image_folder(tmp_path / "flat")
    write_image_folder(tmp_path / "nested", {"a": 2})
    (tmp_path / "nested" / "b").mkdir()
    with pytest.raises(ValueError, match=r"Class folder .*nested/b has no images"):
        read_image_folder(tmp_path / "nested")
    (tmp_path / "nested" / "a" / "deeper").mkdir()
    with pytest.raises(ValueError, match=r"a/deeper is a folder inside the class folder"):
        read_image_folder(tmp_path / "nested")
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        read_image_folder(tmp_path / "nested", channels=2)


def labelled(counts):
    labels = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    return LabelledImages(images, labels, tuple(f"c{i}" for i in range(len(counts))),
                          np.arange(len(counts), dtype=np.int32) * 10)


def test_select_classes_relabels_in_the_given_order():
    data = labelled([2, 3, 1, 2])
    picked = data.select_classes([3, 1])
    assert picked.class_names == ("c3", "c1")
    np.testing.assert_array_equal(picked.groups, [30, 10])
    for image, label in zip(picked.images[:, 0, 0, 0], picked.labels):
        assert data.labels[image] == [3, 1][label]  # each image keeps its class
    assert sorted(picked.images[:, 0, 0, 0]) == [2, 3, 4, 6, 7]


def test_check_episodes_names_the_problem():
    data = labelled([6, 2, 6, 5])
    data.check_episodes(4, 1, 1)
    with pytest.raises(ValueError, match=r"the data has 4 classes; 5-way episodes need at "
                                         r"least 5"):
        data.check_episodes(5, 1, 1)
    with pytest.raises(ValueError, match=r"1-shot 5-query episodes need 6 examples per class; "
                                         r"in mine, 'c1' \(2\), 'c3' \(5\) have fewer"):
        data.check_episodes(3, 1, 5, what="mine")
