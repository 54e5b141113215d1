"""Runs in a folder: a finished run's command starts anew, an unfinished one refuses other settings.

The kill-and-resume case itself is in test_distribute.py.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_vit import cli_train, resume
from test_distribute import TINY_FLAGS, write_folder_dataset


def train(tmp_path, *extra, callbacks=(), out="out"):
    folder = tmp_path / "images"
    if not folder.exists():
        write_folder_dataset(str(folder), per_class=8)
    values = cli_train._parse(["train", f"--dataset={folder}", "--eval_split=none", "--epochs=2",
                               f"--output_dir={tmp_path / out}", *TINY_FLAGS, *extra])
    return cli_train.run(values, callbacks=callbacks)


class Crash(keras.callbacks.Callback):
    """Stops the run after epoch `after` was backed up, as a killed process would."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise RuntimeError("crash")


def test_a_resumed_run_trains_on_the_batches_of_a_run_that_never_stopped(tmp_path):
    # Translations and flips make every pass over the 16 images different.
    flags = ("--epochs=4", "--translate=2", "--flip")
    _, whole, _ = train(tmp_path, *flags, out="whole")
    with pytest.raises(RuntimeError, match="crash"):
        train(tmp_path, *flags, out="stopped", callbacks=[Crash(after=2)])
    assert resume.finished_epochs(str(tmp_path / "stopped")) == 2
    _, resumed, _ = train(tmp_path, *flags, out="stopped")
    # Epochs 3 and 4 start from the backed-up weights and optimizer state and see passes 2 and 3 of the data,
    # not pass 0 again: the same losses as the run that never stopped (to float rounding).
    assert len(resumed.history["loss"]) == 4
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-5)


def test_a_finished_run_started_again_trains_anew(tmp_path):
    out = tmp_path / "out"
    _, first, _ = train(tmp_path)
    assert len(first.history["loss"]) == 2 and "val_loss" not in first.history  # no evaluation
    assert not (out / "backup").exists()  # done: nothing to resume
    _, second, _ = train(tmp_path)
    # A fresh run of two epochs, not a "resumed" run with nothing left to train.
    assert len(second.history["loss"]) == 2
    assert json.loads((out / "history.json").read_text())["loss"] == second.history["loss"]
    assert len((out / resume.HISTORY_FILE).read_text().strip().split("\n")) == 1 + 2  # header + epochs


def test_an_unfinished_run_refuses_other_settings_and_resumes_with_its_own(tmp_path):
    out = tmp_path / "out"
    backup = out / "backup"
    settings = {"epochs": 4, "learning_rate": 1e-3, "dataset": "fashion_mnist"}
    callbacks = resume.callbacks(str(out), settings)
    assert json.loads((backup / resume.SETTINGS_FILE).read_text()) == settings
    assert [type(c).__name__ for c in callbacks] == ["CSVLogger", "BackupAndRestore", "ModelCheckpoint"]

    # An epoch was backed up (the file BackupAndRestore writes with the weights).
    (backup / "training_metadata.json").write_text('{"epoch": 1}')
    with pytest.raises(ValueError) as error:
        resume.callbacks(str(out), {**settings, "epochs": 5, "learning_rate": 2e-3})
    message = str(error.value)
    assert "epochs=4 (now 5)" in message and "learning_rate=0.001 (now 0.002)" in message
    assert str(backup) in message and "dataset" not in message
    # Nothing was changed by the refusal; the same settings resume.
    assert json.loads((backup / resume.SETTINGS_FILE).read_text()) == settings
    assert len(resume.callbacks(str(out), dict(settings))) == 3

    # Without a backed-up epoch there is nothing to lose: new settings start a new run.
    os.remove(backup / "training_metadata.json")
    resume.callbacks(str(out), {**settings, "epochs": 5})
    assert json.loads((backup / resume.SETTINGS_FILE).read_text())["epochs"] == 5


def test_a_run_backed_up_before_a_setting_existed_resumes_while_it_stays_at_its_default(tmp_path):
    out = tmp_path / "out"
    backup = out / "backup"
    old = {"epochs": 4, "translate": 2}
    resume.callbacks(str(out), old)
    (backup / "training_metadata.json").write_text('{"epoch": 1}')
    now, defaults = {**old, "erasing": 0.0}, {"epochs": 10, "translate": 0, "erasing": 0.0}
    assert len(resume.callbacks(str(out), now, defaults=defaults)) == 3
    with pytest.raises(ValueError, match=r"erasing=0.0 \(now 0.5\)"):
        resume.callbacks(str(out), {**now, "erasing": 0.5}, defaults=defaults)
    with pytest.raises(ValueError, match="erasing=None"):  # without the defaults the new setting differs
        resume.callbacks(str(out), now)
    with pytest.raises(ValueError, match=r"translate=2 \(now 0\)"):  # recorded settings are never defaulted
        resume.callbacks(str(out), {**now, "translate": 0}, defaults=defaults)


def test_train_records_every_training_flag_with_its_default():
    from keras_vit import cli_train

    defaults = cli_train.setting_defaults()
    assert defaults["erasing"] == 0.0 and defaults["epochs"] == 10
    assert not set(cli_train.NOT_SETTINGS) & set(defaults)


def test_run_settings_leave_out_where_a_run_writes_and_what_it_prints(tmp_path):
    values = cli_train._parse(["train", f"--output_dir={tmp_path}", "--verbose=0", "--epochs=3"])
    settings = cli_train.run_settings(values)
    assert settings["epochs"] == 3 and settings["learning_rate"] == values.learning_rate
    assert not set(cli_train.NOT_SETTINGS) & set(settings)
    json.dumps(settings)  # written to run.json


def test_a_dataset_smaller_than_one_batch_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"16 training examples, fewer than one batch: lower --batch_size \(now 32\)"):
        train(tmp_path, "--batch_size=32")
    assert not (tmp_path / "out" / "backup").exists()  # refused before anything was written
