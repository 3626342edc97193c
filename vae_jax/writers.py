"""Where a run's outputs go: TensorBoard events, a JSON-lines log, PNGs.

Only process 0 writes; the other processes get a writer that does nothing,
so call sites need no `if jax.process_index() == 0`.
"""

import functools
import io
import json
import os
import socket
import struct
import time
from typing import Any

import google_crc32c
import jax
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2



@functools.cache
def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, never a window).

  Imported on first use: it costs ~0.7 s, which a command that stops on a
  bad input (or draws nothing) does not pay.
  """
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  # pylint: enable=g-import-not-at-top
  return plt


def set_title(ax, text: str, **kwargs) -> None:
  """`ax.set_title(text, **kwargs)` at a fixed height, the top of the axes.

  Left to matplotlib, the title's height is found at every draw by
  measuring the tick labels of the x axis in case they sit on top, which
  none of these figures has: a 6-panel figure took 0.75 s to draw with it
  and 0.50 s without, with the same pixels.
  """
  ax.set_title(text, y=1.0, **kwargs)


def format_eta(seconds: float) -> str:
  """`H:MM:SS` of a remaining time in seconds."""
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def image_grid(images: np.ndarray, num_cols: int) -> np.ndarray:
  """Tiles `[N, H, W, C]` images in [0, 1] into one `[rows*H, cols*W, C]`."""
  n, h, w, c = images.shape
  num_rows = -(-n // num_cols)
  grid = np.ones((num_rows * (h + 1) + 1, num_cols * (w + 1) + 1, c),
                 np.float32)
  for i in range(n):
    r, col = divmod(i, num_cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h,
         1 + col * (w + 1):1 + col * (w + 1) + w] = images[i]
  return grid


def figure_to_array(fig) -> np.ndarray:
  """A matplotlib figure as an `[H, W, 3]` float image in [0, 1]; closes it."""
  fig.canvas.draw()
  rgba = np.asarray(fig.canvas.buffer_rgba(), np.float32)[..., :3] / 255.0
  pyplot().close(fig)
  return rgba


def _png(grid: np.ndarray) -> bytes:
  """An `[H, W, 1 or 3]` image in [0, 1] as PNG bytes (8 bits)."""
  pixels = np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
      out, format="PNG")
  return out.getvalue()


def save_png(path: str, grid: np.ndarray) -> bytes:
  """Writes an `[H, W, 1 or 3]` image in [0, 1] as an 8-bit PNG file (the
  same bytes as its TensorBoard image) and returns those bytes."""
  data = _png(grid)
  with open(path, "wb") as f:
    f.write(data)
  return data


IMAGE_INDEX = "index.jsonl"  # In images/: which evaluator drew each file.


def write_image_files(workdir: str, step: int, images: dict[str, np.ndarray],
                      evaluator: str = "") -> dict[str, bytes]:
  """Writes `[H, W, C]` grids in [0, 1] as `workdir/images/<name>_<step>.png`
  and records each file's evaluator in `images/index.jsonl` (one JSON line
  per file written: `evaluator`, `name`, `step`, `file`), from which the run
  report groups the figures. Process 0 only (elsewhere it writes nothing
  and returns {}).

  Returns:
    Each image's PNG bytes, by name.
  """
  if jax.process_index() != 0 or not images:
    return {}
  folder = os.path.join(workdir, "images")
  os.makedirs(folder, exist_ok=True)
  encoded = {}
  with open(os.path.join(folder, IMAGE_INDEX), "a") as f:
    for name, grid in images.items():
      file = f"{name}_{step:08d}.png"
      encoded[name] = save_png(os.path.join(folder, file), grid)
      f.write(json.dumps({"evaluator": evaluator, "name": name, "step": step,
                          "file": file}) + "\n")
  return encoded


def truncate_jsonl(path: str, max_step: int) -> None:
  """Drops lines logged after `max_step` (work lost by a crash, redone now)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l)["step"] <= max_step]
  with open(path, "w") as f:
    f.writelines(lines)


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data`, as TensorFlow's `crc32c::Mask`
  (tensorflow/tsl/lib/hash/crc32c.h): the CRC rotated right by 15 bits plus
  0xa282ead8, mod 2^32. The CRC is google-crc32c's (C, ~1 GB/s), where
  tensorboard's record writer without TensorFlow computes it in Python
  (~4 MB/s: 10 ms for a figure's PNG)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _RecordWriter:
  """Writes TFRecords to a file: for each record, its length (uint64), the
  masked CRC-32C of those 8 bytes, the data and its masked CRC-32C, all
  little-endian (the format of TensorFlow's `tf.io.TFRecordWriter`)."""

  def __init__(self, file):
    self._file = file

  def write(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                     + struct.pack("<I", masked_crc32c(data)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricWriter:
  """Scalars to TensorBoard and `metrics.jsonl`; images to TB and PNG.

  TensorBoard event files are TFRecords of the `tensorboard` package's
  protos (scalars as `simple_value`, images as PNG-encoded
  `Summary.Image`), written to a plain file: its `EventFileWriter` opens
  files through TensorFlow when TensorFlow is installed, an import that
  costs seconds per run.
  """

  def __init__(self, workdir: str, resume_step: int):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    truncate_jsonl(self.jsonl_path, resume_step)
    logdir = os.path.join(workdir, "tb")
    os.makedirs(logdir, exist_ok=True)
    # TensorBoard reads every file whose name holds "tfevents"; a resumed
    # run adds a file beside the earlier ones.
    path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}"
                        f".{socket.gethostname()}.{os.getpid()}.vae_jax")
    self._tb = _RecordWriter(open(path, "wb"))  # pylint: disable=consider-using-with
    self._tb.write(event_pb2.Event(
        wall_time=time.time(), file_version="brain.Event:2"
    ).SerializeToString())

  def _add(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    self._tb.write(event_pb2.Event(
        wall_time=time.time(), step=step,
        summary=summary_pb2.Summary(value=values)).SerializeToString())

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=v)
                     for k, v in scalars.items()])
    self._tb.flush()  # As metrics.jsonl: on disk before training goes on.

  def write_images(self, step: int, images: dict[str, np.ndarray],
                   evaluator: str = "") -> None:
    """Writes `[H, W, C]` grids in [0, 1] as PNG files (`write_image_files`)
    and TB images."""
    if not self.enabled:
      return
    encoded = write_image_files(self.workdir, step, images, evaluator)
    if images:
      self._add(step, [summary_pb2.Summary.Value(
          tag=name, image=summary_pb2.Summary.Image(
              height=grid.shape[0], width=grid.shape[1],
              colorspace=grid.shape[2],
              encoded_image_string=encoded[name]))
                       for name, grid in images.items()])

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
