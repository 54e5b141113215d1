"""Catalogue downloads through keras.utils.get_file from file:// origins, into $KERAS_VIT_HOME."""

import hashlib
import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints, download
from test_checkpoints import TINY, numpy_vit, official_params


@pytest.fixture
def origin(tmp_path, monkeypatch):
    """A tiny official checkpoint served from a file:// URL under a test catalogue name."""
    home = tmp_path / "cache"
    monkeypatch.setenv("KERAS_VIT_HOME", str(home))
    params = official_params(np.random.default_rng(0))
    source = tmp_path / "origin" / "tiny.npz"
    source.parent.mkdir()
    np.savez(source, **params)
    entry = dict(checkpoints.WEIGHTS["vit_ti16_augreg_in21k_ft_in1k_224"])
    entry.update(name="test_tiny", variant="tiny", url=source.as_uri(), size=source.stat().st_size,
                 size_exact=True, image_size=32, classes=10)
    monkeypatch.setitem(checkpoints.WEIGHTS, "test_tiny", entry)
    return {"home": home, "source": source, "params": params, "entry": entry}


def build(**kwargs):
    return keras_vit.ViT(**TINY, input_shape=(32, 32, 3), classes=10, classifier_activation=None, **kwargs)


def cache_listing(home):
    return sorted(os.listdir(home)) if home.exists() else []


def test_download_caches_records_sha256_and_loads(origin):
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model = build(weights="test_tiny")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), numpy_vit(origin["params"], images), atol=1e-4)
    assert cache_listing(origin["home"]) == ["test_tiny.npz", "test_tiny.npz.sha256"]
    digest = hashlib.sha256(origin["source"].read_bytes()).hexdigest()
    assert (origin["home"] / "test_tiny.npz.sha256").read_text().split()[0] == digest
    # Later uses read the cache: the origin may disappear.
    origin["source"].unlink()
    keras_vit.load_weights(build(), "test_tiny")


def test_a_changed_cached_file_is_replaced(origin):
    path = download.fetch(origin["entry"])
    data = bytearray(open(path, "rb").read())
    data[-200] ^= 0xFF  # same size, different bytes: only the recorded sha256 can tell
    open(path, "wb").write(bytes(data))
    path = download.fetch(origin["entry"])
    assert open(path, "rb").read() == origin["source"].read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "not_a_checkpoint", "wrong_sha256", "offline"])
def test_bad_downloads_leave_nothing_in_the_cache(origin, damage):
    entry = origin["entry"]
    data = origin["source"].read_bytes()
    if damage == "truncate":
        origin["source"].write_bytes(data[: len(data) // 2])
        message = "has the wrong size"
    elif damage == "not_a_checkpoint":
        origin["source"].write_bytes(b"x" * len(data))
        message = "Not a readable .npz"
    elif damage == "wrong_sha256":
        entry["sha256"] = "0" * 64
        message = "is corrupt: sha256"
    else:
        origin["source"].unlink()
        message = "Could not download the weights 'test_tiny' from file://"
    with pytest.raises((OSError, ValueError)) as error:
        build(weights="test_tiny")
    assert message in str(error.value)
    if damage == "offline":  # the error says where to put the file by hand, and the alternative
        assert str(origin["home"] / "test_tiny.npz") in str(error.value)
        assert "weights='/path/to/file'" in str(error.value)
    assert cache_listing(origin["home"]) == []


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("KERAS_VIT_HOME", raising=False)
    assert download.cache_dir() == os.path.join(os.path.expanduser("~"), ".keras", "models", "keras_vit")


def test_a_file_placed_by_hand_is_used_and_hashed(origin):
    origin["home"].mkdir()
    placed = origin["home"] / "test_tiny.npz"
    placed.write_bytes(origin["source"].read_bytes())
    origin["source"].unlink()  # offline
    keras_vit.load_weights(build(), "test_tiny")
    assert cache_listing(origin["home"]) == ["test_tiny.npz", "test_tiny.npz.sha256"]
    placed.write_bytes(b"short")
    with pytest.raises(ValueError, match="has the wrong size"):
        keras_vit.load_weights(build(), "test_tiny")
    assert placed.exists()  # a hand-placed file is reported, not deleted
