r"""Per-step time and memory of K vmapped models against K sequential ones.

  python experiments/benchmark_sweep.py [--group_sizes=1,2,4,8,16]

For each K, a group of K MLP VAEs 784-500-20 (batch 128, dynamic
binarization, betas spread over [0.5, 4]) is compiled as one vmapped
program and timed on a chunk of steps already on the device (median of
--repeats calls of `training.steps_per_call` steps). "Sequential" is K times
the measured time of one model, what K separate runs spend per step.
Memory is XLA's compiled memory analysis of the group program (arguments,
outputs and temporaries). Writes `benchmark_sweep.json` and `.md`.
"""

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import config_utils  # pylint: disable=g-import-not-at-top
from vae_jax import train  # pylint: disable=g-import-not-at-top

_SIZES = flags.DEFINE_list("group_sizes", ["1", "2", "4", "8", "16"],
                           "Numbers of models per group.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls per group size.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")


def measure(k: int, repeats: int) -> dict:
  configs = [config_utils.get_config(
      os.path.join(REPO, "configs", "mnist_vae.py"), None,
      {"objective.beta": float(b), "seed": i})
             for i, b in enumerate(np.linspace(0.5, 4.0, k))]
  setup = train.Setup(configs)
  state, keys, hparams, eval_keys = setup.place(
      configs, [setup.init_state(c) for c in configs])
  setup.compile(state, keys, hparams, eval_keys)
  memory = setup.run_steps.memory_analysis()
  steps = configs[0].training.steps_per_call
  images, n = setup.chunk(0, steps), setup.scalar(steps)
  sums, finite = setup.zero_sums(), setup.scalar(True)
  state, sums, finite = setup.run_steps(state, images, n, keys, hparams, sums,
                                        finite)
  jax.block_until_ready(sums)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, sums, finite = setup.run_steps(state, images, n, keys, hparams,
                                          sums, finite)
    jax.block_until_ready(sums)
    times.append(time.perf_counter() - start)
  assert bool(finite)
  return {"models": k, "ms_per_step": 1e3 * float(np.median(times)) / steps,
          "memory_mb": (memory.argument_size_in_bytes
                        + memory.output_size_in_bytes
                        + memory.temp_size_in_bytes) / 2**20,
          "temp_mb": memory.temp_size_in_bytes / 2**20}


def main(argv):
  del argv
  rows = [measure(int(k), _REPEATS.value) for k in _SIZES.value]
  single = next(r for r in rows if r["models"] == 1)
  for r in rows:
    r["sequential_ms_per_step"] = r["models"] * single["ms_per_step"]
    r["vmapped_over_sequential"] = (r["ms_per_step"]
                                    / r["sequential_ms_per_step"])
    r["sequential_memory_mb"] = single["memory_mb"]  # One model at a time.
  device = jax.devices()[0]
  results = {"model": "MLP VAE 784-500-20, batch 128, dynamic binarization",
             "device": f"{device.platform}: {device.device_kind}",
             "host": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} cores",
             "jax": jax.__version__, "rows": rows}
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "benchmark_sweep.json"), "w") as f:
    json.dump(results, f, indent=2)
  lines = [
      f"# K vmapped models vs K sequential: {results['model']}", "",
      f"Device: {results['device']} ({results['host']}), jax {results['jax']}.",
      "Command: `python experiments/benchmark_sweep.py "
      f"--group_sizes={','.join(_SIZES.value)}`", "",
      "| K | vmapped ms/step | sequential ms/step (K x one) | ratio | "
      "vmapped memory MB | one model MB |",
      "| ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    lines.append(
        f"| {r['models']} | {r['ms_per_step']:.2f} | "
        f"{r['sequential_ms_per_step']:.2f} | "
        f"{r['vmapped_over_sequential']:.2f} | {r['memory_mb']:.1f} | "
        f"{r['sequential_memory_mb']:.1f} |")
  lines.append("")
  with open(os.path.join(_OUT.value, "benchmark_sweep.md"), "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
