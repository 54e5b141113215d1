"""The mean of a run's last epochs: the files each epoch leaves, their mean, and `keras-vit train --average_last`."""

import json
import os

import h5py
import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import averaging, cli_train
from test_resume import train


def tiny(num_layers=1, seed=0, classes=3):
    keras.utils.set_random_seed(seed)
    return keras_vit.ViT(num_layers=num_layers, hidden_size=16, mlp_dim=32, num_heads=2, patch_size=8,
                         input_shape=(16, 16, 3), classes=classes)


def saved(tmp_path, name, model):
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    return path


def differ(weights, others):
    return any(not np.allclose(a, b) for a, b in zip(weights, others))


def test_average_into_sets_each_weight_to_the_mean_of_the_files(tmp_path):
    models = [tiny(seed=seed) for seed in range(3)]
    paths = [saved(tmp_path, f"m{i}", m) for i, m in enumerate(models)]
    expected = [np.mean(ws, axis=0) for ws in zip(*(m.get_weights() for m in models))]
    target = tiny(seed=7)
    assert averaging.average_into(target, paths) is target
    for got, want, first in zip(target.get_weights(), expected, models[0].get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert got.dtype == first.dtype
    # The mean differs from each file's weights (the seeds drew different ones).
    assert differ(target.get_weights(), models[0].get_weights())


def test_average_into_refuses_a_file_of_another_model_before_changing_anything(tmp_path):
    model = tiny()
    before = [w.copy() for w in model.get_weights()]
    ours = saved(tmp_path, "ours", tiny(seed=1))
    # Keras' load_weights takes a deeper model's file of the same width without a word.
    deeper = saved(tmp_path, "deeper", tiny(num_layers=2))
    with pytest.raises(ValueError) as error:
        averaging.average_into(model, [ours, deeper])
    assert deeper in str(error.value) and f"{model.count_params():,}" in str(error.value)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="No such weights file: .*missing.weights.h5"):
        averaging.average_into(model, [ours, str(tmp_path / "missing.weights.h5")])
    with pytest.raises(ValueError, match="at least one"):
        averaging.average_into(model, [])


def test_epoch_weights_keeps_the_files_of_the_last_epochs_only(tmp_path):
    model = tiny()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype="float32")
    y = np.arange(8) % 3
    folder = str(tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="keep=0"):
        averaging.EpochWeights(folder, 0)
    model.fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[averaging.EpochWeights(folder, 2)])
    assert sorted(os.listdir(folder)) == ["epoch_003.weights.h5", "epoch_004.weights.h5"]  # no temporary file
    with h5py.File(os.path.join(folder, "epoch_004.weights.h5"), "r") as handle:
        assert "layers" in handle and "optimizer" not in handle  # the weights, not Adam's moments
    last = tiny(seed=5)
    last.load_weights(os.path.join(folder, "epoch_004.weights.h5"))
    for got, want in zip(last.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    # A fresh run in the same folder: its first epoch removes the older run's later epochs.
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[averaging.EpochWeights(folder, 2)])
    assert sorted(os.listdir(folder)) == ["epoch_001.weights.h5"]


def test_train_average_last_writes_the_mean_of_the_last_epochs_as_the_model(tmp_path):
    model, history, results = train(tmp_path, "--epochs=3", "--average_last=2")
    out = tmp_path / "out"
    checkpoints = out / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["epoch_002.weights.h5", "epoch_003.weights.h5", "latest.weights.h5"]
    files = [tiny(classes=2), tiny(classes=2)]  # the folder dataset's two classes
    for epoch, m in zip((2, 3), files):
        m.load_weights(str(checkpoints / f"epoch_{epoch:03d}.weights.h5"))
    written = keras.models.load_model(str(out / "model.keras"))
    for got, a, b in zip(written.get_weights(), *(m.get_weights() for m in files)):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert differ(files[0].get_weights(), files[1].get_weights())  # two different epochs
    assert results["averaged_epochs"] == [2, 3]
    assert json.loads((out / "eval.json").read_text())["averaged_epochs"] == [2, 3]
    assert len(history.history["loss"]) == 3
    # Not a setting of the run: a restart may keep more or fewer epochs.
    assert "average_last" not in cli_train.run_settings(cli_train._parse(["train", "--average_last=2"]))


def test_train_refuses_a_negative_average_last(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_train._parse(["train", "--average_last=-1"])
    assert exit_.value.code == 2 and "average_last" in capsys.readouterr().err


def test_average_last_takes_the_epochs_in_its_window_that_have_files(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    models = {epoch: tiny(seed=epoch) for epoch in (1, 2, 4)}  # epoch 3's file is missing
    for epoch, m in models.items():
        saved(tmp_path, f"checkpoints/epoch_{epoch:03d}", m)
    model = tiny(seed=9)
    assert averaging.average_last(model, str(folder), 3, 4) == [2, 4]
    for got, a, b in zip(model.get_weights(), models[2].get_weights(), models[4].get_weights()):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert averaging.average_last(model, str(folder), 2, 2) == [1, 2]
    before = [w.copy() for w in model.get_weights()]
    assert averaging.average_last(model, str(folder), 2, 8) == []  # none in the window: left as it is
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
