r"""AE vs PCA on MNIST: squared error per test image against code size.

  python experiments/ae_vs_pca.py [--workdir=workdirs/ae_vs_pca] \
      [--linear_epochs=20] [--deep_epochs=50] [--deep_sizes=2,5,10,20,30,50]

For each code size k in {2, 5, 10, 20, 30, 50}:
  - PCA with k components fitted on the 60,000 training images (pixels / 255
    in [0, 1], unclipped reconstruction; `vae_jax.evaluators.ae_pca`);
  - a linear autoencoder 784-k-784 (no hidden layer, linear code, a
    Gaussian decoder with fixed sigma = 1: squared error), Adam;
  - a deep autoencoder 784-1000-500-250-k (Hinton and Salakhutdinov 2006's
    shape; gelu units, Bernoulli cross-entropy on the grayscale pixels,
    Adam, no pretraining).
Each model is a vae_jax run (`train.train_and_evaluate`, reused if finished)
whose `ae_pca` evaluator scores it and PCA at its code size on all 10,000
test images: squared error per image summed over the 784 pixels, and PSNR.
References (Hinton and Salakhutdinov 2006, Fig. 2B, 30-D): PCA 13.87,
logistic PCA 8.01, deep autoencoder 3.00.
Writes `ae_vs_pca.{json,md,png}` under --out.
"""

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import cli  # pylint: disable=g-import-not-at-top
from vae_jax import config_lib  # pylint: disable=g-import-not-at-top
from vae_jax import train  # pylint: disable=g-import-not-at-top
from vae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

CODE_SIZES = (2, 5, 10, 20, 30, 50)
# Hinton and Salakhutdinov (2006), Fig. 2B: squared error per MNIST test
# image of 30-D codes.
PUBLISHED_30D = {"PCA": 13.87, "logistic PCA": 8.01, "deep autoencoder": 3.00}

def _define_flags() -> None:
  # Defined only when this file runs as a program: tests import it next to
  # modules that define --workdir (vae_jax.sweep, vae_jax.main).
  flags.DEFINE_string(
      "workdir", os.path.join(REPO, "workdirs", "ae_vs_pca"),
      "Where the runs train (subdirectories linear_<k>/ and deep_<k>/).")
  flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                      "Where the result files go.")
  flags.DEFINE_float("linear_epochs", 20.0,
                     "Epochs of each linear autoencoder.")
  flags.DEFINE_float("deep_epochs", 50.0, "Epochs of each deep autoencoder.")
  flags.DEFINE_list("linear_sizes", list(map(str, CODE_SIZES)),
                    "Code sizes of the linear autoencoders.")
  flags.DEFINE_bool(
      "rewrite", False, "Rewrite the .md and .png from the saved .json only.")
  flags.DEFINE_list("deep_sizes", list(map(str, CODE_SIZES)),
                    "Code sizes of the deep autoencoders.")


def model_config(kind: str, k: int, epochs: float
                 ) -> config_lib.ml_collections.ConfigDict:
  """The run of a `linear` or `deep` autoencoder with a k-D code."""
  c = config_lib.base("ae")
  c.model.latent_dim = k
  c.training.num_epochs = epochs
  c.training.log_every_steps = 2000
  c.training.checkpoint_every_steps = 10000
  c.evals.elbo.every_steps = 0
  c.evals.images.every_steps = 0
  c.evals.latent_maps.enabled = False  # Not this experiment's question.
  c.evals.ae_pca.enabled = True
  if kind == "linear":
    c.model.hidden = ()
    c.model.likelihood = "gaussian"  # Fixed sigma = 1: squared error.
    c.optimizer.learning_rate = 3e-3
  else:
    c.model.hidden = (1000, 500, 250)
    c.optimizer.learning_rate = 1e-3
  return c


def run_one(kind: str, k: int, epochs: float) -> dict:
  workdir = os.path.join(flags.FLAGS.workdir, f"{kind}_{k}")
  start = time.time()
  if workdir_lib.is_done(workdir):
    logging.info("%s: finished, reusing.", workdir)
  else:
    train.train_and_evaluate(model_config(kind, k, epochs), workdir)
  results = workdir_lib.read_results(workdir)
  return {"kind": kind, "k": k, "epochs": epochs,
          "wall_s": round(time.time() - start, 1), **results["ae_pca"]}


def write(rows: list[dict], out: str, wall_s: float) -> None:
  """ae_vs_pca.{json,md,png} of the rows."""
  os.makedirs(out, exist_ok=True)
  pca = {r["k"]: (r["pca_sse"], r["pca_psnr"]) for r in rows}
  by = {(r["kind"], r["k"]): r for r in rows}
  meta = {"machine": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} CPUs, {jax.devices()[0].device_kind}",
          "jax": jax.__version__, "wall_s": round(wall_s, 1),
          "command": " ".join(["python", "experiments/ae_vs_pca.py",
                               *sys.argv[1:]])}
  with open(os.path.join(out, "ae_vs_pca.json"), "w") as f:
    json.dump({"meta": meta, "published_30d": PUBLISHED_30D, "rows": rows},
              f, indent=2)
  lines = [
      "# AE vs PCA on MNIST: squared error per test image",
      "",
      f"`{meta['command']}` ({meta['machine']}, jax {meta['jax']}; "
      f"{wall_s / 60:.1f} min in all). Squared error summed over the 784 "
      "pixels in [0, 1], mean over the 10,000 test images (PSNR in dB "
      "beside it); PCA fitted on the 60,000 training images.",
      "",
      "| code size | PCA | linear AE (squared error) | deep AE 784-1000-500-250-k |",
      "|---:|---:|---:|---:|"]
  for k in sorted(pca):
    cells = [f"{pca[k][0]:.2f} ({pca[k][1]:.2f} dB)"]
    for kind in ("linear", "deep"):
      r = by.get((kind, k))
      cells.append(f"{r['sse']:.2f} ({r['psnr']:.2f} dB), {r['epochs']:g} "
                   f"epochs" if r else "not run")
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
  lines += ["", "Principal angles between the linear AE's subspace and "
            "PCA's (degrees; median, largest, and how many exceed 5): "
            + "; ".join(
                f"k={r['k']}: {np.median(r['principal_angles_deg']):.2f}, "
                f"{max(r['principal_angles_deg']):.2f}, "
                f"{sum(a > 5 for a in r['principal_angles_deg'])}"
                for r in rows if r["kind"] == "linear"),
            "", "Hinton and Salakhutdinov (2006, Fig. 2B), 30-D: " + ", ".join(
                f"{k} {v:.2f}" for k, v in PUBLISHED_30D.items()) + "."]
  with open(os.path.join(out, "ae_vs_pca.md"), "w") as f:
    f.write("\n".join(lines) + "\n")

  from vae_jax import writers  # pylint: disable=g-import-not-at-top
  fig, ax = writers.pyplot().subplots(figsize=(6.0, 4.2), dpi=110)
  ks = sorted(pca)
  ax.plot(ks, [pca[k][0] for k in ks], "o-", label="PCA")
  for kind, label in (("linear", "linear AE, squared error"),
                      ("deep", "deep AE 784-1000-500-250-k")):
    points = sorted((r["k"], r["sse"]) for r in rows if r["kind"] == kind)
    if points:
      ax.plot(*zip(*points), "s--" if kind == "linear" else "^-",
              label=label, zorder=3)
  # Hollow: our deep AE's 30-D point lies close to it.
  ax.plot([30], [PUBLISHED_30D["deep autoencoder"]], "k*", markersize=16,
          markerfacecolor="none",
          label="Hinton & Salakhutdinov 2006, deep AE (30-D)")
  ax.set(xlabel="code size k", ylabel="squared error per test image",
         title="MNIST reconstruction: AE vs PCA")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "ae_vs_pca.png"))
  writers.pyplot().close(fig)


def main(argv):
  del argv
  if flags.FLAGS.rewrite:  # The files again from ae_vs_pca.json, no training.
    with open(os.path.join(flags.FLAGS.out, "ae_vs_pca.json")) as f:
      saved = json.load(f)
    sys.argv = saved["meta"]["command"].split()[1:]
    write(saved["rows"], flags.FLAGS.out, saved["meta"]["wall_s"])
    return
  start = time.time()
  rows = []
  for k in map(int, flags.FLAGS.linear_sizes):
    rows.append(run_one("linear", k, flags.FLAGS.linear_epochs))
    logging.info("linear k=%d: %s", k, rows[-1])
  for k in map(int, flags.FLAGS.deep_sizes):
    rows.append(run_one("deep", k, flags.FLAGS.deep_epochs))
    logging.info("deep k=%d: %s", k, rows[-1])
  write(rows, flags.FLAGS.out, time.time() - start)


if __name__ == "__main__":
  _define_flags()
  app.run(lambda argv: cli.run(main, argv), flags_parser=cli.parse_flags)
