"""The mean of the weights of a run's last epochs (Izmailov et al. 2018, https://arxiv.org/abs/1803.05407).

Near the end of a decaying schedule, the weights of successive epochs sit
around one minimum; their element-wise mean usually lies nearer its centre
and classifies a little better than any one of them (timm's
`avg_checkpoints.py` does the same for PyTorch). `EpochWeights` keeps the
weights of each of a run's last epochs beside its latest checkpoint;
`average_into` sets a model's weights to the mean of such files.

A ViT has no batch statistics (LayerNorm, and GroupNorm in the ResNet stem),
so the mean needs no pass over the data afterwards. Integer variables, if a
model has any, are not averaged: they keep the last file's values.
"""

import glob
import os
import re
import warnings

import h5py
import keras
import numpy as np

from keras_vit import atomic

PATTERN = "epoch_{:03d}.weights.h5"


def epoch_files(folder):
    """`{epoch: path}` of the `epoch_NNN.weights.h5` files in `folder` (epochs counted from 1).

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("epoch_002.weights.h5", "epoch_010.weights.h5", "latest.weights.h5"):
    ...     open(os.path.join(folder, name), "w").close()
    >>> {epoch: os.path.basename(path) for epoch, path in epoch_files(folder).items()}
    {2: 'epoch_002.weights.h5', 10: 'epoch_010.weights.h5'}
    """
    found = {}
    for path in glob.glob(os.path.join(folder, "epoch_*.weights.h5")):
        match = re.fullmatch(r"epoch_(\d+)\.weights\.h5", os.path.basename(path))
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _uncompiled_copy(model):
    """A copy of `model` that has no optimizer, so that its weight files leave out the optimizer's state
    (AdamW's two moments would make each file three times the size); `model` itself where it cannot be
    rebuilt from its config (a subclassed model without one)."""
    try:
        return type(model).from_config(model.get_config())
    except (NotImplementedError, TypeError, ValueError):
        return model


class EpochWeights(keras.callbacks.Callback):
    """Writes the weights after each epoch as `folder/epoch_NNN.weights.h5`, keeping the last `keep` epochs.

    Each file holds the model's weights, not its optimizer's state, and loads
    with `model.load_weights`. Files are written whole or not at all
    (`keras_vit.atomic`); older epochs' files are removed once the new one is
    in place, so a killed run leaves at most `keep` files and never a partial
    one. Epoch numbers count from 1 and go on across `BackupAndRestore`
    restarts, as Keras' own epoch index does.
    """

    def __init__(self, folder, keep):
        super().__init__()
        if keep < 1:
            raise ValueError(f"EpochWeights keeps at least one epoch. Received: keep={keep}")
        self.folder = folder
        self.keep = keep
        self._uncompiled = None

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if self._uncompiled is None:
            self._uncompiled = _uncompiled_copy(self.model)
        self._uncompiled.set_weights(self.model.get_weights())
        atomic.write_with(os.path.join(self.folder, PATTERN.format(number)), self._uncompiled.save_weights)
        for old, path in epoch_files(self.folder).items():
            if old <= number - self.keep or old > number:  # a file of a run that was started afresh
                os.remove(path)


def _stored_variables(path):
    """(count, total size) of the model variables a `.weights.h5` file holds (its optimizer's left out)."""
    sizes = []
    with h5py.File(path, "r") as handle:
        if "layers" in handle:
            handle["layers"].visititems(lambda _, item: sizes.append(item.size) if isinstance(item, h5py.Dataset) else None)
    return len(sizes), sum(sizes)


def average_into(model, paths):
    """Sets `model`'s weights to the element-wise mean of the `.weights.h5` files `paths`; returns `model`.

    Each file must hold `model`'s architecture (as saved by `save_weights`).

    Raises:
        ValueError: no file, a missing file, or a file that does not fit `model` (named in the message).
    """
    paths = list(paths)
    if not paths:
        raise ValueError("average_into needs at least one .weights.h5 file. Received: none")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"No such weights file: {', '.join(missing)}")
    expected = (len(model.weights), model.count_params())
    for path in paths:
        # Keras loads a file of a deeper model of the same width without a word: check the sizes first.
        found = _stored_variables(path)
        if found != expected:
            raise ValueError(f"{path} does not hold the weights of {model.name}: it has {found[0]} variables of "
                             f"{found[1]:,} numbers in all, the model {expected[0]} of {expected[1]:,}")
    floating = [keras.backend.is_float_dtype(w.dtype) for w in model.weights]
    total = [np.zeros(w.shape, np.float64) if f else None for w, f in zip(model.weights, floating)]
    for path in paths:
        try:
            with warnings.catch_warnings():
                # A compiled model's optimizer has variables; `EpochWeights`' files hold none: nothing is lost.
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(path)
        except ValueError as error:
            raise ValueError(f"{path} does not hold the weights of {model.name} "
                             f"({model.count_params():,} parameters): {error}") from error
        last = model.get_weights()
        for t, w in zip(total, last):
            if t is not None:
                t += w
    model.set_weights([(t / len(paths)).astype(w.dtype) if f else w for t, w, f in zip(total, last, floating)])
    return model


def average_last(model, folder, count, last_epoch):
    """Sets `model`'s weights to the mean of `folder`'s files of epochs `last_epoch - count + 1 ... last_epoch`.

    Those of the epochs that have no file (a run resumed from a backup made
    before it kept them) are left out; with none at all, `model` is left as
    it is. Returns the epochs averaged.
    """
    files = {epoch: path for epoch, path in epoch_files(folder).items() if last_epoch - count < epoch <= last_epoch}
    if files:
        average_into(model, files.values())
    return list(files)
