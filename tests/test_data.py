"""Input pipelines: idx files, folders, shapes, ranges, determinism, grayscale, sharding."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import data, sources


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype("uint8").tobytes())


def fake_fashion_mnist(root, n=12):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28)).astype("uint8")
    labels = (np.arange(n) % 10).astype("uint8")
    for split, (img_name, lbl_name) in sources._FASHION_MNIST_FILES.items():
        write_idx(os.path.join(root, img_name + ".gz"), images)
        write_idx(os.path.join(root, lbl_name + ".gz"), labels)
    return images, labels


def gray_dataset(n=8, size=28, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 1)).astype("uint8")
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(n) % 10}), images


def batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_read_idx_round_trip_and_bad_header(tmp_path):
    array = np.arange(24, dtype="uint8").reshape(2, 3, 4)
    write_idx(str(tmp_path / "a-idx3-ubyte.gz"), array)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "a-idx3-ubyte.gz")), array)
    (tmp_path / "bad").write_bytes(bytes([1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="bytes 0, 0, 8"):
        data.read_idx(str(tmp_path / "bad"))
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1]))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(str(tmp_path / "short"))


def test_load_fashion_mnist_from_data_dir(tmp_path):
    images, labels = fake_fashion_mnist(str(tmp_path))
    x, y = data.load_fashion_mnist("test", data_dir=str(tmp_path))
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(FileNotFoundError, match="Received: data_dir="):
        data.load_fashion_mnist("train", data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="split='val'"):
        data.load_fashion_mnist("val")
    assert len(data.FASHION_MNIST_CLASSES) == 10 and data.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_real_fashion_mnist_files():
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (10_000, 28, 28, 1)
    assert np.bincount(y).tolist() == [1000] * 10


def test_train_pipeline_shapes_ranges_and_gray_to_rgb():
    source, _ = gray_dataset()
    x, y = batches(data.pipeline(source, 32, 4, 10, training=True, seed=1))[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (4,)
    assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 100
    # Grayscale is repeated, not converted with weights: R == G == B.
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    single = batches(data.pipeline(source, 28, 4, 10, channels=1))[0][0]
    assert single.shape == (4, 28, 28, 1)


def test_training_is_deterministic_per_seed_and_varies_by_epoch():
    source, _ = gray_dataset()
    a = data.pipeline(source, 28, 4, 10, training=True, seed=7)
    b = data.pipeline(source, 28, 4, 10, training=True, seed=7)
    c = data.pipeline(source, 28, 4, 10, training=True, seed=8)
    first_a, first_b, first_c = batches(a), batches(b), batches(c)
    for (xa, ya), (xb, yb) in zip(first_a, first_b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(first_a, first_c))
    second_a = batches(a)  # the next epoch: another order and other crops
    assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(first_a, second_a))


def test_a_numbered_pass_depends_on_its_number_and_the_seed_alone():
    source, _ = gray_dataset(n=16)

    def numbered(epoch, seed=7, **kwargs):
        return batches(data.pipeline(source, 28, 4, 10, training=True, seed=seed, epoch=epoch, **kwargs))

    for kwargs in (dict(), dict(area_range=None, translate=3)):  # per-image crops; shifts and per-batch flips
        third = numbered(3, **kwargs)
        # Built again, in another pipeline, after other passes were drawn: the same batches.
        numbered(0, **kwargs)
        for (x1, y1), (x2, y2) in zip(third, numbered(3, **kwargs)):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
        assert sorted(np.concatenate([y for _, y in third]).tolist()) == sorted(np.arange(16) % 10)  # one pass
        for other in (numbered(4, **kwargs), numbered(3, seed=8, **kwargs)):
            assert not all(np.array_equal(y1, y2) for (_, y1), (_, y2) in zip(third, other))
            assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(third, other))


def test_passes_resumed_at_any_batch_go_on_with_the_same_batches():
    source, _ = gray_dataset(n=12)

    def make_pass(k):
        return data.pipeline(source, 28, 4, 10, training=True, seed=3, epoch=k, translate=2, area_range=None)

    whole = batches(data.passes(make_pass, 3).take(10))  # passes 0-2 and the first batch of pass 3
    for start in (0, 2, 3, 7):  # within the first pass, at a pass's start, within a later pass
        resumed = batches(data.passes(make_pass, 3, start_batch=start).take(10 - start))
        assert len(resumed) == 10 - start
        for (x1, y1), (x2, y2) in zip(whole[start:], resumed):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    # Each pass is a new order of all twelve images.
    orders = [np.concatenate([y for _, y in whole[3 * k:3 * k + 3]]) for k in range(3)]
    assert all(sorted(o.tolist()) == sorted(np.arange(12) % 10) for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    with pytest.raises(ValueError, match="batches_per_pass=0"):
        data.passes(make_pass, 0)


def test_eval_resizes_the_whole_image_without_crop():
    source, images = gray_dataset(n=2)
    x, y = batches(data.pipeline(source, 56, 2, 10, training=False))[0]
    expected = tf.image.resize(images.astype("float32"), (56, 56)).numpy()
    np.testing.assert_allclose(x[..., :1], expected, atol=1e-4)
    np.testing.assert_array_equal(y, [0, 1])


def test_eval_arrays_are_the_evaluation_inputs_as_numpy():
    images, labels = data.load_fashion_mnist("test")
    source = tf.data.Dataset.from_tensor_slices({"image": images[:300], "label": labels[:300]})
    x, y = data.eval_arrays(source, 56, batch_size=128)  # three batches, the last one short
    assert x.dtype == np.float32 and x.shape == (300, 56, 56, 3) and y.tolist() == labels[:300].tolist()
    expected = tf.image.resize(images[:300].astype("float32"), (56, 56), "bilinear").numpy()
    np.testing.assert_array_equal(x, np.repeat(expected, 3, axis=-1))
    x28, _ = data.eval_arrays(source, 28, channels=1)
    np.testing.assert_array_equal(x28, images[:300].astype("float32"))
    with pytest.raises(ValueError, match="no images"):
        data.eval_arrays(source.take(0), 28)


def test_translate_shifts_whole_images_by_at_most_n_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 12, 12, 1)).astype("uint8")  # no zero pixels: padding shows
    source = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.zeros(64, "int64")})
    shifted, _ = batches(data.pipeline(source, 12, 64, 10, training=True, area_range=None, flip=False,
                                       translate=2, shuffle_buffer=1))[0]
    seen = set()
    for original, out in zip(images[..., 0].astype("float32"), shifted[..., 0]):
        padded = np.pad(original, 2)
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(padded[dy:dy + 12, dx:dx + 12], out)]
        assert matches, "every output is the image moved by at most 2 pixels, zeros filling in"
        seen.add(matches[0])
    assert len(seen) > 5, "the shifts vary from image to image"


def test_flips_without_crops_are_drawn_per_image_on_whole_batches():
    source, images = gray_dataset(n=32)
    originals = images.astype("float32")

    def make():
        return data.pipeline(source, 28, 32, 10, training=True, area_range=None, shuffle_buffer=1, seed=3)

    pipeline, epochs, flipped = make(), [], []
    for _ in range(2):
        (x, y), = batches(pipeline)
        np.testing.assert_array_equal(y, np.arange(32) % 10)
        mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(x[..., :1], originals)]
        kept = [np.array_equal(out, image) for out, image in zip(x[..., :1], originals)]
        assert all(m != k for m, k in zip(mirrored, kept)), "each image is itself or its mirror"
        epochs.append(x)
        flipped.append(mirrored)
    assert 4 < sum(flipped[0]) < 28, "flips are drawn image by image"
    assert flipped[0] != flipped[1], "and anew each epoch"
    np.testing.assert_array_equal(batches(make())[0][0], epochs[0])  # the same seed, the same flips


def test_inception_crop_zooms_in():
    # A horizontal ramp: a small crop covers a narrow band of values.
    ramp = np.tile(np.linspace(0, 255, 64, dtype="float32")[None, :, None], (64, 1, 1))
    spans = []
    for s in range(10):
        crop = data.inception_crop(ramp, (64, 64), seed=[s, 0], area_range=(0.05, 0.1)).numpy()
        spans.append(crop.max() - crop.min())
    assert max(spans) < 150  # The whole image spans 255.
    full = data.inception_crop(ramp, (64, 64), seed=[0, 0], area_range=(1.0, 1.0)).numpy()
    assert full.max() - full.min() > 250


def test_mixup_cutmix_randaugment_give_soft_labels_in_range():
    source, _ = gray_dataset(n=16)
    ds = data.pipeline(source, 28, 8, 10, training=True, randaugment=True, mixup=0.8, cutmix=1.0, seed=3)
    x, y = batches(ds)[0]
    assert x.shape == (8, 28, 28, 3) and 0 <= x.min() and x.max() <= 255
    assert y.shape == (8, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    assert (y.max(-1) < 1.0).any()  # Some labels were mixed.


def test_sharding_splits_the_data_between_input_pipelines():
    source, _ = gray_dataset(n=8)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
        seen.append(np.concatenate([y for _, y in batches(data.pipeline(source, 28, 2, 10, input_context=context))]))
    assert sorted(np.concatenate(seen).tolist()) == list(range(8))
    assert set(seen[0]).isdisjoint(seen[1])


def test_image_folder_mixed_modes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for name, channels in (("cat", 1), ("dog", 3)):
        os.makedirs(tmp_path / name)
        for i in range(3):
            pixels = rng.integers(0, 256, (20 + i, 24, channels)).astype("uint8")
            (tmp_path / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset, names = data.load(str(tmp_path))
    assert names == ["cat", "dog"]
    x, y = batches(data.pipeline(dataset, 16, 6, 2))[0]
    assert x.shape == (6, 16, 16, 3)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="missing \\['bird'\\]"):
        data.image_folder(str(tmp_path), class_names=["cat", "bird"])
    with pytest.raises(ValueError, match="existing folder"):
        data.image_folder(str(tmp_path / "nope"))


def test_bad_label_mode():
    source, _ = gray_dataset()
    with pytest.raises(ValueError, match="label_mode='sparse'"):
        data.pipeline(source, 28, 2, 10, label_mode="sparse")
