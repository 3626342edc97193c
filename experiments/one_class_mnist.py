r"""One-class MNIST (Ruff et al. 2018): our VAEs and AEs, PCA, Deep SVDD.

  python experiments/one_class_mnist.py [--workdir=workdirs/one_class] [--runlocal]

Per digit d: train on the training images of d only, score all 10,000 test
images, anomalies = the other nine digits; AUROC per digit and the mean over
the ten digits. Trains `configs/mnist_one_class.py` (ten VAEs in one vmapped
group, each on its own digit) and its `:ae` variant (ten autoencoders), or
reuses their finished runs; fits PCA with k in {8, 16, 32, 64} components
on each digit's same training images (grayscale pixels in [0, 1]) and scores
the grayscale test images by their reconstruction squared error; puts the
published one-class Deep SVDD numbers beside them (labelled as published).
Every score of every model is reported, with the mean over digits; the VAEs
score the fixed binarization of the test set, the AEs and PCA its grayscale
pixels. Writes `one_class_mnist.{json,md}` under --out.
"""

import json
import os
import platform
import subprocess
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
from vae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
from vae_jax.evaluators import anomaly  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string(
    "workdir", os.path.join(REPO, "workdirs", "one_class"),
    "Where the sweeps train (subdirectories vae/ and ae/).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")
_RUNLOCAL = flags.DEFINE_bool("runlocal", False,
                              "Smoke test: the configs' :runlocal sizes.")

CONFIG = os.path.join(REPO, "configs", "mnist_one_class.py")
PCA_COMPONENTS = (8, 16, 32, 64)
# Ruff et al. 2018, "Deep One-Class Classification", Table 1, one-class
# Deep SVDD, AUROC in percent (mean of 10 seeds), digits 0..9.
DEEP_SVDD = (98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5)


def train_models(kind: str) -> list[dict]:
  """Trains (or reuses) the ten one-class models; their anomaly results."""
  arg = ",".join(filter(None, ["ae" if kind == "ae" else "",
                               "runlocal" if _RUNLOCAL.value else ""]))
  workdir = os.path.join(_WORKDIR.value, kind)
  # The sweep's own command line: what a user runs (and resumes).
  subprocess.run([sys.executable, "-m", "vae_jax.sweep",
                  f"--config={CONFIG}{':' + arg if arg else ''}",
                  f"--workdir={workdir}"], cwd=REPO, check=True)
  names = sorted(n for n in os.listdir(workdir)
                 if workdir_lib.is_done(os.path.join(workdir, n)))
  if len(names) != 10:
    raise RuntimeError(f"{workdir} holds {len(names)} finished points, not "
                       "the ten digits.")
  return [workdir_lib.read_results(os.path.join(workdir, n))["anomaly"]
          for n in names]


def pca_aurocs() -> dict[int, list[float]]:
  """AUROC per digit of PCA's reconstruction error, per k."""
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  data_config = config_lib.get_config(CONFIG).data
  data_config.binarization = "none"  # Grayscale pixels in [0, 1].
  data = input_pipeline.load(data_config,
                             train_classes=[str(d) for d in range(10)])
  test = input_pipeline.to_float(data.test_x).reshape(len(data.test_x), -1)
  out = {k: [] for k in PCA_COMPONENTS}
  for digit, split in enumerate(data.train):
    x = input_pipeline.to_float(np.concatenate(split.shards))
    x = x.reshape(len(x), -1)
    for k in PCA_COMPONENTS:
      pca = decomposition.PCA(n_components=k, random_state=0).fit(x)
      error = np.sum(np.square(
          pca.inverse_transform(pca.transform(test)) - test), axis=1)
      out[k].append(anomaly.detection_metrics(
          error, data.test_labels != digit)["auroc"])
  return out


def main(argv):
  del argv
  cli.run(experiment)


def experiment():
  start = time.time()
  results = {"vae": train_models("vae"), "ae": train_models("ae")}
  train_time = time.time() - start
  pca = pca_aurocs()
  rows = {}  # method -> [10] AUROC
  for kind, label in (("vae", "VAE"), ("ae", "AE")):
    scores = [k[:-len("_auroc")] for k in results[kind][0]
              if k.endswith("_auroc")]
    for s in scores:
      rows[f"{label} {s}"] = [r[f"{s}_auroc"] for r in results[kind]]
  for k, values in pca.items():
    rows[f"PCA k={k} (squared error)"] = values
  rows["Deep SVDD one-class (published)"] = list(DEEP_SVDD)
  vaes = [m for m in rows if m.startswith("VAE")]
  best = max(vaes, key=lambda m: np.mean(rows[m]))
  ours = [m for m in rows if m.startswith(("VAE", "AE"))]
  best_ours = max(ours, key=lambda m: np.mean(rows[m]))
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  out = {
      "protocol": "one-class MNIST (Ruff et al. 2018): train on one digit "
                  "(90%: data.validation_fraction=0.1 held out), score all "
                  "10,000 test images, anomalies = the other digits",
      "units": "AUROC in percent",
      "auroc": {m: {"per_digit": v, "mean": float(np.mean(v))}
                for m, v in rows.items()},
      "best_vae_score": best,
      "best_of_ours": best_ours,
      "target": "mean AUROC >= 97.0",
      "config": "configs/mnist_one_class.py" + (
          ":runlocal" if _RUNLOCAL.value else ""),
      "wall_time_s": round(time.time() - start, 1),
      "train_and_score_time_s": round(train_time, 1),
      "device": device, "jax": jax.__version__,
      "cpu": platform.processor() or platform.machine(),
  }
  os.makedirs(_OUT.value, exist_ok=True)
  name = "one_class_mnist" + ("_runlocal" if _RUNLOCAL.value else "")
  with open(os.path.join(_OUT.value, f"{name}.json"), "w") as f:
    json.dump(out, f, indent=2)
  lines = [
      "# One-class MNIST: AUROC (%) per digit",
      "",
      f"`python experiments/one_class_mnist.py{' --runlocal' if _RUNLOCAL.value else ''}`"
      f" on {device}, {out['wall_time_s']:.0f} s in all (training and "
      f"scoring the 20 models: {train_time:.0f} s). Each row is one "
      "score of one method, on all 10,000 test images; the VAEs score the "
      "fixed binarization of the test set, the AEs and PCA its grayscale "
      "pixels. Higher is better.",
      "",
      "| method | " + " | ".join(str(d) for d in range(10)) + " | mean |",
      "|---|" + "---|" * 11,
  ]
  for m, v in rows.items():
    bold = "**" if m in (best, best_ours) else ""
    lines.append(f"| {bold}{m}{bold} | " + " | ".join(f"{x:.1f}" for x in v)
                 + f" | {bold}{np.mean(v):.2f}{bold} |")
  lines += ["", f"Best VAE score by its mean over the digits: {best}; "
            f"best of ours: {best_ours} ({np.mean(rows[best_ours]):.2f}; "
            "target >= 97.0). The AEs train with a squared-error loss "
            "(configs/mnist_one_class.py:ae). Deep SVDD: Ruff et al. 2018, "
            "Table 1 (published, not rerun)."]
  with open(os.path.join(_OUT.value, f"{name}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  logging.info("Wrote %s: best VAE score %s, mean AUROC %.2f; best of ours "
               "%s, %.2f.", name, best, np.mean(rows[best]), best_ours,
               np.mean(rows[best_ours]))


if __name__ == "__main__":
  app.run(main)
