"""Write an export into a temporary sibling of its destination and rename it into place at the end.

A failed or interrupted export leaves nothing at the destination (the temporary sibling is removed),
and an existing non-empty destination is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from zoo.errors import ConvertError


def check_destination(out: Path, directory: bool) -> None:
    """Refuse a destination that exists and is not empty, or that is the wrong kind (file vs directory)."""
    if not out.exists() and not out.is_symlink():
        return
    if directory and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory")
    if not directory and not out.is_file():
        raise ConvertError(f"{out}: exists and is not a file")
    if (directory and any(out.iterdir())) or (not directory and out.stat().st_size):
        raise ConvertError(f"{out}: exists and is not empty (choose another path or remove it)")


@contextmanager
def staged(out: str | Path, directory: bool) -> Iterator[Path]:
    """Yield a temporary path beside `out` (a directory or a file); on success it replaces `out`."""
    out = Path(out)
    check_destination(out, directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.partial-"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=prefix))
    else:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=prefix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        check_destination(out, directory)  # nothing appeared there meanwhile
        mask = _umask()  # mkdtemp/mkstemp (and safetensors) make private files; an export is an ordinary one
        for path in ([tmp, *tmp.iterdir()] if directory else [tmp]):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
