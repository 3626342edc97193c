r"""Which XLA options the CPU programs should use (`vae_jax/compiler.py`).

  python experiments/compiler_options.py [--repeats=5]

Times, interleaved in one process (so every setting sees the same machine
load), the programs that `compiler.jit` compiles, under each value of
XLA's `xla_cpu_experimental_ynn_fusion_type` (which fusions go to the
YNNPACK library), with none of them and XLA's tree reductions off
(`xla_disable_hlo_passes=tree_reduction_rewriter`), and the last two
compiled with LLVM at optimization level 1 instead of XLA's default, 3
(`xla_backend_optimization_level`; `compiler.options()` for
convolutional models and for MLPs):

- the train chunk per step (`train.chunk_program`'s program, 10 steps per
  call, batch 128, dynamic binarization) of the MLP VAE 784-500-20, the
  default config's 784-500-500-50 and `configs/mnist_conv_vae.py`'s conv
  VAE;
- one chunk of the IS-NLL evaluator (`importance.evaluate_batch` on 500 test
  images, 100 samples per chunk, 2 chunks per call) of the 784-500-500-50
  VAE, with the largest change of its per-image log p(x)
  against `dots` (float rounding only).

Medians of --repeats calls, and the compile time of each program (lower and
compile, seconds). A level-1 setting's train chunk also shows the largest
change of a parameter against its level-3 twin after the same calls from
the same initial state. Writes `experiments/results/compiler_options.md`
and `.json`. CPU only (other backends ignore the options).
"""

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
# pylint: disable=g-import-not-at-top,wrong-import-position
from vae_jax import cli
from vae_jax import config_lib
from vae_jax import importance
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import sharding
from vae_jax import steps
from vae_jax import train
from vae_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per program.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")

OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA:CPU rewrites a reduction over more than 32 elements into sums of
# windows of 32 (reduce-window) and a sum of those: slow kernels on the CPU.
NO_TREE = {"xla_disable_hlo_passes": "tree_reduction_rewriter"}
SETTINGS = {"all (jax's default)": None,
            "dots": {OPTION: "LIBRARY_FUSION_TYPE_DOT"},
            "individual dots": {OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
            "none": {OPTION: ""},
            "none, no tree reductions": {OPTION: "", **NO_TREE}}
LEVEL_1 = {"xla_backend_optimization_level": 1}
SETTINGS.update({f"{name}, LLVM -O1": {**SETTINGS[name], **LEVEL_1}
                 for name in ("none", "none, no tree reductions")})
MODELS = {
    "784-500-20": ("mnist_vae.py", {"model.hidden": (500,),
                                    "model.latent_dim": 20}),
    "784-500-500-50": ("mnist_vae.py", {}),
    "conv VAE": ("mnist_conv_vae.py", {}),
}
EVAL_BATCH, CHUNK = 500, 100


STEPS = 10  # Train steps per timed call.


def _config(name: str, overrides: dict):
  return config_lib.get_config(os.path.join(REPO, "configs", name), None,
                               {**overrides,
                                "training.steps_per_call": STEPS})


def train_chunk(config, data, options):
  """`() -> seconds per step` of the train loop's chunk program, its compile
  seconds and `() -> parameters` (as the calls left them)."""
  _, total = train.schedule_length(config, data.num_train_examples)
  model, objective, tx, schedule = train.build_model(
      config, data.event_shape, total)
  mesh = sharding.create(1)
  state = steps.stack(train.initial_states([config], model, tx,
                                           data.event_shape, mesh))
  c = config.training.steps_per_call
  images = train.batch_source(config, data, mesh)(0, c)
  scalar = functools.partial(sharding.scalar, sharding=mesh.replicated)
  names = steps.metric_names(objective, state,
                             (config.training.batch_size, *data.event_shape))
  box = {"state": state, "sums": {m: np.zeros(1, np.float32) for m in names}}
  fn = jax.jit(functools.partial(
      steps.train_chunk, step_fn=train.model_step(objective, tx, schedule),
      binarization=data.binarization,
      data_seed=config.data.shuffle_seed), donate_argnums=(0, 4),
               compiler_options=options)
  start = time.perf_counter()
  run = fn.lower(box["state"], images, scalar(c), scalar(0), box["sums"],
                 scalar(True)).compile()
  compile_seconds = time.perf_counter() - start

  def call():
    start = time.perf_counter()
    box["state"], box["sums"], _ = run(box["state"], images, scalar(c),
                                       scalar(0), box["sums"], scalar(True))
    jax.block_until_ready(box["sums"])
    return (time.perf_counter() - start) / c

  return call, compile_seconds, lambda: jax.tree.leaves(box["state"].params)


def nll_chunk(config, data, options):
  """`() -> seconds per chunk` of the IS-NLL evaluator, its compile seconds
  and its log p(x)."""
  model = models.create_model(config.model, data.event_shape)
  params = models.init_params(model, jax.random.key(0), data.event_shape)
  args = (params, jnp.asarray(data.test_x[:EVAL_BATCH]),
          jnp.ones((EVAL_BATCH,)), steps.Keys.from_seed(0).importance,
          jnp.zeros((), jnp.int32))
  start = time.perf_counter()
  run = jax.jit(functools.partial(
      importance.evaluate_batch, model, num_samples=2 * CHUNK,
      chunk_size=CHUNK), compiler_options=options).lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  log_px = np.asarray(run(*args)["log_px"])

  def call():
    start = time.perf_counter()
    jax.block_until_ready(run(*args))
    return (time.perf_counter() - start) / 2

  return call, compile_seconds, log_px


def main(argv):
  del argv
  if _REPEATS.value < 1:
    raise UserError(f"--repeats must be >= 1, got {_REPEATS.value}.")
  if jax.default_backend() != "cpu":
    raise UserError("The YNNPACK option is the CPU's: run this on a CPU "
                    "(JAX_PLATFORMS=cpu).")
  calls, compile_seconds, params, log_px = {}, {}, {}, {}
  for name, (file, overrides) in MODELS.items():
    config = _config(file, overrides)
    data = input_pipeline.load(config.data)
    for setting, value in SETTINGS.items():
      (calls[(name, setting)], compile_seconds[(name, setting)],
       params[(name, setting)]) = train_chunk(config, data, value)
  config = _config("mnist_vae.py", {})
  data = input_pipeline.load(config.data, train=False)
  for setting, value in SETTINGS.items():
    (calls[("IS-NLL", setting)], compile_seconds[("IS-NLL", setting)],
     log_px[setting]) = nll_chunk(config, data, value)
  for fn in calls.values():  # Warm-up.
    fn()
  times = {key: [] for key in calls}
  for _ in range(_REPEATS.value):
    for key, fn in calls.items():
      times[key].append(fn())
  medians = {key: float(np.median(v)) for key, v in times.items()}
  first = "dots"
  moved = {s: float(np.max(np.abs(log_px[s] - log_px[first])))
           for s in SETTINGS}
  # Level 1 against XLA's default level 3 (its twin): every setting made the same calls
  # from the same initial state.
  twins = {s: s.removesuffix(", LLVM -O1") for s in SETTINGS
           if s.endswith(", LLVM -O1")}
  params_moved = {
      f"{m} / {s}": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                        for a, b in zip(params[(m, s)](), params[(m, t)]()))
      for m in MODELS for s, t in twins.items()}
  log_px_moved_o1 = {s: float(np.max(np.abs(log_px[s] - log_px[t])))
                     for s, t in twins.items()}
  results = {
      "device": jax.devices()[0].device_kind,
      "host": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "jax": jax.__version__,
      "repeats": _REPEATS.value,
      "seconds": {f"{k[0]} / {k[1]}": v for k, v in medians.items()},
      "compile_seconds": {f"{k[0]} / {k[1]}": v
                          for k, v in compile_seconds.items()},
      "max_log_px_change_nats": moved,
      "level_1_vs_2_max_param_change": params_moved,
      "level_1_vs_2_max_log_px_change_nats": log_px_moved_o1}
  programs = [*MODELS, "IS-NLL"]
  lines = [
      "# XLA options of the CPU programs: YNNPACK fusions "
      f"(`{OPTION}`) and tree reductions", "",
      f"Host: {results['host']}, jax {results['jax']}. Command: "
      f"`python experiments/compiler_options.py --repeats={_REPEATS.value}` "
      "(medians, all settings interleaved in one process).", "",
      "Train chunk: milliseconds per step (batch 128). IS-NLL: seconds per "
      f"chunk of {EVAL_BATCH} test images x {CHUNK} samples (784-500-500-50, "
      "initial parameters), and the largest change of an image's log p(x) "
      f"against `{first}`.", "",
      "| setting | " + " | ".join(programs) + " | log p(x) moved |",
      "| --- | " + " | ".join("---:" for _ in programs) + " | ---: |"]
  for s in SETTINGS:
    cells = [f"{1e3 * medians[(p, s)]:.2f} ms" for p in MODELS]
    cells.append(f"{medians[('IS-NLL', s)]:.3f} s")
    lines.append(f"| {s} | " + " | ".join(cells)
                 + f" | {moved[s]:.1e} nats |")
  lines += ["", "Compile seconds (lower and compile) of each program:", "",
            "| setting | " + " | ".join(programs) + " |",
            "| --- | " + " | ".join("---:" for _ in programs) + " |"]
  for s in SETTINGS:
    lines.append(f"| {s} | " + " | ".join(
        f"{compile_seconds[(p, s)]:.2f}" for p in programs) + " |")
  lines += ["", "LLVM level 1 against XLA's default level 3: the largest change of a "
            "parameter after the same train calls, and of an image's "
            "IS-NLL log p(x):", "",
            "| setting | " + " | ".join(programs) + " |",
            "| --- | " + " | ".join("---:" for _ in programs) + " |"]
  for s in twins:
    lines.append(f"| {s} | " + " | ".join(
        f"{params_moved[f'{m} / {s}']:.1e}" for m in MODELS)
                 + f" | {log_px_moved_o1[s]:.1e} nats |")
  table = "\n".join(lines) + "\n"
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "compiler_options.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(_OUT.value, "compiler_options.md"), "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  app.run(lambda argv: cli.run(main, argv), flags_parser=cli.parse_flags)
