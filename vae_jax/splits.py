"""What is done to the examples of any source: splits, classes, checks.

Every function takes and returns `sources.Examples`, so the npz, image
folder, csv, scikit-learn and tfds sources share one implementation of the
held-out test split, class selection, the checks of bad data and the
standardization of tables.
"""

import dataclasses
import json

import numpy as np

from vae_jax import sources
from vae_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Standardization:
  """Per-feature standardization of a table: (x - mean) / std.

  The statistics are the training split's (after class selection), saved
  in the workdir so that evaluation and the Python API apply the same.
  A constant feature gets std 1.
  """
  mean: np.ndarray  # [D] float32
  std: np.ndarray  # [D] float32, > 0

  @classmethod
  def fit(cls, x: np.ndarray) -> "Standardization":
    x = np.asarray(x, np.float64)
    std = x.std(axis=0)
    return cls(x.mean(axis=0).astype(np.float32),
               np.where(std > 0, std, 1.0).astype(np.float32))

  def apply(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(
        np.float32)

  def invert(self, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) * self.std + self.mean).astype(
        np.float32)

  def to_json(self) -> str:
    return json.dumps({
        "about": "per-feature mean and standard deviation of the training "
                 "split; model inputs are (x - mean) / std",
        "mean": self.mean.tolist(), "std": self.std.tolist()}, indent=1)

  @classmethod
  def from_json(cls, text: str) -> "Standardization":
    d = json.loads(text)
    return cls(np.asarray(d["mean"], np.float32),
               np.asarray(d["std"], np.float32))


def parse_classes(text: str) -> list[str]:
  """"3,5" -> ["3", "5"]; "" -> [] (all classes)."""
  return [c.strip() for c in text.split(",") if c.strip()]


def hold_out(ex: sources.Examples, fraction: float, seed,
             field: str = "data.test_fraction", what: str = "test"
             ) -> tuple[sources.Examples, sources.Examples]:
  """A seeded held-out split: (rest, round(fraction N) examples), file order.

  Args:
    ex: the examples.
    fraction: in (0, 1).
    seed: seeds numpy's generator (an int or a sequence of ints).
    field, what: the config field and the split's name, for the error.

  Raises:
    UserError: when either part would be empty.
  """
  n = len(ex.x)
  num_out = int(round(fraction * n))
  if num_out < 1 or num_out >= n:
    raise UserError(f"{field}={fraction} of the {n} examples of {ex.where} "
                    f"leaves no {what if num_out < 1 else 'training'} "
                    f"example; change {field}.")
  out = np.zeros(n, bool)
  out[np.random.default_rng(seed).permutation(n)[:num_out]] = True
  part = lambda m: sources.Examples(
      ex.x[m], None if ex.y is None else ex.y[m], ex.class_names, ex.where)
  return part(~out), part(out)


def merge_classes(a: sources.Examples, b: sources.Examples) -> None:
  """Relabels b (in place) to index a's class names, extended by b's new."""
  if a.y is None or b.y is None or a.class_names == b.class_names:
    return
  names = list(a.class_names) + [n for n in b.class_names
                                 if n not in a.class_names]
  b.y = np.asarray([names.index(b.class_names[i]) for i in range(
      len(b.class_names))], np.int32)[b.y]
  a.class_names = b.class_names = tuple(names)


def select(ex: sources.Examples, text: str, field: str) -> sources.Examples:
  """The examples of the classes named in `text` (all when empty)."""
  wanted = parse_classes(text)
  if not wanted:
    return ex
  if ex.y is None:
    raise UserError(f"{field}={text!r} needs labels, but {ex.where} has "
                    "none.")
  present = set(np.unique(ex.y).tolist())
  for c in wanted:
    if c not in ex.class_names or ex.class_names.index(c) not in present:
      raise UserError(f"{field} names class {c!r}, which does not occur in "
                      f"{ex.where}; its classes are "
                      f"{', '.join(ex.class_names[i] for i in sorted(present))}.")
  keep = np.isin(ex.y, [ex.class_names.index(c) for c in wanted])
  return sources.Examples(ex.x[keep], ex.y[keep], ex.class_names, ex.where)


def check(ex: sources.Examples, split: str) -> None:
  """Refuses an empty split and one with NaN or inf values."""
  of = "" if split == "whole" else f" in its {split} split"
  if len(ex.x) == 0:
    raise UserError(f"{ex.where} holds no examples{of}.")
  if ex.x.dtype.kind == "f":
    bad = ~np.isfinite(ex.x)
    count = int(bad.sum())
    if count:
      first = int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))
      line = (f" (line {first + 2} of the file)"
              if ex.where.lower().endswith(".csv") else "")
      raise UserError(f"{ex.where} holds {count} NaN or inf value(s){of}; "
                      f"the first is in example {first}{line}: remove or "
                      "impute them.")




@dataclasses.dataclass(frozen=True)
class TrainSplit:
  """One model's training data: this process's shards and their labels."""
  shards: list[np.ndarray]  # each [N_shard, *event]
  labels: list[np.ndarray] | None  # each [N_shard] int32
  num_examples: int  # over all shards, all processes
  classes: str  # the `data.train_classes` it was selected with


def shard(ex: sources.Examples, classes: str, num_shards: int,
          indices: list[int]) -> TrainSplit:
  """The examples of `classes`, cut into `num_shards` even contiguous
  shards; keeps shards `indices` (this process's)."""
  ex = select(ex, classes, "data.train_classes")
  check(ex, "training")
  n = len(ex.x)
  bounds = np.linspace(0, n, num_shards + 1).round().astype(int)
  return TrainSplit(
      shards=[ex.x[bounds[i]:bounds[i + 1]] for i in indices],
      labels=(None if ex.y is None
              else [ex.y[bounds[i]:bounds[i + 1]] for i in indices]),
      num_examples=n, classes=classes)
