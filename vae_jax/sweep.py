r"""Config-driven sweeps: many models per compiled program.

  python -m vae_jax.sweep --config=configs/sweep_beta_latent.py --workdir=DIR
  python -m vae_jax.sweep --config=... --workdir=DIR --list
  python -m vae_jax.sweep --config=... --workdir=DIR --index=7   # one point
  python -m vae_jax.sweep --config=... --workdir=DIR --summarize # tables, plots

A sweep config file defines `get_config(arg=None)` (the base) and
`sweep(add)`, which calls `add(**{"model.latent_dim": 8, ...})` once per
point. Point i trains in `DIR/<i>_<overrides>/`, which holds exactly what a
single run's workdir holds.

Points whose configs differ only in `train.GROUP_HPARAMS` (seed, learning
rate, beta, the autoencoder penalties and noise level) have arrays of the
same shapes: they are stacked into groups of at most `sweep.max_group_size`
and trained by one vmapped train step. Within a group the data batches are
shared: their order and their binarization noise come from
`data.shuffle_seed`, which is the same for all, while each model keeps its
own initialization and latent noise from its own seed. A point trained in a
group ends as it would alone, up to float rounding. Points that differ in
shapes (latent size, widths) go to different groups. Re-running resumes:
finished points are skipped, unfinished groups continue from their last
common checkpoint.
"""

import csv
import json
import os

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from vae_jax import cli
from vae_jax import config_utils
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

# Summary columns: (name, where it comes from in a point's workdir).
SUMMARY_FIELDS = (
    ("latent_dim", "config", "model.latent_dim"),
    ("beta", "config", "objective.beta"),
    ("seed", "config", "seed"),
    ("learning_rate", "config", "optimizer.learning_rate"),
    ("noise_level", "config", "objective.noise_level"),
    ("l1_weight", "config", "objective.l1_weight"),
    ("sparsity_weight", "config", "objective.sparsity_weight"),
    ("sparsity_target", "config", "objective.sparsity_target"),
    ("rate", "results", "test/kl"),
    ("distortion", "results", "test/recon"),
    ("nelbo", "results", "test/nelbo"),
    ("bits_per_dim", "results", "test/bits_per_dim"),
    ("nll", "eval", "nll"),
    ("active_units", "eval", "active_units"),
    # Autoencoder points.
    ("psnr", "results", "test/psnr"),
    ("psnr_input", "results", "test/psnr_input"),
    ("code_mean", "results", "test/code_mean"),
)


def point_name(index: int, overrides: dict) -> str:
  parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
  return "_".join([f"{index:03d}", *parts])


def expand(config_path: str, base: ml_collections.ConfigDict
           ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The sweep's points as (name, config), in the order `sweep` adds them."""
  module = config_utils.load_module(config_path)
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
      config_utils.set_field(config, key, value)
    points.append((point_name(i, o), config))
  return points


def groups(points, max_group_size: int) -> list[list[int]]:
  """Indices of points that can share a vmapped step, in chunks."""
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  by_shape: dict[str, list[int]] = {}
  for i, (_, config) in enumerate(points):
    key = json.dumps({k: v for k, v in train.flatten_config(config).items()
                      if k not in train.GROUP_HPARAMS}, sort_keys=True)
    by_shape.setdefault(key, []).append(i)
  return [members[j:j + max_group_size] for members in by_shape.values()
          for j in range(0, len(members), max_group_size)]


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, "results.json"))


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
  max_group = base.get("sweep", {}).get("max_group_size", 8)
  todo = [[i for i in g if not is_done(dirs[i])]
          for g in groups(points, max_group)]
  todo = [g for g in todo if g]
  logging.info("Sweep: %d points, %d done, %d group(s) to train.",
               len(points), len(points) - sum(map(len, todo)), len(todo))
  for n, group in enumerate(todo):
    logging.info("Group %d/%d: points %s.", n + 1, len(todo), group)
    for i in group:
      os.makedirs(dirs[i], exist_ok=True)
    train.train_group([points[i][1] for i in group], [dirs[i] for i in group])


def summarize(workdir: str) -> list[dict]:
  """Builds summary.{csv,json,md} and plots from the point subdirectories."""
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  rows = []
  for name in sorted(os.listdir(workdir)):
    point = os.path.join(workdir, name)
    if not is_done(point):
      continue
    sources = {}
    for source, filename in (("config", "config.json"),
                             ("results", "results.json"),
                             ("eval", "eval.json")):
      path = os.path.join(point, filename)
      if os.path.exists(path):
        with open(path) as f:
          data = json.load(f)
        sources[source] = (train.flatten_config(data) if source == "config"
                           else data)
    row = {"point": name}
    for column, source, key in SUMMARY_FIELDS:
      row[column] = sources.get(source, {}).get(key)
    rows.append(row)
  if not rows:
    raise UserError(f"No finished point in {workdir} to summarize.")
  columns = ["point"] + [c for c, _, _ in SUMMARY_FIELDS
                         if any(r[c] is not None for r in rows)]
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(workdir, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("| " + " | ".join(columns) + " |\n")
    f.write("|" + "---|" * len(columns) + "\n")
    for r in rows:
      f.write("| " + " | ".join(_fmt(r[c]) for c in columns) + " |\n")
  plot(rows, workdir)
  return rows


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return "" if v is None else str(v)


def _seed_means(rows, curve_key, x_key, y_keys):
  """{curve: [(x, {y: mean over seeds})]}, sorted by curve and x."""
  cells = {}
  for r in rows:
    cells.setdefault(r[curve_key], {}).setdefault(r[x_key], []).append(r)
  return {c: [(x, {y: sum(r[y] for r in rs) / len(rs) for y in y_keys})
              for x, rs in sorted(xs.items())]
          for c, xs in sorted(cells.items())}


def plot(rows: list[dict], workdir: str) -> None:
  """rate_distortion.png and elbo_vs_latent.png (means over seeds).

  Only for VAE points: autoencoders have no rate (their rows stay in the
  tables).
  """
  rows = [r for r in rows
          if r["rate"] is not None and r["beta"] is not None]
  if not rows:
    return
  from vae_jax import writers  # pylint: disable=g-import-not-at-top
  plt = writers.plt

  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  curves = _seed_means(rows, "latent_dim", "beta", ("rate", "distortion"))
  for latent, points in curves.items():
    rates = [p["rate"] for _, p in points]
    distortions = [p["distortion"] for _, p in points]
    ax.plot(rates, distortions, "o-", label=f"latent {latent}")
    for (beta, _), x, y in zip(points, rates, distortions):
      ax.annotate(f"β={beta:g}", (x, y), fontsize=6, alpha=0.6)
  ax.set_xlabel("rate: KL(q(z|x) || p(z)) [nats]")
  ax.set_ylabel("distortion: -log p(x|z) [nats]")
  ax.set_title("Rate-distortion on the test set (labels: β)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "rate_distortion.png"), dpi=130)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for beta, points in _seed_means(rows, "beta", "latent_dim",
                                  ("nelbo",)).items():
    ax.plot([x for x, _ in points], [p["nelbo"] for _, p in points], "o-",
            label=f"β={beta:g}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("latent dimension")
  ax.set_ylabel("test -ELBO [nats]")
  ax.set_title("-ELBO vs latent size")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "elbo_vs_latent.png"), dpi=130)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.run(_main, config_flags.get_config_filename(flags.FLAGS["config"]),
          _CONFIG.value, _WORKDIR.value)


def _main(config_path, config, workdir):
  if _LIST.value:
    for i, (name, _) in enumerate(expand(config_path, config)):
      print(f"{i}\t{name}")
    return
  os.makedirs(workdir, exist_ok=True)
  if not _SUMMARIZE.value:
    run(config_path, config, workdir, _INDEX.value)
  if _INDEX.value is None:
    rows = summarize(workdir)
    logging.info("Summary of %d points in %s/summary.md.", len(rows), workdir)


if __name__ == "__main__":
  app.run(main)
