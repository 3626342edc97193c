r"""The IS-NLL evaluator against its FLOP floor.

  python experiments/benchmark_nll.py [--workdir=workdirs/mnist_vae_best] \
      [--num_samples=5000] [--chunk_size=...] [--batch_size=...] \
      [--num_examples=0] [--out=experiments/results]

Times `evals.nll` (`vae_jax.evaluators.nll`, the evaluator that training
and `--mode=eval` run) on the test set of the run in --workdir at its
latest checkpoint (without --workdir: the default config's model at its
initialization; only shapes matter for the time), compiled first, and sets
its wall time against:

  * its FLOPs: XLA's cost analysis of the evaluation
    (`nll_flops.evaluation_flops`, padding included);
  * the FLOP floor: those FLOPs at the GFLOP/s this device reaches on the
    evaluation's own matmul shapes, each timed alone in a dispatch-free loop
    (`matmul_ceiling.floor` of one test batch).

Writes `benchmark_nll.json` and `.md` to --out (`benchmark_nll_<n>.*` with
--num_examples=n, a subset for quick looks).
"""

import dataclasses
import functools
import json
import os
import platform
import sys
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
import nll_flops
from vae_jax import cli
from vae_jax import config_lib
from vae_jax import evaluators
from vae_jax import importance
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import sharding
from vae_jax import steps
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", "", "A trained VAE's run; empty: "
                               "the default config at initialization.")
_K = flags.DEFINE_integer("num_samples", 5000, "K importance samples.")
_CHUNK = flags.DEFINE_integer("chunk_size", None,
                              "Default: the config's evals.nll.chunk_size.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Default: the config's eval.batch_size.")
_N = flags.DEFINE_integer("num_examples", 0,
                          "The first n test examples; 0: all.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")


def _config():
  if _WORKDIR.value:
    if not os.path.isdir(_WORKDIR.value):
      raise UserError(f"Workdir {_WORKDIR.value} does not exist.")
    config = workdir_lib.load_config(_WORKDIR.value)
  else:
    config = config_lib.get_config(
        os.path.join(REPO, "configs", "mnist_vae.py"), None, {})
  config.unlock()
  for name in config.evals:
    config.evals[name].enabled = name == "nll"
  config.evals.nll.num_samples = _K.value
  if _CHUNK.value:
    config.evals.nll.chunk_size = _CHUNK.value
  if _BATCH.value:
    config.eval.batch_size = _BATCH.value
  config_lib.validate(config)
  return config


def main(argv):
  del argv
  config = _config()
  data = input_pipeline.load(config.data, train=False)
  if _N.value:
    data = dataclasses.replace(
        data, test_x=data.test_x[:_N.value],
        test_labels=None if data.test_labels is None
        else data.test_labels[:_N.value])
  model = models.create_model(config.model, data.event_shape)
  params = models.init_params(model, jax.random.key(0), data.event_shape)
  step = 0
  if _WORKDIR.value:
    manager = workdir_lib.checkpoint_manager(_WORKDIR.value)
    step = manager.latest_step()
    if step is None:
      raise UserError(f"Workdir {_WORKDIR.value} holds no checkpoint; train "
                      "first.")
    params = workdir_lib.restore_checked(manager, step, params,
                                         params_only=True)
  mesh = sharding.create(config.training.model_axis_size)
  ctx = evaluators.Context(configs=[config], model=model,
                           objective=objectives.create(config.objective,
                                                       model),
                           data=data, mesh=mesh, workdirs=None)
  keys = steps.Keys.from_seed(config.seed)
  stacked = lambda tree: jax.tree.map(
      lambda a: sharding.global_array(np.asarray(a)[None], mesh.models), tree)
  state = steps.TrainState(
      step=stacked(np.int32(step)), params=stacked(params), opt_state=None,
      rng=stacked(jax.random.key_data(keys.loop)), hparams=None)
  nll = evaluators.create(ctx)["nll"]
  nll.compile(state)
  start = time.perf_counter()
  metrics = nll.run(state)[0].metrics
  seconds = time.perf_counter() - start

  k, chunk = _K.value, min(config.evals.nll.chunk_size, _K.value)
  batch = config.eval.batch_size
  flops = nll_flops.evaluation_flops(config, k, chunk, batch)
  if _N.value:  # evaluation_flops reads the whole test split.
    num_batches = -(-_N.value // batch)
    flops["num_examples"], flops["num_batches"] = _N.value, num_batches
    flops["flops"] = num_batches * flops["flops_per_batch"]
  images = jnp.zeros((batch, *data.event_shape), jnp.uint8)
  one_batch = functools.partial(importance.evaluate_batch, model,
                                num_samples=k, chunk_size=chunk)
  floor = matmul_ceiling.floor(one_batch, params, images,
                               jnp.ones((batch,)), keys.importance,
                               jnp.zeros((), jnp.int32))
  floor_seconds = flops["flops"] / (floor["gflops"] * 1e9)
  device = jax.devices()[0]
  results = {
      "workdir": _WORKDIR.value or None, "step": step,
      "model": f"{config.model.name} {config.model.hidden} latent "
               f"{config.model.latent_dim}",
      "device": f"{device.platform}: {device.device_kind}",
      "num_devices": jax.device_count(),
      "host": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores",
      "jax": jax.__version__, "num_samples": k, "chunk_size": chunk,
      "batch_size": batch, **{f"flops_{n}": v for n, v in flops.items()
                              if n not in ("num_samples", "chunk_size",
                                           "batch_size")},
      "seconds": seconds, "gflops": flops["flops"] / seconds / 1e9,
      "floor_gflops": floor["gflops"], "floor_seconds": floor_seconds,
      "over_floor": seconds / floor_seconds,
      "dot_floor_seconds": floor["seconds"] * flops["num_batches"],
      "dots": floor["dots"],
      "nll": metrics["nll"], "nll_stderr": metrics["nll_stderr"],
  }
  suffix = f"_{_N.value}" if _N.value else ""
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, f"benchmark_nll{suffix}.json"), "w") as f:
    json.dump(results, f, indent=2)
  r = results
  lines = [
      f"# IS-NLL evaluator vs its FLOP floor: {r['model']}", "",
      f"Device: {r['device']} ({r['host']}), jax {r['jax']}.",
      "Command: `python experiments/benchmark_nll.py"
      + (f" --workdir={r['workdir']}" if r["workdir"] else "")
      + f" --num_samples={k} --chunk_size={chunk} --batch_size={batch}"
      + (f" --num_examples={_N.value}" if _N.value else "") + "`", "",
      f"k = {k} importance samples for each of {r['flops_num_examples']:,} "
      f"test examples ({r['flops_num_batches']} batches of {batch}, chunks "
      f"of {chunk} samples), the run at step {step}: IS-NLL "
      f"{r['nll']:.3f} +- {r['nll_stderr']:.3f} nats.", "",
      "| | value |", "| --- | ---: |",
      f"| wall time of `evals.nll` (compiled before) | {seconds:.1f} s |",
      f"| FLOPs (XLA cost analysis, padding included) | {r['flops_flops']:.3e} |",
      f"| achieved | {r['gflops']:.0f} GFLOP/s |",
      f"| this device on the evaluation's matmul shapes alone | "
      f"{r['floor_gflops']:.0f} GFLOP/s |",
      f"| FLOP floor (FLOPs at that rate) | {floor_seconds:.1f} s |",
      f"| **wall time / FLOP floor** | **{r['over_floor']:.2f}x** |",
      f"| matmuls alone (their own FLOPs only) | "
      f"{r['dot_floor_seconds']:.1f} s |", "",
      "| dot of one batch | count | GFLOP each | GFLOP/s alone |",
      "| --- | ---: | ---: | ---: |"]
  for d in r["dots"]:
    lines.append(f"| {d['shape']} | {d['count']} | {d['flops'] / 1e9:.3f} | "
                 f"{d['gflops']:.0f} |")
  table = "\n".join(lines) + "\n"
  with open(os.path.join(_OUT.value, f"benchmark_nll{suffix}.md"), "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  app.run(lambda argv: cli.run(main, argv), flags_parser=cli.parse_flags)
