r"""Denoising on the MNIST test set: a denoising AE against a plain AE.

  python experiments/denoising.py [--sigma=0.5] [--workdir=workdirs/denoising]

Trains (or resumes, or reuses when finished) `configs/mnist_ae.py` and
`configs/mnist_dae.py` (the same 784-500-32 autoencoder; the DAE sees inputs
with Gaussian noise of sigma 0.5 during training), then corrupts every test
image once with Gaussian noise of --sigma (clipped to [0, 1], fixed seed)
and reports the mean PSNR against the clean image of: the noisy input, the
AE's reconstruction of it and the DAE's. Writes `denoising.json`, `.md` and
`denoising.png` (clean, noisy, AE, DAE rows) under --out.
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
from vae_jax import corruption  # pylint: disable=g-import-not-at-top
from vae_jax import losses  # pylint: disable=g-import-not-at-top
from vae_jax import train  # pylint: disable=g-import-not-at-top
from vae_jax import trained  # pylint: disable=g-import-not-at-top
from vae_jax import writers  # pylint: disable=g-import-not-at-top

_SIGMA = flags.DEFINE_float("sigma", 0.5, "Test noise standard deviation.")
_WORKDIR = flags.DEFINE_string(
    "workdir", os.path.join(REPO, "workdirs", "denoising"),
    "Where the two runs train (subdirectories ae/ and dae/).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the test noise.")

MODELS = (("AE", "mnist_ae.py", "ae"), ("DAE", "mnist_dae.py", "dae"))


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def main(argv):
  del argv
  cli.run(denoise)


def denoise():
  start = time.time()
  runs = {}
  for label, config_name, subdir in MODELS:
    config = config_lib.get_config(
        os.path.join(REPO, "configs", config_name))
    workdir = os.path.join(_WORKDIR.value, subdir)
    logging.info("%s: training %s in %s (resumes if started).", label,
                 config_name, workdir)
    train.train_and_evaluate(config, workdir)
    runs[label] = trained.load(workdir)

  clean = runs["AE"].test_images()
  noisy = np.asarray(jax.jit(corruption.gaussian)(
      clean, jax.random.key(_SEED.value), _SIGMA.value))

  def psnr(x):
    return np.asarray(losses.psnr(losses.squared_error(x, clean, 3)))

  rows = {"noisy input": psnr(noisy)}
  outputs = {}
  for label, run in runs.items():
    outputs[label] = run.reconstruct(noisy)
    rows[f"{label} output"] = psnr(outputs[label])
  clean_ae = psnr(runs["AE"].reconstruct(clean))

  table = {name: dict(zip(("psnr_db", "stderr_db"), mean_and_stderr(v)))
           for name, v in rows.items()}
  dae, ae = table["DAE output"]["psnr_db"], table["AE output"]["psnr_db"]
  noisy_db = table["noisy input"]["psnr_db"]
  device = jax.devices()[0]
  results = {
      "sigma": _SIGMA.value, "num_images": len(clean),
      "psnr": table,
      "dae_minus_ae_db": dae - ae, "dae_minus_noisy_db": dae - noisy_db,
      "ae_on_clean_inputs_db": mean_and_stderr(clean_ae)[0],
      "configs": {label: cfg for label, cfg, _ in MODELS},
      "device": f"{device.platform}: {device.device_kind} "
                f"({platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores)",
      "wall_s": time.time() - start}
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "denoising.json"), "w") as f:
    json.dump(results, f, indent=2)
  lines = [
      f"# Denoising MNIST test images, Gaussian noise sigma = {_SIGMA.value}",
      "",
      f"All {len(clean)} test images, noise clipped to [0, 1], seed "
      f"{_SEED.value}. Mean PSNR against the clean image (dB, +- standard "
      "error). Command: `python experiments/denoising.py "
      f"--sigma={_SIGMA.value}`; {results['device']}.", "",
      "| image | PSNR (dB) |", "| --- | ---: |"]
  for name, r in table.items():
    lines.append(f"| {name} | {r['psnr_db']:.2f} +- {r['stderr_db']:.2f} |")
  lines += ["", f"DAE - AE: {dae - ae:+.2f} dB; DAE - noisy: "
            f"{dae - noisy_db:+.2f} dB. The AE reconstructs clean inputs at "
            f"{results['ae_on_clean_inputs_db']:.2f} dB.", ""]
  with open(os.path.join(_OUT.value, "denoising.md"), "w") as f:
    f.write("\n".join(lines))
  n = 12
  grid = np.concatenate([clean[:n], noisy[:n], outputs["AE"][:n],
                         outputs["DAE"][:n]])
  writers.save_png(os.path.join(_OUT.value, "denoising.png"),
                   writers.image_grid(grid, n))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
