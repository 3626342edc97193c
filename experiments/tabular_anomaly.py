r"""Anomaly detection on a table: breast_cancer, ours against pyod.

  python experiments/tabular_anomaly.py [--seeds=5] [--workdir=workdirs/tabular_anomaly]

scikit-learn's breast_cancer: benign rows are normal, malignant ones
anomalous. For each seed s, a seeded 20% of all rows is the test split
(`data.split_seed=s`); the detectors train on the benign rows of the rest
only, standardized with their statistics, and score every test row. Ours:
`configs/tabular_vae.py` (a VAE, learned per-feature Gaussian) and the
autoencoder of the same shape, trained with `data.train_classes=benign`
and scored by the `anomaly` evaluator. pyod (an optional extra, `pip
install -e ".[bench]"`): IForest, PCA, OCSVM, AutoEncoder and VAE with
their defaults, on the same standardized rows. Reports AUROC (percent)
mean and std over the seeds, and fit and score times. Writes
`tabular_anomaly.{json,md}` under --out.
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
from vae_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from vae_jax import errors  # pylint: disable=g-import-not-at-top
from vae_jax import train  # pylint: disable=g-import-not-at-top
from vae_jax.evaluators import anomaly  # pylint: disable=g-import-not-at-top

_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds (splits and inits).")
_WORKDIR = flags.DEFINE_string(
    "workdir", os.path.join(REPO, "workdirs", "tabular_anomaly"),
    "Where our models train (one subdirectory per model and seed).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")

CONFIG = os.path.join(REPO, "configs", "tabular_vae.py")
# Ours: (label, overrides on configs/tabular_vae.py, score).
OURS = (
    ("vae_jax VAE, nll", {}, "nll"),
    ("vae_jax VAE, nelbo", {}, "nelbo"),
    ("vae_jax VAE, recon", {}, "recon"),
    ("vae_jax AE, recon", {"model.name": "mlp_ae", "objective.name": "ae"},
     "recon"),
    ("vae_jax AE, mse", {"model.name": "mlp_ae", "objective.name": "ae"},
     "mse"),
)


def our_config(seed: int, overrides: dict):
  return config_lib.get_config(CONFIG, None, {
      "seed": seed, "data.split_seed": seed,
      "data.train_classes": "benign", "evals.nll.enabled": False,
      "evals.anomaly.enabled": True, "evals.anomaly.num_samples": 1000,
      **overrides})


def pyod_detectors(seed: int) -> dict:
  # pylint: disable=g-import-not-at-top
  from pyod.models.auto_encoder import AutoEncoder
  from pyod.models.iforest import IForest
  from pyod.models.ocsvm import OCSVM
  from pyod.models.pca import PCA
  from pyod.models.vae import VAE
  # pylint: enable=g-import-not-at-top
  return {"pyod IForest": IForest(random_state=seed),
          "pyod PCA": PCA(random_state=seed),
          "pyod OCSVM": OCSVM(),
          "pyod AutoEncoder": AutoEncoder(random_state=seed, verbose=0),
          "pyod VAE": VAE(random_state=seed, verbose=0)}


def main(argv):
  del argv
  cli.run(experiment)


def experiment():
  try:
    import pyod  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise errors.UserError(
        f"{e.name} is not installed: this benchmark needs the bench extra, "
        '.venv/bin/pip install -e ".[bench]".') from None
  start = time.time()
  aurocs, fit_s, score_s = {}, {}, {}
  for seed in range(_SEEDS.value):
    # Ours: one run per model kind (its scores all come from that run).
    for kind in ("VAE", "AE"):
      overrides = next(o for label, o, _ in OURS if f" {kind}," in label)
      workdir = os.path.join(_WORKDIR.value, f"{kind.lower()}_seed{seed}")
      t0 = time.time()
      final = train.train_and_evaluate(our_config(seed, overrides), workdir)
      elapsed = time.time() - t0
      for label, _, score in OURS:
        if f" {kind}," in label:
          aurocs.setdefault(label, []).append(
              final["anomaly"][f"{score}_auroc"])
          fit_s.setdefault(label, []).append(elapsed)
    # pyod on the same standardized rows.
    data = input_pipeline.load(our_config(seed, {}).data)
    x_train = np.concatenate(data.train_shards)
    normal = data.class_names.index("benign")
    is_anomaly = data.test_labels != normal
    for label, detector in pyod_detectors(seed).items():
      t0 = time.time()
      detector.fit(x_train)
      t1 = time.time()
      scores = detector.decision_function(data.test_x)
      t2 = time.time()
      aurocs.setdefault(label, []).append(
          anomaly.detection_metrics(scores, is_anomaly)["auroc"])
      fit_s.setdefault(label, []).append(t1 - t0)
      score_s.setdefault(label, []).append(t2 - t1)
    logging.info("Seed %d done (%d training rows, %d test rows, %d "
                 "anomalous).", seed, len(x_train), len(data.test_x),
                 int(is_anomaly.sum()))
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  out = {
      "protocol": "breast_cancer (scikit-learn): benign normal, malignant "
                  "anomalous; per seed s, test = held-out 20% of all rows "
                  "(data.split_seed=s), training = the benign rows of the "
                  "rest, standardized with their statistics",
      "units": "AUROC in percent; times in seconds per seed",
      "seeds": _SEEDS.value,
      "auroc": {m: {"per_seed": v, "mean": float(np.mean(v)),
                    "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                for m, v in aurocs.items()},
      "fit_s": {m: float(np.mean(v)) for m, v in fit_s.items()},
      "score_s": {m: float(np.mean(v)) for m, v in score_s.items()},
      "wall_time_s": round(time.time() - start, 1),
      "device": device, "jax": jax.__version__, "pyod": pyod.__version__,
      "cpu": platform.processor() or platform.machine(),
  }
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "tabular_anomaly.json"), "w") as f:
    json.dump(out, f, indent=2)
  lines = [
      "# Anomaly detection on breast_cancer: AUROC (%) over "
      f"{_SEEDS.value} seeds",
      "",
      f"`python experiments/tabular_anomaly.py` on {device} (pyod "
      f"{pyod.__version__}), {out['wall_time_s']:.0f} s in all. Benign rows "
      "are normal; each seed holds out its own 20% test split and trains on "
      "the benign rows of the rest. Ours: fit time is the whole run "
      "(compile, training, evaluation); pyod: fit and score calls.",
      "",
      "| detector | AUROC mean | std | fit s | score s |",
      "|---|---|---|---|---|",
  ]
  for m, a in out["auroc"].items():
    score = (f"{out['score_s'][m]:.3f}" if m in out["score_s"]
             else "(in fit)")
    lines.append(f"| {m} | {a['mean']:.2f} | {a['std']:.2f} | "
                 f"{out['fit_s'][m]:.2f} | {score} |")
  with open(os.path.join(_OUT.value, "tabular_anomaly.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  logging.info("Wrote tabular_anomaly.{json,md}.")


if __name__ == "__main__":
  app.run(main)
