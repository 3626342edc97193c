r"""Training throughput: vae_jax end to end, its step alone, and PyTorch.

  python experiments/benchmark_train.py [--epochs=5] [--rounds=5] \
      [--repeats=20] [--out=experiments/results]

The MLP VAE 784-500-20 (GELU, Bernoulli decoder, batch 128, dynamic
binarization, Adam 5e-3 with 100 warm-up steps and cosine decay), measured
in one run of this script, over --rounds rounds whose order of the three
measurements rotates, so that each sees the same stretch of machine load:

  * end to end: `python -m vae_jax.main` of that model for --epochs
    (a subprocess, as a user runs it); images/s of the whole train loop
    from its first step to its last, read from the run's metrics.jsonl
    (host batching, transfers and logging included; start-up and
    compilation, which happen before the first step, excluded). Two
    cadences: the default config's (metrics logged every 1000 steps;
    evaluations and checkpoints every 9 epochs, so within a few epochs
    only at the end, after the timed loop: like PyTorch's loop below), and
    `end_to_end_evals`, with logging every 200 steps and checkpoints and
    evaluations (test ELBO over the 10,000 test images and image grids)
    every 1000 steps inside the timed loop;
  * step alone: the train loop's compiled chunk of `training.steps_per_call`
    steps (`train.chunk_program`) on one chunk of batches already on the
    device, called back to back (dispatched without waiting, as the train
    loop does) for as many steps as one end-to-end run takes, timed from
    the first call to the last result: the same steps and the same
    estimator (total time) as end to end, so that the ratio compares like
    with like. Also the median of --repeats single calls (`step_alone_chunk`,
    which leaves out the slow calls a shared machine hands out, as a total
    cannot);
  * PyTorch: `experiments/torch_vae.py`, the same model, loss, optimizer and
    schedule for the same epochs, data in memory as tensors, no evaluation
    (a subprocess; torch from the `bench` extra).

Ratios (end to end / PyTorch, end to end / step alone) are taken per round
and summarized by their median and quartiles. Also the matmul ceiling of
one step: XLA's FLOP count of the compiled step against the matmul floor,
the time its own dot shapes take alone in a dispatch-free loop
(`matmul_ceiling.floor`). Writes `benchmark_train.json` and `.md` to --out.
"""

import functools
import importlib.util
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
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top,wrong-import-position
import matmul_ceiling
from vae_jax import cli
from vae_jax import config_lib
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax import train
from vae_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

_EPOCHS = flags.DEFINE_float("epochs", 5.0, "Epochs of each end-to-end run.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of the three.")
_REPEATS = flags.DEFINE_integer("repeats", 20,
                                "Step-alone chunk calls per round.")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch equivalent.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")

CONFIG = os.path.join(REPO, "configs", "mnist_vae.py")
BATCH = 128
MODEL = {"model.hidden": (500,), "model.latent_dim": 20,
         "training.batch_size": BATCH, "data.binarization": "dynamic",
         "optimizer.learning_rate": 5e-3, "optimizer.warmup_steps": 100}
# The loop of each end-to-end measurement, over the default config's. The
# NLL and latent maps run only after the last step (outside the timed loop)
# at the default cadence: off, to save the benchmark's wall time.
LOOPS = {
    "end_to_end": {"evals.latent_maps.enabled": False,
                   "evals.nll.enabled": False},
    "end_to_end_evals": {"training.log_every_steps": 200,
                         "training.checkpoint_every_steps": 1000,
                         "evals.elbo.every_steps": 1000,
                         "evals.images.every_steps": 1000,
                         "evals.latent_maps.enabled": False,
                         "evals.nll.enabled": False},
}


def _loop_img_per_sec(workdir: str) -> float:
  """Images over seconds of the logged windows (the whole loop)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f if "train/img_per_sec" in l]
  images, seconds, prev = 0, 0.0, 0
  for row in rows:
    n = (row["step"] - prev) * BATCH
    images += n
    seconds += n / row["train/img_per_sec"]
    prev = row["step"]
  return images / seconds


def end_to_end(epochs: float, workdir: str, loop: dict) -> float:
  """images/s of `python -m vae_jax.main`'s train loop."""
  cmd = [sys.executable, "-m", "vae_jax.main", f"--config={CONFIG}",
         f"--workdir={workdir}",
         *cli.override_flags({**MODEL, **loop,
                               "training.num_epochs": epochs})]
  subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
  return _loop_img_per_sec(workdir)


def pytorch(epochs: float) -> dict:
  """experiments/torch_vae.py's JSON line."""
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "torch_vae.py"),
       f"--epochs={epochs}", "--hidden=500", "--latent_dim=20",
       f"--batch_size={BATCH}", "--learning_rate=5e-3"],
      cwd=REPO, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


class StepAlone:
  """The train loop's compiled chunk, on one chunk of batches on device."""

  def __init__(self):
    config = config_lib.get_config(CONFIG, None, MODEL)
    config_lib.validate(config)
    data = input_pipeline.load(config.data)
    _, total = train.schedule_length(config, data.num_train_examples)
    model, objective, tx, schedule = train.build_model(
        config, data.event_shape, total)
    mesh = sharding.create(1)
    state = train.initial_states([config], model, tx, data.event_shape,
                                 mesh)[0]
    self.step_fn = train.model_step(objective, tx, schedule)
    self.k = config.training.steps_per_call
    self.steps_per_epoch = train.schedule_length(
        config, data.num_train_examples)[0]
    self.images = train.batch_source(config, data, mesh)(0, self.k)
    self.scalar = functools.partial(sharding.scalar,
                                    sharding=mesh.replicated)
    names = steps.metric_names(objective, steps.stack([state]),
                               (BATCH, *data.event_shape))
    self.fn = train.chunk_program(config, self.step_fn, data.binarization)
    self.state = steps.stack([state])
    self.one_state = state
    self.sums = {n: jnp.zeros((1,)) for n in names}
    self.finite = self.scalar(True)
    # Compiles; and again for the layout of the chunk's own outputs (the
    # initial state's differs), so no timed call compiles.
    self.call()
    self.call()

  def run(self, num_steps: int) -> float:
    """Seconds per step of `num_steps` steps (rounded up to whole chunks),
    dispatched back to back."""
    calls = -(-num_steps // self.k)
    start = time.perf_counter()
    for _ in range(calls):
      self.state, self.sums, self.finite = self.fn(
          self.state, self.images, self.scalar(self.k), self.scalar(0),
          self.sums, self.finite)
    jax.block_until_ready(self.sums)
    return (time.perf_counter() - start) / (calls * self.k)

  def call(self) -> float:
    """Seconds per step of one chunk."""
    start = time.perf_counter()
    self.state, self.sums, self.finite = self.fn(
        self.state, self.images, self.scalar(self.k), self.scalar(0),
        self.sums, self.finite)
    jax.block_until_ready(self.sums)
    return (time.perf_counter() - start) / self.k

  def ceiling(self) -> dict:
    """XLA's FLOPs of one step of one model, and its matmul floor."""
    x = jnp.zeros((BATCH, 28, 28, 1), jnp.float32)
    step = jax.jit(self.step_fn)
    flops = matmul_ceiling.xla_flops(step.lower(self.one_state, x).compile())
    return {"xla_flops": flops,
            **matmul_ceiling.floor(self.step_fn, self.one_state, x)}


def _summary(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"median": float(np.median(v)),
          "quartiles": [float(q) for q in np.percentile(v, [25, 75])]}


def main(argv):
  del argv
  if _TORCH.value and importlib.util.find_spec("torch") is None:
    raise UserError("PyTorch is not installed: install the benchmark extra "
                    "with `.venv/bin/pip install -e \".[bench]\"`, or pass "
                    "--notorch.")
  device = jax.devices()[0]
  alone = StepAlone()
  ceiling = alone.ceiling()
  # As the run's schedule counts them (`train.schedule_length`).
  num_steps = max(1, round(_EPOCHS.value * alone.steps_per_epoch))
  rounds = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(_ROUNDS.value):
      names = [*LOOPS, "step_alone"] + (["pytorch"] if _TORCH.value
                                        else [])
      order = names[r % len(names):] + names[:r % len(names)]
      row = {"order": order}
      for name in order:
        if name in LOOPS:
          row[name] = end_to_end(_EPOCHS.value,
                                 os.path.join(tmp, f"{name}_{r}"), LOOPS[name])
        elif name == "step_alone":
          row[name] = BATCH / alone.run(num_steps)
          row["step_alone_chunk"] = BATCH / float(np.median(
              [alone.call() for _ in range(_REPEATS.value)]))
        else:
          row["pytorch_run"] = pytorch(_EPOCHS.value)
          row[name] = row["pytorch_run"]["img_per_sec"]
      print(json.dumps(row), flush=True)
      rounds.append(row)
  ratios = {}
  for name in LOOPS:
    ratios[f"{name}_over_step_alone"] = _summary(
        [r[name] / r["step_alone"] for r in rounds])
    if _TORCH.value:
      ratios[f"{name}_over_pytorch"] = _summary(
          [r[name] / r["pytorch"] for r in rounds])
  results = {
      "model": "MLP VAE 784-500-20 (GELU), batch 128, dynamic binarization, "
               "Adam 5e-3",
      "device": f"{device.platform}: {device.device_kind}",
      "num_devices": jax.device_count(),
      "host": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores",
      "jax": jax.__version__, "epochs": _EPOCHS.value,
      "steps_per_call": alone.k, "repeats": _REPEATS.value,
      "steps_per_run": num_steps,
      "rounds": rounds, "ratios": ratios,
      "img_per_sec": {n: _summary([r[n] for r in rounds])
                      for n in (*LOOPS, "step_alone", "step_alone_chunk",
                           "pytorch")
                      if n in rounds[0]},
      "loops": LOOPS,
      "ceiling": ceiling,
  }
  # Against the floor (dots timed alone, best of repeats): one chunk's step.
  step_s = BATCH / results["img_per_sec"]["step_alone_chunk"]["median"]
  ceiling["step_seconds"] = step_s
  ceiling["step_gflops"] = ceiling["xla_flops"] / step_s / 1e9
  ceiling["step_over_floor"] = step_s / ceiling["seconds"]
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "benchmark_train.json"), "w") as f:
    json.dump(results, f, indent=2)
  table = _markdown(results)
  with open(os.path.join(_OUT.value, "benchmark_train.md"), "w") as f:
    f.write(table)
  print(table)


def _markdown(results: dict) -> str:
  rounds, ratios, c = results["rounds"], results["ratios"], results["ceiling"]
  torch_on = "pytorch" in rounds[0]
  lines = [
      f"# Training throughput: {results['model']}", "",
      f"Device: {results['device']} ({results['host']}), jax "
      f"{results['jax']}"
      + (f", torch {rounds[0]['pytorch_run']['torch']} "
         f"({rounds[0]['pytorch_run']['threads']} threads)" if torch_on
         else "") + ".",
      "Command: `python experiments/benchmark_train.py "
      f"--epochs={results['epochs']:g} --rounds={len(rounds)} "
      f"--repeats={results['repeats']}`", "",
      f"images/s per round ({results['epochs']:g} epochs end to end and in "
      f"PyTorch, {results['steps_per_run']:,} steps; the step alone: as many "
      "steps rounded up to whole chunks, chunk after chunk on batches "
      "already on the device, total time as end to end; *one chunk*: the "
      "median of "
      f"{results['repeats']} single chunks of {results['steps_per_call']} "
      "steps, for reference):",
      "",
      "End to end at the default config's cadence (logging every 1000 "
      "steps, evaluations and checkpoints every 9 epochs: after the timed "
      "loop here); *with evaluations*: logging every 200 steps, test ELBO, "
      "image grids and a checkpoint every 1000 steps inside it.", "",
      "| round | end to end | with evaluations | step alone | one chunk | "
      + ("PyTorch | " if torch_on else "")
      + "end to end / step alone | with evaluations / step alone | "
      + ("end to end / PyTorch |" if torch_on else ""),
      "| ---: | ---: | ---: | ---: | ---: | "
      + ("---: | " if torch_on else "")
      + "---: | ---: |" + (" ---: |" if torch_on else "")]
  for i, r in enumerate(rounds):
    cells = [f"{i + 1}", f"{r['end_to_end']:,.0f}",
             f"{r['end_to_end_evals']:,.0f}", f"{r['step_alone']:,.0f}",
             f"{r['step_alone_chunk']:,.0f}"]
    if torch_on:
      cells.append(f"{r['pytorch']:,.0f}")
    cells.append(f"{r['end_to_end'] / r['step_alone']:.3f}")
    cells.append(f"{r['end_to_end_evals'] / r['step_alone']:.3f}")
    if torch_on:
      cells.append(f"{r['end_to_end'] / r['pytorch']:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  for name, label in (
      ("end_to_end_over_step_alone", "End to end / step alone"),
      ("end_to_end_over_pytorch", "End to end / PyTorch"),
      ("end_to_end_evals_over_step_alone",
       "With evaluations every 1000 steps / step alone"),
      ("end_to_end_evals_over_pytorch",
       "With evaluations every 1000 steps / PyTorch")):
    if name in ratios:
      s = ratios[name]
      lines.append(f"{label}: median **{s['median']:.3f}** (quartiles "
                   f"{s['quartiles'][0]:.3f}-{s['quartiles'][1]:.3f}).")
  lines += [
      "", "Matmul ceiling of one step (one model, batch 128): XLA counts "
      f"{c['xla_flops'] / 1e6:.1f} MFLOPs, of which its dots "
      f"{c['dot_flops'] / 1e6:.1f} M; those dot shapes alone, each in a "
      f"dispatch-free loop, take {1e3 * c['seconds']:.3f} ms "
      f"({c['gflops']:.0f} GFLOP/s). A step takes (one chunk, median) "
      f"{1e3 * c['step_seconds']:.3f} ms ({c['step_gflops']:.0f} GFLOP/s): "
      f"**{c['step_over_floor']:.2f}x** the matmul floor.", "",
      "| dot | per step | MFLOPs | ms | GFLOP/s |",
      "| --- | ---: | ---: | ---: | ---: |"]
  for d in c["dots"]:
    lines.append(f"| {d['shape']} | {d['count']} | {d['flops'] / 1e6:.1f} | "
                 f"{1e3 * d['seconds']:.4f} | {d['gflops']:.0f} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(lambda argv: cli.run(main, argv), flags_parser=cli.parse_flags)
