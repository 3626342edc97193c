"""A sweep's summary: one row per finished point, tables and plots.

    DIR/summary.{csv,json,md}   one row per point: its hyperparameters
                                (`steps.hparam_fields`, latent size) and
                                its test numbers from results.json
    DIR/rate_distortion.png     VAEs: distortion vs rate, one curve per
                                latent size (means over seeds)
    DIR/elbo_vs_latent.png      VAEs: -ELBO vs latent size, one curve per beta
"""

import csv
import json
import os

from vae_jax import config_lib
from vae_jax import steps
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError

# Result columns: name -> (evaluator, metric) in results.json. rate is the
# test KL(q(z|x) || p(z)), distortion the test -log p(x|z), both in nats.
RESULT_COLUMNS = {
    "rate": ("elbo", "kl"),
    "distortion": ("elbo", "recon"),
    "nelbo": ("elbo", "nelbo"),
    "bits_per_dim": ("elbo", "bits_per_dim"),
    "nll": ("nll", "nll"),
    "active_units": ("nll", "active_units"),
    "psnr": ("elbo", "psnr"),
    "psnr_input": ("elbo", "psnr_input"),
    "code_mean": ("elbo", "code_mean"),
}


def row_of(point_dir: str) -> dict:
  """A finished point's summary row."""
  config = workdir_lib.load_config(point_dir)
  flat = config_lib.flatten(config)
  results = workdir_lib.read_results(point_dir)
  row = {"point": os.path.basename(point_dir),
         "latent_dim": config.model.latent_dim}
  for name, field in steps.hparam_fields(config).items():
    row[name] = flat[field]
  row["seed"] = config.seed
  if config.data.train_classes:
    row["train_classes"] = config.data.train_classes
  for column, (evaluator, metric) in RESULT_COLUMNS.items():
    row[column] = results.get(evaluator, {}).get(metric)
  for metric, value in results.get("anomaly", {}).items():
    if metric.endswith("_auroc"):  # Anomaly detection, percent.
      row[metric] = value
  return row


def summarize(workdir: str) -> list[dict]:
  """Builds summary.{csv,json,md} and plots from the point subdirectories."""
  rows = [row_of(os.path.join(workdir, name))
          for name in sorted(os.listdir(workdir))
          if workdir_lib.is_done(os.path.join(workdir, name))]
  if not rows:
    raise UserError(f"No finished point in {workdir} to summarize.")
  columns = [c for c in dict.fromkeys(k for r in rows for k in r)
             if any(r.get(c) is not None for r in rows)]
  rows = [{c: r.get(c) for c in columns} for r in rows]
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
          if r.get("rate") is not None and r.get("beta") is not None]
  if not rows:
    return
  from vae_jax import writers  # pylint: disable=g-import-not-at-top
  plt = writers.pyplot()

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
  writers.set_title(ax, "Rate-distortion on the test set (labels: β)")
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
  writers.set_title(ax, "-ELBO vs latent size")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "elbo_vs_latent.png"), dpi=130)
  plt.close(fig)


