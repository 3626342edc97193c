r"""Training throughput of the MLP VAE 784-500-20 (batch 128, dynamic binarization).

  python experiments/benchmark_train.py [--epochs=5] [--out=experiments/results]

Measures, in one process:
  * end to end: `train.train_and_evaluate` on MNIST, images/s of the whole
    train loop from its first step to its last (host batching, transfers,
    logging, evaluations and checkpoints included; start-up and compilation,
    which happen before the first step, reported separately);
  * train step alone: the jitted multi-step program on a batch chunk already
    on the device, nothing else.
Writes `benchmark_train.json` and `.md` to --out, with the device.
"""

import json
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import config_utils  # pylint: disable=g-import-not-at-top
from vae_jax import train  # pylint: disable=g-import-not-at-top

_EPOCHS = flags.DEFINE_float("epochs", 5.0, "Epochs of the end-to-end run.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")
_REPEATS = flags.DEFINE_integer("repeats", 40, "Step-only calls to time.")

MODEL = {"model.hidden": (500,), "model.latent_dim": 20,
         "training.batch_size": 128, "data.binarization": "dynamic",
         "optimizer.learning_rate": 5e-3, "optimizer.warmup_steps": 100,
         "training.log_every_steps": 200,
         "training.checkpoint_every_steps": 1000, "eval.every_steps": 1000,
         "eval.num_importance_samples": 0}


def end_to_end(epochs: float) -> dict:
  config = config_utils.get_config(
      os.path.join(REPO, "configs", "mnist_vae.py"), None,
      {**MODEL, "training.num_epochs": epochs})
  with tempfile.TemporaryDirectory() as workdir:
    start = time.time()
    result = train.train_and_evaluate(config, workdir)
    wall = time.time() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(l) for l in f if "train/img_per_sec" in l]
  every = config.training.log_every_steps
  images, seconds, prev = 0, 0.0, 0
  for row in rows:
    n = (row["step"] - prev) * config.training.batch_size
    images += n
    seconds += n / row["train/img_per_sec"]
    prev = row["step"]
  return {"epochs": epochs, "steps": rows[-1]["step"], "log_every_steps": every,
          "img_per_sec": images / seconds, "wall_seconds_incl_startup": wall,
          "test_nelbo": result["nelbo"]}


def step_only(repeats: int) -> dict:
  config = config_utils.get_config(
      os.path.join(REPO, "configs", "mnist_vae.py"), None, MODEL)
  setup = train.Setup([config])
  state, loop_key, hparams, eval_key = setup.place(
      [config], [setup.init_state(config)])
  setup.compile(state, loop_key, hparams, eval_key)
  k = config.training.steps_per_call
  images = setup.chunk(0, k)
  n, finite = setup.scalar(k), setup.scalar(True)
  first = setup.scalar(0)
  state, sums, finite = setup.run_steps(state, images, n, first, loop_key,
                                        hparams, setup.zero_sums(), finite)
  jax.block_until_ready(sums)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, sums, finite = setup.run_steps(state, images, n, first, loop_key,
                                          hparams, sums, finite)
    jax.block_until_ready(sums)
    times.append(time.perf_counter() - start)
  per_call = float(np.median(times))
  return {"steps_per_call": k, "repeats": repeats,
          "median_ms_per_step": 1e3 * per_call / k,
          "img_per_sec": k * config.training.batch_size / per_call}


def main(argv):
  del argv
  device = jax.devices()[0]
  results = {
      "model": "MLP VAE 784-500-20, batch 128, dynamic binarization, adam",
      "device": f"{device.platform}: {device.device_kind}",
      "num_devices": jax.device_count(),
      "host": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores",
      "jax": jax.__version__,
      "step_only": step_only(_REPEATS.value),
      "end_to_end": end_to_end(_EPOCHS.value),
  }
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "benchmark_train.json"), "w") as f:
    json.dump(results, f, indent=2)
  e2e, step = results["end_to_end"], results["step_only"]
  table = "\n".join([
      f"# Training throughput: {results['model']}",
      "",
      f"Device: {results['device']} ({results['host']}), jax {results['jax']}.",
      "Command: `python experiments/benchmark_train.py "
      f"--epochs={_EPOCHS.value:g}`",
      "",
      "| measurement | images/s |",
      "| --- | ---: |",
      f"| end to end ({e2e['epochs']:g} epochs, {e2e['steps']} steps, "
      f"evals and checkpoints included) | {e2e['img_per_sec']:,.0f} |",
      f"| train step alone ({step['median_ms_per_step']:.3f} ms/step) "
      f"| {step['img_per_sec']:,.0f} |",
      "",
      f"End-to-end wall time including start-up (data loading) and "
      f"compilation: "
      f"{e2e['wall_seconds_incl_startup']:.1f} s; test -ELBO "
      f"{e2e['test_nelbo']:.2f} nats.",
      ""])
  with open(os.path.join(_OUT.value, "benchmark_train.md"), "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  app.run(main)
