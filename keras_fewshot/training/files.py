"""Durable files: a file is renamed into place complete, flushed before and after, so a run
killed at any moment leaves the previous version or the new one, never half of one."""

import hashlib
import os


def replace_durably(tmp, path):
    """Renames the complete file `tmp` to `path`, flushed to disk before and after."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_text_durably(path, text, encoding="utf-8"):
    """Writes `text` to `path` under a temporary name (tmp.<name>), then `replace_durably`."""
    tmp = path.with_name("tmp." + path.name)
    tmp.write_text(text, encoding=encoding)
    replace_durably(tmp, path)


def sha256(path):
    """The hex sha256 of the file `path`'s bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
