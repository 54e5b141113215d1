"""Writing files whole or not at all: a private temporary name beside the file, then a rename."""

import json
import os
import uuid


def write_with(path, write):
    """Calls `write(tmp)` on a temporary name beside `path`, then renames it to `path`.

    A reader sees the old file or the new one, never a part; if `write`
    fails, the temporary file is removed and `path` is untouched. The
    temporary name ends with `path`'s own name, so writers that go by the
    suffix (`model.save` needs `.keras`, `save_weights` `.weights.h5`) accept
    it. The folder is created when missing.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.bin")
    >>> write_with(path, lambda tmp: open(tmp, "wb").close()) == path, os.listdir(os.path.dirname(path))
    (True, ['data.bin'])
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{os.path.basename(path)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically: a reader sees the old file or the new one, never a part.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
    >>> write_text(path, "done\\n") == path, open(path).read()
    (True, 'done\\n')
    """

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return write_with(path, write)


def write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically; NumPy scalars are written as floats."""
    return write_text(path, json.dumps(obj, indent=1, default=float))
