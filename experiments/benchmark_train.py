r"""Training throughput of the MLP VAE 784-500-20 (batch 128, dynamic binarization).

  python experiments/benchmark_train.py [--epochs=5] [--rounds=3] \
      [--baseline_rev=9848b40] [--out=experiments/results]

Measures, in one run of this script:
  * step alone, stacked `[1]` vs unstacked: the jitted chunk of
    `training.steps_per_call` steps on a batch chunk already on the device,
    once with the train state stacked `[1]` (`steps.train_chunk`, what
    `train.py` runs for a single model) and once unstacked
    (`steps.run_steps`, what the train loop ran before the renovation); the
    calls alternate, and the ratio is the median over the pairs, with
    quartiles.
  * end to end, before vs after: `python -m vae_jax.main` of the same run
    from the code at `--baseline_rev` (exported with `git archive`) and from
    this tree, alternating over `--rounds` rounds; images/s of the whole
    train loop from its first step to its last (host batching, transfers,
    logging, evaluations and checkpoints included; start-up and compilation,
    which happen before the first step, excluded), read from each run's
    metrics.jsonl.
Writes `benchmark_train.json` and `.md` to --out, with the device.
"""

import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from vae_jax import config_lib
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import optim
from vae_jax import sharding
from vae_jax import steps
from vae_jax import train
# pylint: enable=g-import-not-at-top,wrong-import-position

_EPOCHS = flags.DEFINE_float("epochs", 5.0, "Epochs of each end-to-end run.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "End-to-end runs of each code.")
_REPEATS = flags.DEFINE_integer("repeats", 40, "Step-only pairs to time.")
_BASELINE = flags.DEFINE_string(
    "baseline_rev", "9848b40",
    "Git revision of the 'before' code; empty to skip the end-to-end "
    "comparison.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")

CONFIG = os.path.join(REPO, "configs", "mnist_vae.py")
MODEL = {"model.hidden": (500,), "model.latent_dim": 20,
         "training.batch_size": 128, "data.binarization": "dynamic",
         "optimizer.learning_rate": 5e-3, "optimizer.warmup_steps": 100,
         "training.log_every_steps": 200,
         "training.checkpoint_every_steps": 1000}
# The evaluation settings, as each code spells them.
EVALS_AFTER = {"evals.elbo.every_steps": 1000, "evals.images.every_steps": 1000,
               "evals.nll.enabled": False}
EVALS_BEFORE = {"eval.every_steps": 1000, "eval.num_importance_samples": 0}


def _flags(overrides: dict) -> list[str]:
  out = []
  for k, v in overrides.items():
    if isinstance(v, tuple):
      v = "(" + ",".join(map(str, v)) + ",)"
    out.append(f"--config.{k}={v}")
  return out


def _loop_img_per_sec(workdir: str, batch_size: int) -> float:
  """Images over seconds of the logged windows (the whole loop)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f if "train/img_per_sec" in l]
  images, seconds, prev = 0, 0.0, 0
  for row in rows:
    n = (row["step"] - prev) * batch_size
    images += n
    seconds += n / row["train/img_per_sec"]
    prev = row["step"]
  return images / seconds


def end_to_end(epochs: float, rounds: int, baseline_rev: str) -> dict:
  """Alternating runs of the before and after code, in subprocesses."""
  with tempfile.TemporaryDirectory() as tmp:
    before = os.path.join(tmp, "before")
    os.makedirs(before)
    archive = subprocess.run(["git", "-C", REPO, "archive", baseline_rev],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
    codes = {"before": (before, EVALS_BEFORE), "after": (REPO, EVALS_AFTER)}
    out = {name: [] for name in codes}
    for r in range(rounds):
      for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
        root, evals = codes[name]
        workdir = os.path.join(tmp, f"{name}_{r}")
        cmd = [sys.executable, "-m", "vae_jax.main",
               f"--config={os.path.join(root, 'configs', 'mnist_vae.py')}",
               f"--workdir={workdir}",
               *_flags({**MODEL, **evals, "training.num_epochs": epochs})]
        start = time.time()
        subprocess.run(cmd, cwd=root, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": root})
        out[name].append({"img_per_sec": _loop_img_per_sec(workdir, 128),
                          "wall_seconds_incl_startup": time.time() - start})
  ratios = [a["img_per_sec"] / b["img_per_sec"]
            for a, b in zip(out["after"], out["before"])]
  return {"epochs": epochs, "rounds": rounds, "baseline_rev": baseline_rev,
          **out, "after_over_before": float(np.median(ratios)),
          "ratios": ratios}


def step_only(repeats: int) -> dict:
  """A stacked [1] state against an unstacked one, paired."""
  config = config_lib.get_config(CONFIG, None, MODEL)
  config_lib.validate(config)
  data = input_pipeline.load(config.data)
  model = models.create_model(config.model, data.event_shape)
  objective = objectives.create(config.objective, model)
  _, total = train.schedule_length(config, data.num_train_examples)
  tx, schedule = optim.create(config.optimizer, total)
  mesh = sharding.create(1)
  state = train.initial_states([config], model, tx, data.event_shape,
                               mesh)[0]
  step = train.model_step(objective, tx, schedule)
  k = config.training.steps_per_call
  images = train.batch_source(config, data, mesh)(0, k)
  scalar = functools.partial(sharding.scalar, sharding=mesh.replicated)

  names = steps.metric_names(objective, steps.stack([state]),
                             (128, *data.event_shape))

  class Program:

    def __init__(self, fn, state, shape):
      self.fn, self.state = fn, state
      self.sums = {n: jax.numpy.zeros(shape) for n in names}
      self.finite = scalar(True)
      self.call()  # Compiles.

    def call(self) -> float:
      start = time.perf_counter()
      self.state, self.sums, self.finite = self.fn(
          self.state, images, scalar(k), scalar(0), self.sums, self.finite)
      jax.block_until_ready(self.sums)
      return time.perf_counter() - start

  # The train loop's program on a stacked [1] state, and the one-model loop
  # it runs inside, on an unstacked state (the loop before the renovation).
  stacked = Program(train.chunk_program(config, step, data.binarization),
                    steps.stack([state]), (1,))
  plain = Program(jax.jit(functools.partial(
      steps.run_steps, step_fn=step, binarization=config.data.binarization,
      data_seed=config.data.shuffle_seed), donate_argnums=(0, 4)),
                  jax.tree.map(jax.numpy.copy, state), ())
  times = {"stacked": [], "unstacked": []}
  for r in range(repeats):
    order = ("stacked", "unstacked") if r % 2 == 0 else ("unstacked",
                                                          "stacked")
    for name in order:
      times[name].append((stacked if name == "stacked" else plain).call())
  ratios = np.array(times["stacked"]) / np.array(times["unstacked"])
  median = {n: float(np.median(t)) for n, t in times.items()}
  return {"steps_per_call": k, "repeats": repeats,
          **{f"{n}_ms_per_step": 1e3 * m / k for n, m in median.items()},
          **{f"{n}_img_per_sec": k * 128 / m for n, m in median.items()},
          "stacked_over_unstacked": float(np.median(ratios)),
          "ratio_quartiles": [float(q) for q in
                              np.percentile(ratios, [25, 75])]}


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
  }
  if _BASELINE.value:
    results["end_to_end"] = end_to_end(_EPOCHS.value, _ROUNDS.value,
                                       _BASELINE.value)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "benchmark_train.json"), "w") as f:
    json.dump(results, f, indent=2)
  s = results["step_only"]
  lines = [
      f"# Training throughput: {results['model']}", "",
      f"Device: {results['device']} ({results['host']}), jax {results['jax']}.",
      "Command: `python experiments/benchmark_train.py "
      f"--epochs={_EPOCHS.value:g} --rounds={_ROUNDS.value} "
      f"--repeats={_REPEATS.value} --baseline_rev={_BASELINE.value}`", "",
      "Step alone (a chunk of "
      f"{s['steps_per_call']} steps on device data, {s['repeats']} "
      "alternating pairs):", "",
      "| step | ms/step | images/s |", "| --- | ---: | ---: |",
      f"| stacked [1] state, `steps.train_chunk` (the train loop now) | "
      f"{s['stacked_ms_per_step']:.3f} | {s['stacked_img_per_sec']:,.0f} |",
      f"| unstacked state, `steps.run_steps` (the train loop before) | "
      f"{s['unstacked_ms_per_step']:.3f} | "
      f"{s['unstacked_img_per_sec']:,.0f} |", "",
      f"stacked / unstacked time per step: median "
      f"**{s['stacked_over_unstacked']:.3f}** (quartiles "
      f"{s['ratio_quartiles'][0]:.3f}-{s['ratio_quartiles'][1]:.3f}).", ""]
  if "end_to_end" in results:
    e = results["end_to_end"]
    lines += [
        f"End to end, `python -m vae_jax.main`, {e['epochs']:g} epochs "
        "(evaluations every 1000 steps and checkpoints included), "
        f"{e['rounds']} alternating rounds:", "",
        "| round | before (" + e["baseline_rev"] + ") images/s | after "
        "images/s | after / before |", "| ---: | ---: | ---: | ---: |"]
    for r, (b, a, q) in enumerate(zip(e["before"], e["after"], e["ratios"])):
      lines.append(f"| {r + 1} | {b['img_per_sec']:,.0f} | "
                   f"{a['img_per_sec']:,.0f} | {q:.3f} |")
    lines += ["", f"Median after / before: **{e['after_over_before']:.3f}**.",
              ""]
  table = "\n".join(lines)
  with open(os.path.join(_OUT.value, "benchmark_train.md"), "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  app.run(main)
