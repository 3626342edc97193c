"""Atomic file writes: a crash (or a kill) mid-write leaves the old file or
the new one at the path, never part of one.

The data goes to a temporary file beside the target, which `os.replace`
then renames over it (atomic on POSIX file systems). Light on purpose
(numpy only), so that every module can use it.
"""

import contextlib
import json
import os
from typing import Any, IO, Iterator

import numpy as np


@contextlib.contextmanager
def atomic(path: str, mode: str = "w") -> Iterator[IO[Any]]:
  """Opens a temporary file (`mode`: "w" or "wb") that becomes `path` when
  the block ends without an error; on an error it is removed and `path` is
  left as it was.

  Raises:
    OSError: the directory cannot be written (nothing is left behind).
  """
  # The process id keeps processes that write the same path apart.
  tmp = f"{path}.{os.getpid()}.tmp"
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def save_npz(path: str, **arrays: Any) -> None:
  """`np.savez(path, **arrays)`, atomically (`path` is used as given)."""
  with atomic(path, "wb") as f:
    np.savez(f, **arrays)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path`, atomically."""
  with atomic(path) as f:
    f.write(text)


def write_json(path: str, value: Any, **kwargs: Any) -> None:
  """`json.dump(value, ..., **kwargs)` to `path`, atomically."""
  write_text(path, json.dumps(value, **kwargs))
