"""Key files: created on first start with mode 0600, refused when others may read them."""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path


class KeyFileError(ValueError):
    """A key file that cannot be used (unreadable, readable by others, malformed)."""


def load_or_create(path: Path, generate: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The key in ``path`` (created from ``generate()`` with mode 0600 if absent), and whether
    it was created now. Refuses a file that group or others can access, as ssh does."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(generate())
        return path.read_bytes(), True
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
                           f"run: chmod 600 {path}")
    try:
        return path.read_bytes(), False
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror or e}") from None
