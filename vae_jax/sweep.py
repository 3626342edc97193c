r"""Config-driven sweeps: many models per compiled program.

  python -m vae_jax.sweep --config=configs/sweep_beta_latent.py --workdir=DIR
  python -m vae_jax.sweep --config=... --workdir=DIR --list
  python -m vae_jax.sweep --config=... --workdir=DIR --index=7   # one point
  python -m vae_jax.sweep --config=... --workdir=DIR --summarize # tables, plots

A sweep config file defines `get_config(arg=None)` (the base) and
`sweep(add)`, which calls `add(**{"model.latent_dim": 8, ...})` once per
point. Point i trains in `DIR/<i>_<overrides>/`, which holds exactly what a
single run's workdir holds.

Points whose configs differ only in `steps.group_fields` (seed, learning
rate, and the objective's `objectives.HPARAMS`: beta, the autoencoder
penalties and noise level) have arrays of the same shapes: they are stacked into groups of at most `sweep.max_group_size`
and trained by one vmapped train step. Within a group the data batches are
shared: their order and their binarization noise come from
`data.shuffle_seed`, which is the same for all, while each model keeps its
own initialization and latent noise from its own seed. A point trained in a
group ends as it would alone, up to float rounding. Points that differ in
shapes (latent size, widths) go to different groups. Re-running resumes:
finished points are skipped, unfinished groups continue from their last
common checkpoint.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from vae_jax import cli
from vae_jax import config_lib
from vae_jax import report
from vae_jax import steps
from vae_jax import sweep_report
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file (defines get_config and sweep).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")
_LIST = flags.DEFINE_bool("list", False, "Print the points and exit.")
_INDEX = flags.DEFINE_integer("index", None,
                              "Train only this point (for array jobs).")
_SUMMARIZE = flags.DEFINE_bool(
    "summarize", False, "Only rebuild the summary from the subdirectories.")
flags.mark_flags_as_required(["config", "workdir"])

def point_name(index: int, overrides: dict) -> str:
  parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
  return "_".join([f"{index:03d}", *parts])


def expand(config_path: str, base: ml_collections.ConfigDict
           ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The sweep's points as (name, config), in the order `sweep` adds them."""
  module = config_lib.load_module(config_path)
  if not hasattr(module, "sweep"):
    raise UserError(f"{config_path} defines no sweep(add) function.")
  overrides = []
  module.sweep(lambda **kw: overrides.append(kw))
  if not overrides:
    raise UserError(f"sweep(add) in {config_path} added no point.")
  points = []
  for i, o in enumerate(overrides):
    config = ml_collections.ConfigDict(base.to_dict())
    for key, value in o.items():
      config_lib.set_field(config, key, value)
    points.append((point_name(i, o), config))
  return points


def groups(points, max_group_size: int) -> list[list[int]]:
  """Indices of points that can share a vmapped step, in chunks."""
  by_shape: dict[str, list[int]] = {}
  for i, (_, config) in enumerate(points):
    fields = steps.group_fields(config)
    key = json.dumps({k: v for k, v in config_lib.flatten(config).items()
                      if k not in fields}, sort_keys=True)
    by_shape.setdefault(key, []).append(i)
  return [members[j:j + max_group_size] for members in by_shape.values()
          for j in range(0, len(members), max_group_size)]


def run(config_path: str, base: ml_collections.ConfigDict, workdir: str,
        index: int | None = None) -> None:
  """Trains the sweep's missing points (or point `index` only)."""
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  points = expand(config_path, base)
  dirs = [os.path.join(workdir, name) for name, _ in points]
  if index is not None:
    if not 0 <= index < len(points):
      raise UserError(f"--index={index} is out of range: the sweep has "
                      f"{len(points)} points (0 to {len(points) - 1}).")
    os.makedirs(dirs[index], exist_ok=True)
    train.train_and_evaluate(points[index][1], dirs[index])
    return
  max_group = base.sweep.max_group_size
  todo = [[i for i in g if not workdir_lib.is_done(dirs[i])]
          for g in groups(points, max_group)]
  todo = [g for g in todo if g]
  logging.info("Sweep: %d points, %d done, %d group(s) to train.",
               len(points), len(points) - sum(map(len, todo)), len(todo))
  for n, group in enumerate(todo):
    logging.info("Group %d/%d: points %s.", n + 1, len(todo), group)
    for i in group:
      os.makedirs(dirs[i], exist_ok=True)
    train.train_group([points[i][1] for i in group], [dirs[i] for i in group])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # The file, less its argument (`sweep.py:runlocal`).
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  cli.run(_main, path.split(":", 1)[0], _CONFIG.value, _WORKDIR.value)


def _main(config_path, config, workdir):
  if _LIST.value:
    for i, (name, _) in enumerate(expand(config_path, config)):
      print(f"{i}\t{name}")
    return
  os.makedirs(workdir, exist_ok=True)
  if not _SUMMARIZE.value:
    run(config_path, config, workdir, _INDEX.value)
  if _INDEX.value is None and jax.process_index() == 0:
    rows = sweep_report.summarize(workdir)
    logging.info("Summary of %d points in %s/summary.md.", len(rows), workdir)
    logging.info("Report: %s", report.write(workdir))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
