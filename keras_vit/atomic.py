"""Writing small text files whole or not at all: a private temporary name, then a rename."""

import json
import os
import uuid


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically: a reader sees the old file or the new one, never a part.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
    >>> write_text(path, "done\\n") == path, open(path).read()
    (True, 'done\\n')
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically; NumPy scalars are written as floats."""
    return write_text(path, json.dumps(obj, indent=1, default=float))
