r"""Per-step time and memory of K vmapped models against K sequential ones.

  python experiments/benchmark_sweep.py [--group_sizes=1,2,4,8,16] [--hidden=500]

For each K, a group of K MLP VAEs 784-<hidden>-20 (batch 128, dynamic
binarization, betas spread over [0.5, 4]) is compiled as one vmapped
program and timed per step (median of --repeats calls of
`training.steps_per_call` steps) in two ways:

- train loop: what `train.train_group` does per chunk: dispatch the chunk
  of steps, gather the next chunk of batches on the host meanwhile, wait.
  K separate runs each gather their own batches; a group gathers them once.
- device only: the same chunk of batches, already on the device, again and
  again (the compiled step alone).

"Sequential" is what K separate runs spend per step: the one-model program
called K times in a row. Each repeat times one group call and one such
sequence back to back (in alternating order), so the two cover the same
stretch of wall time and see the same machine load; the ratio is the
median over repeats of group time / sequence time, with the quartiles of
those ratios to show the noise of a shared machine.
Memory is XLA's compiled memory analysis of the group program (arguments,
outputs and temporaries); "state" is one model's parameters, gradients and
Adam moments, the bytes a step reads and writes.

With --breakdown_calls > 0, a few more device-only calls of each group
and of the one-model program are traced with jax.profiler and XLA:CPU's
per-operation times in the body of the loop over steps are summed by kind:
matmuls, threefry loops (random bits), per-example ops (outputs with the
batch dimension: activations, loss, sampling) and per-parameter ops
(gradient sums, the Adam update).

With --host_devices=N (CPU), the process has N XLA host devices and each
group's models split over them (N threads of the CPU runtime, each stepping
K / N models); the one-model program keeps one device, as a run alone.

Writes `benchmark_sweep.json` and `.md` (`benchmark_sweep_h<hidden>.*` for a
width other than 500, `_host<N>` with host devices, or --name).
"""

import collections
import functools
import glob
import gzip
import json
import os
import platform
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from vae_jax import cli
from vae_jax import config_lib
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax import train
from vae_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

_SIZES = flags.DEFINE_list("group_sizes", ["1", "2", "4", "8", "16"],
                           "Numbers of models per group.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls per group size.")
_HIDDEN = flags.DEFINE_integer("hidden", 500, "Width of the hidden layer.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")
_BREAKDOWN = flags.DEFINE_integer(
    "breakdown_calls", 5, "Device-only calls traced per program for the "
    "breakdown of the step by kind of operation (0: no breakdown).",
    lower_bound=0)
_NAME = flags.DEFINE_string(
    "name", "", "Base name of the result files (default: benchmark_sweep, "
    "with _h<hidden> for a width other than 500, _gpu on a GPU and "
    "_host<N> with --host_devices=N).")
_HOST_DEVICES = flags.DEFINE_integer(
    "host_devices", 1, "On the CPU: split the process into this many XLA "
    "host devices (`jax_num_cpu_devices`) and each group's models over "
    "them (model axis = this number; K must divide by it). The one-model "
    "program still runs on one device, as a run alone does.", lower_bound=1)
_NPZ = flags.DEFINE_string(
    "npz", "", "Read MNIST from DIR/mnist_train.npz and DIR/mnist_test.npz "
    "(x, y in tfds order: the same data) instead of tfds: for machines "
    "without tensorflow-datasets.")


def _npz_source() -> dict[str, str]:
  if not _NPZ.value:
    return {}
  return {"data.source": "npz",
          "data.path": os.path.join(_NPZ.value, "mnist_train.npz"),
          "data.test_path": os.path.join(_NPZ.value, "mnist_test.npz")}


class Program:
  """A compiled group of k models and the inputs to time it on.

  Built from the train loop's own builders (`train.initial_states`,
  `train.model_step`, `train.chunk_program`, `train.batch_source`).
  """

  def __init__(self, k: int):
    configs = [config_lib.get_config(
        os.path.join(REPO, "configs", "mnist_vae.py"), None,
        {"objective.beta": float(b), "seed": i,
         "model.hidden": (_HIDDEN.value,),
         "model.latent_dim": 20, **_npz_source()})
               for i, b in enumerate(np.linspace(0.5, 4.0, k))]
    config = configs[0]
    config_lib.validate(config)
    data = input_pipeline.load(config.data)
    _, total = train.schedule_length(config, data.num_train_examples)
    model, objective, tx, schedule = train.build_model(
        config, data.event_shape, total)
    if k == 1:  # One model: on one device, as a run alone.
      mesh = sharding.create(1, devices=jax.devices()[:1])
    else:  # The group's models split over the host devices.
      mesh = sharding.create(_HOST_DEVICES.value, k)
    self.state = jax.device_put(steps.stack(train.initial_states(
        configs, model, tx, data.event_shape, mesh)), mesh.models)
    step_fn = train.model_step(objective, tx, schedule)
    self.steps = config.training.steps_per_call
    self.batch_size = config.training.batch_size
    self.batches = train.batch_source(config, data, mesh)
    self.scalar = functools.partial(sharding.scalar, sharding=mesh.replicated)
    self.images, self.n = self.batches(0, self.steps), self.scalar(self.steps)
    names = steps.metric_names(objective, self.state,
                               (config.training.batch_size,
                                *data.event_shape))
    self.sums = jax.device_put({m: np.zeros(k, np.float32) for m in names},
                               mesh.models)
    self.finite = self.scalar(True)
    self.run = train.chunk_program(config, step_fn, data.binarization).lower(
        self.state, self.images, self.n, self.scalar(0), self.sums,
        self.finite).compile()
    self.memory = self.run.memory_analysis()
    self.step = 0
    self.call(gather=True)  # Warm-up.

  def call(self, gather: bool) -> float:
    """Seconds per step of one chunk; `gather`: as the train loop does."""
    start = time.perf_counter()
    self.state, self.sums, self.finite = self.run(
        self.state, self.images, self.n, self.scalar(self.step), self.sums,
        self.finite)
    if gather:
      self.step += self.steps
      self.images = self.batches(self.step, self.steps)
    jax.block_until_ready((self.sums, self.images))
    assert bool(self.finite)
    return (time.perf_counter() - start) / self.steps

  def memory_mb(self) -> float:
    m = self.memory
    return (m.argument_size_in_bytes + m.output_size_in_bytes
            + m.temp_size_in_bytes) / 2**20


# What each top-level operation of the step's loop body does, by its HLO.
KINDS = ("matmuls", "random bits (threefry loops)",
         "per-example ops (activations, loss, sampling)",
         "per-parameter ops (gradient sums, Adam update)")


def _step_body_kinds(hlo: str, batch: int) -> dict[str, str]:
  """Instruction name -> kind, in the loop body (or entry) with the most dots.

  `hlo` is a compiled program's text (`.as_text()`). The loop body with the
  most dots is that of the loop over steps; its own nested loops are
  jax.random's threefry rounds. An operation whose output has the batch
  dimension is per-example; the others (gradient reductions over the
  batch, the optimizer) are per-parameter. Instructions that run no kernel
  (parameters, tuples, bitcasts, constants) are left out.
  """
  bodies, current, loops = collections.defaultdict(dict), None, {"ENTRY"}
  for line in hlo.splitlines():
    head = re.match(r"^(ENTRY )?%(\S+) \(.*\{$", line)
    if head:
      current = "ENTRY" if head.group(1) else head.group(2)
      continue
    inst = re.match(r"^\s+(?:ROOT )?%(\S+) = (.+?) ([a-z][\w-]*)\(", line)
    if not (inst and current):
      continue
    name, out_type, opcode = inst.groups()
    if opcode == "while":
      loops.add(re.search(r"body=%([\w.-]+)", line).group(1))
    if opcode in ("parameter", "constant", "get-tuple-element", "tuple",
                  "bitcast"):
      continue
    dims = re.search(r"\[([\d,]*)\]", out_type)  # The (first) output's.
    shape = [int(d) for d in dims.group(1).split(",") if d] if dims else []
    if opcode in ("dot", "convolution"):
      kind = KINDS[0]
    elif opcode == "while":
      kind = KINDS[1]
    else:
      kind = KINDS[2] if batch in shape else KINDS[3]
    bodies[current][name] = kind
  return max((bodies[b] for b in loops),
             key=lambda b: sum(k == KINDS[0] for k in b.values()))


def breakdown(program: Program, calls: int) -> dict[str, float]:
  """Thunk time per step (ms) by kind of operation, from a profiler trace.

  Times are XLA:CPU's per-thunk events of `calls` device-only calls, summed
  over the runtime's threads (so they can add up to more than the wall
  time when two thunks run at once).
  """
  kinds = _step_body_kinds(program.run.as_text(), program.batch_size)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(calls):
      program.call(gather=False)
    jax.profiler.stop_trace()
    path, = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                      recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  ms = dict.fromkeys(KINDS, 0.0)
  for e in events:
    if e.get("ph") == "X" and e["name"] in kinds:
      ms[kinds[e["name"]]] += e["dur"] / 1e3 / (calls * program.steps)
  return ms


def measure(k: int, single: Program, repeats: int) -> dict:
  """Times the k-model group against k one-model calls, paired, in one run."""
  group = single if k == 1 else Program(k)
  row = {"models": k}
  for name, gather in (("", True), ("device_", False)):
    group_times, seq_times = [], []
    for r in range(repeats):
      first_group = r % 2 == 0
      if first_group:
        group_times.append(group.call(gather))
      seq_times.append(sum(single.call(gather) for _ in range(k)))
      if not first_group:
        group_times.append(group.call(gather))
    ratios = np.array(group_times) / np.array(seq_times)
    row.update({f"{name}ms_per_step": 1e3 * float(np.median(group_times)),
                f"{name}sequential_ms_per_step":
                    1e3 * float(np.median(seq_times)),
                f"{name}vmapped_over_sequential": float(np.median(ratios)),
                f"{name}ratio_quartiles": [
                    float(q) for q in np.percentile(ratios, [25, 75])]})
  logging.info("K=%d: vmapped/sequential per step %.2f (train loop), %.2f "
               "(device only).", k, row["vmapped_over_sequential"],
               row["device_vmapped_over_sequential"])
  if _BREAKDOWN.value and k > 1:
    row["breakdown_ms_per_step"] = breakdown(group, _BREAKDOWN.value)
    row["sequential_breakdown_ms_per_step"] = {
        kind: k * ms for kind, ms in breakdown(single,
                                               _BREAKDOWN.value).items()}
  return {**row, "memory_mb": group.memory_mb(),
          "sequential_memory_mb": single.memory_mb()}


def group_sizes(flag: list[str], n: int) -> list[int]:
  """--group_sizes (`flag`) as numbers, and `n` = --host_devices set up.

  Raises:
    UserError: a group size that is not a positive integer, or that the
      host devices do not divide; host devices on another backend.
  """
  try:
    sizes = [int(k) for k in flag]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) < 1:
    raise UserError(f"--group_sizes must be positive integers, got "
                    f"{','.join(flag)!r}.")
  if any(k > 1 and k % n for k in sizes):
    raise UserError(f"Each group size above 1 must divide by "
                    f"--host_devices={n}, got --group_sizes="
                    f"{','.join(flag)}.")
  if n > 1:
    jax.config.update("jax_num_cpu_devices", n)  # Before the CPU backend.
    if jax.default_backend() != "cpu":
      raise UserError("--host_devices splits the CPU into XLA host devices: "
                      "run it on a CPU (JAX_PLATFORMS=cpu).")
  return sizes


def main(argv):
  del argv
  sizes = group_sizes(_SIZES.value, _HOST_DEVICES.value)
  single = Program(1)
  rows = [measure(k, single, _REPEATS.value) for k in sizes]
  device = jax.devices()[0]
  h = _HIDDEN.value
  params = 784 * h + h + 2 * (h * 20 + 20) + 20 * h + h + h * 784 + 784
  results = {"model": f"MLP VAE 784-{h}-20, batch 128, dynamic binarization",
             "params_per_model": params,
             # Parameters, gradients and the two Adam moments, float32.
             "state_mb_per_model": 4 * 4 * params / 2**20,
             "device": f"{device.platform}: {device.device_kind}",
             "host": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} cores",
             "jax": jax.__version__, "host_devices": _HOST_DEVICES.value,
             "rows": rows}
  os.makedirs(_OUT.value, exist_ok=True)
  name = _NAME.value or "benchmark_sweep" + (
      "" if h == 500 else f"_h{h}") + (
          "_gpu" if device.platform == "gpu" else "") + (
              f"_host{_HOST_DEVICES.value}" if _HOST_DEVICES.value > 1 else "")
  with open(os.path.join(_OUT.value, f"{name}.json"), "w") as f:
    json.dump(results, f, indent=2)
  lines = [
      f"# K vmapped models vs K sequential: {results['model']}", "",
      f"Device: {results['device']} ({results['host']}), jax {results['jax']}.",
      "Command: `python experiments/benchmark_sweep.py "
      f"--group_sizes={','.join(_SIZES.value)} --hidden={h} "
      f"--repeats={_REPEATS.value} --breakdown_calls={_BREAKDOWN.value}"
      + (f" --host_devices={_HOST_DEVICES.value}"
         if _HOST_DEVICES.value > 1 else "")
      + (f" --name={_NAME.value}" if _NAME.value else "") + "`",
      "",
      f"One model: {params:,} parameters; with its gradients and Adam "
      f"moments {results['state_mb_per_model']:.1f} MB of float32 state.", "",
      "Train loop: the step with its batch gathering, as training runs; "
      "device only: the compiled step on batches already on the device.", "",
      *([f"Each group split over {_HOST_DEVICES.value} XLA host devices "
         f"(`jax_num_cpu_devices`), K / {_HOST_DEVICES.value} models on "
         "each; the one-model program on one of them; memory per device.",
         ""] if _HOST_DEVICES.value > 1 else []),
      "| K | train loop: vmapped ms/step | sequential (K x one) | ratio "
      "(quartiles) | device only: vmapped ms/step | sequential (K x one) | "
      "ratio (quartiles) | vmapped memory MB | one model MB |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

  def ratio(r, name):
    lo, hi = r[f"{name}ratio_quartiles"]
    return f"{r[f'{name}vmapped_over_sequential']:.2f} ({lo:.2f}-{hi:.2f})"

  for r in rows:
    lines.append(
        f"| {r['models']} | {r['ms_per_step']:.2f} | "
        f"{r['sequential_ms_per_step']:.2f} | **{ratio(r, '')}** | "
        f"{r['device_ms_per_step']:.2f} | "
        f"{r['device_sequential_ms_per_step']:.2f} | "
        f"{ratio(r, 'device_')} | "
        f"{r['memory_mb']:.1f} | {r['sequential_memory_mb']:.1f} |")
  lines.append("")
  split = [r for r in rows if "breakdown_ms_per_step" in r]
  if split:
    lines += [
        "Where the device time goes (device only, "
        f"{_BREAKDOWN.value} calls traced per program with jax.profiler): "
        "XLA:CPU's per-operation time in the body of the loop over steps, "
        "ms per step, summed over the runtime's threads.", "",
        "| K | kind of operation | vmapped | sequential (K x one) | ratio |",
        "| ---: | --- | ---: | ---: | ---: |"]
    for r in split:
      for kind in KINDS:
        a = r["breakdown_ms_per_step"][kind]
        b = r["sequential_breakdown_ms_per_step"][kind]
        lines.append(f"| {r['models']} | {kind} | {a:.2f} | {b:.2f} | "
                     f"{a / b if b else float('nan'):.2f} |")
      a, b = (sum(r[f"{p}breakdown_ms_per_step"].values())
              for p in ("", "sequential_"))
      lines.append(f"| {r['models']} | all | {a:.2f} | {b:.2f} | "
                   f"{a / b:.2f} |")
    lines.append("")
  with open(os.path.join(_OUT.value, f"{name}.md"), "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(lambda argv: cli.run(main, argv), flags_parser=cli.parse_flags)
