"""Downloading catalogue weights into a cache, with size and sha256 checks.

Files land in `$KERAS_VIT_HOME` (default `~/.keras/models/keras_vit`) under
`<catalogue name><suffix>`. A download goes to a private temporary folder,
is checked (size, sha256 if known, readable as a checkpoint) and only then
renamed into the cache, so a partial or corrupt file never stays there. The
official files publish no hash: the sha256 is computed on first download,
written beside the file (`<file>.sha256`) and verified on every later use.
"""

import hashlib
import os
import shutil
import tempfile

from keras_vit.atomic import write_text

CHUNK = 1 << 20


def cache_dir():
    """The weights cache: `$KERAS_VIT_HOME`, else `~/.keras/models/keras_vit`."""
    home = os.environ.get("KERAS_VIT_HOME")
    if home:
        return os.path.expanduser(home)
    return os.path.join(os.path.expanduser("~"), ".keras", "models", "keras_vit")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_size(path, entry):
    """The catalogue's size is the float32 parameter bytes; the file adds headers.

    Those sizes are computed from the architecture, not measured, so only a
    smaller file (truncated) or a far larger one is refused.
    """
    size, expected = os.path.getsize(path), entry["size"]
    if entry.get("size_exact"):
        ok = size == expected
        wanted = f"{expected:,} bytes"
    else:
        ok = expected <= size <= 2 * expected + (1 << 20)
        wanted = f"at least {expected:,} bytes (its float32 parameters) plus headers"
    if not ok:
        raise ValueError(
            f"The file for weights {entry['name']!r} has the wrong size (truncated or not the published file): "
            f"expected {wanted}, found {size:,} bytes. Received: {path!r}"
        )


def _verify_cached(path, entry):
    """Checks a cached file; returns False (and removes it) when it changed since it was verified.

    A file of the wrong size can only have been placed by hand: it is left
    alone and reported.
    """
    _check_size(path, entry)
    digest = sha256_of(path)
    recorded = entry.get("sha256")
    side = path + ".sha256"
    if recorded is None and os.path.exists(side):
        with open(side) as handle:
            recorded = (handle.read().split() or [None])[0]
    if recorded is not None and digest != recorded:
        _remove(path)
        return False
    if not os.path.exists(side):
        write_text(side, f"{digest}  {os.path.basename(path)}\n")
    return True


def _remove(path):
    for name in (path, path + ".sha256"):
        if os.path.exists(name):
            os.remove(name)


def cached_path(entry, directory=None):
    """Where the cache keeps the file of a catalogue entry."""
    suffix = os.path.splitext(entry["url"])[1] or ".npz"
    return os.path.join(directory or cache_dir(), entry["name"] + suffix)


def fetch(entry, directory=None, validate=None):
    """Returns the local path of a catalogue entry's file, downloading it when needed.

    Args:
        entry: a catalogue row (dict with `name`, `url`, `size`, optional
            `sha256`, `size_exact`).
        directory: the cache folder. Defaults to `cache_dir()`.
        validate: optional callable(path) that raises when the file is not a
            readable checkpoint; run before the file enters the cache.
    """
    import keras

    path = cached_path(entry, directory)
    if os.path.exists(path) and _verify_cached(path, entry):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(path))
    try:
        try:
            staged = keras.utils.get_file(
                os.path.basename(path), entry["url"], cache_dir=staging, cache_subdir="."
            )
        except Exception as error:  # keras wraps URL and HTTP errors in a bare Exception
            raise OSError(
                f"Could not download the weights {entry['name']!r} from {entry['url']} ({error}). "
                f"Offline? Download that URL elsewhere and place the file at {path}, "
                "or pass `weights='/path/to/file'` to load a local copy."
            ) from error
        _check_size(staged, entry)
        digest = sha256_of(staged)
        if entry.get("sha256") and digest != entry["sha256"]:
            raise ValueError(
                f"The download of {entry['name']!r} from {entry['url']} is corrupt: sha256 {digest}, "
                f"expected {entry['sha256']}. Nothing was kept in the cache; try again."
            )
        if validate is not None:
            validate(staged)
        os.replace(staged, path)
        write_text(path + ".sha256", f"{digest}  {os.path.basename(path)}\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
