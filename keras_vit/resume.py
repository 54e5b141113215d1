"""Resuming a training run after a crash, and starting afresh once it has finished.

A run keeps in its `output_dir`:

- `backup/`: `BackupAndRestore`'s weights, optimizer state and epoch after every
  epoch, and `run.json`, the settings the run was started with;
- `history.csv`: one row per finished epoch (Keras' `CSVLogger`, appending), so
  the run's history survives restarts;
- `checkpoints/latest.weights.h5`: the latest weights.

Started again with the same folder and the same settings, `fit` continues from
the last finished epoch, so a SIGKILL loses at most the epoch that was
running. Started with other settings, it stops with an error: the backup of one
run must not carry on as another. `finish` removes the backup once the run's
outputs are written, so the same command then starts a new run.
"""

import csv
import json
import math
import os
import shutil

import keras

from keras_vit import atomic, distribute

SETTINGS_FILE = "run.json"
CHECKPOINTS_DIR = "checkpoints"  # `checkpoints/latest.weights.h5`, and `keras_vit.averaging`'s epoch files
HISTORY_FILE = "history.csv"


def backup_dir(output_dir, strategy=None):
    """`output_dir/backup`, or a folder of this worker's own on a non-chief worker."""
    backup = os.path.join(output_dir, "backup")
    if not distribute.is_chief(strategy):
        # Each worker restores its own copy (they are identical); a fixed name
        # per worker lets a restarted worker find it again.
        backup += f"_worker_{strategy.cluster_resolver.task_id}"
    return backup


# BackupAndRestore writes this file with the weights after every epoch: {"epoch": epochs finished, ...}.
METADATA_FILE = "training_metadata.json"


def _has_progress(backup):
    return os.path.exists(os.path.join(backup, METADATA_FILE))


def finished_epochs(output_dir, strategy=None):
    """How many epochs the run in `output_dir` has finished and backed up: where `fit` resumes (0: a new run).

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> finished_epochs(folder)
    0
    >>> os.makedirs(os.path.join(folder, "backup"))
    >>> _ = atomic.write_json(os.path.join(folder, "backup", METADATA_FILE), {"epoch": 38, "batch": 0})
    >>> finished_epochs(folder)
    38
    """
    path = os.path.join(backup_dir(output_dir, strategy), METADATA_FILE)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def _normal(settings):
    return json.loads(json.dumps(settings, sort_keys=True))


def check_settings(backup, settings, defaults=None):
    """Records `settings` for a new run, or checks that the backed-up run was started with them.

    A setting the backed-up run did not record (one added to the package since
    it started) counts as its value in `defaults`, so an upgrade does not stop
    a run from resuming while the new setting stays at its default.

    Returns:
        bool, whether this is a new run: no epoch of a run is backed up in
        `backup`.

    Raises:
        ValueError: `backup` holds a run started with other settings; the
            message names each one that differs.
    """
    settings = _normal(settings)
    path = os.path.join(backup, SETTINGS_FILE)
    resuming = _has_progress(backup)
    if resuming and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        saved = {**{name: value for name, value in _normal(defaults or {}).items() if name in settings}, **saved}
        if saved != settings:
            changed = ", ".join(
                f"{name}={saved.get(name)!r} (now {settings.get(name)!r})"
                for name in sorted(set(saved) | set(settings))
                if saved.get(name) != settings.get(name)
            )
            raise ValueError(
                f"{os.path.dirname(backup) or '.'} holds the backup of an unfinished run that was started with "
                f"other settings: {changed}. Start it with the same settings to resume it, choose another "
                f"output folder, or delete {backup} to start over ({path} alone to carry its weights and "
                f"optimizer state on under the new settings)."
            )
        return False
    os.makedirs(backup, exist_ok=True)
    atomic.write_json(path, settings)  # also for a backup written before settings were recorded
    return not resuming


def callbacks(output_dir, settings, strategy=None, keep_checkpoints=True, own_dir=None, defaults=None):
    """Callbacks that make a run resumable, keep its history and its latest weights.

    Args:
        output_dir: str, the run's folder.
        settings: JSON-serialisable dict of what defines the run (its flags,
            less where outputs go and how verbose it is).
        strategy: the `tf.distribute` strategy, for the worker's own folders.
        keep_checkpoints: bool, also keep `checkpoints/latest.weights.h5`.
        own_dir: where this worker writes its history and checkpoints;
            defaults to `distribute.writable_dir(output_dir, strategy)`.
        defaults: dict, the default of each setting, for a run backed up
            before a setting existed (`check_settings`).

    Returns:
        A list of callbacks for `model.fit`.

    Raises:
        ValueError: `output_dir` holds an unfinished run with other settings.
    """
    backup = backup_dir(output_dir, strategy)
    own_dir = own_dir or distribute.writable_dir(output_dir, strategy)
    os.makedirs(own_dir, exist_ok=True)
    history = os.path.join(own_dir, HISTORY_FILE)
    if check_settings(backup, settings, defaults) and os.path.exists(history):
        os.remove(history)  # a finished run's, or one that never finished an epoch
    result = [
        # Before the backup: an epoch killed between the two is trained again and
        # its row written twice; `history` keeps the last.
        keras.callbacks.CSVLogger(history, append=True),
        keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False),
    ]
    if keep_checkpoints:
        checkpoints = os.path.join(own_dir, CHECKPOINTS_DIR)
        os.makedirs(checkpoints, exist_ok=True)
        result.append(
            keras.callbacks.ModelCheckpoint(os.path.join(checkpoints, "latest.weights.h5"), save_weights_only=True)
        )
    return result


def history(output_dir):
    """The run's history over all its restarts, `{metric: [value per epoch]}`, from `history.csv`.

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, HISTORY_FILE), "w") as f:
    ...     _ = f.write("epoch,loss,val_loss\\n0,2.0,NA\\n1,1.5,NA\\n1,1.4,NA\\n2,1.2,NA\\n")
    >>> history(folder)
    {'loss': [2.0, 1.4, 1.2]}
    """
    path = os.path.join(output_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row.pop("epoch"))] = row
    metrics = {}
    for epoch in sorted(rows):
        for name, value in rows[epoch].items():
            # CSVLogger writes "NA" for a metric missing from an epoch's logs.
            metrics.setdefault(name, []).append(math.nan if value in ("NA", "", None) else float(value))
    # CSVLogger adds val_ columns even to runs without validation.
    return {name: values for name, values in metrics.items() if not all(math.isnan(v) for v in values)}


def finish(output_dir, strategy=None):
    """Removes the run's backup once its outputs are written: the same command then starts anew."""
    shutil.rmtree(backup_dir(output_dir, strategy), ignore_errors=True)
