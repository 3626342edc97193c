"""Shared test helpers: small real-MNIST configs, subprocess runs, the
session's trained workdir and its persistent compilation cache."""

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import ml_collections
import pytest

from vae_jax import config_lib
from vae_jax import steps
from vae_jax import train
from vae_jax.evaluators import elbo as elbo_evaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "mnist_vae.py")

# A run of ~100 steps that still learns: what the end-to-end tests train.
SMALL = {
    "model.hidden": (128,),
    "model.latent_dim": 8,
    "optimizer.learning_rate": 5e-3,
    "optimizer.warmup_steps": 100,
    "training.num_epochs": 0.2,
    "training.steps_per_call": 10,
    # Not a divisor of the checkpoint interval: resumes start mid-window.
    "training.log_every_steps": 15,
    "training.checkpoint_every_steps": 20,
    "evals.elbo.every_steps": 30,
    "evals.images.every_steps": 30,
    "eval.batch_size": 1000,
    "evals.images.num_images": 16,
    "evals.nll.num_samples": 10,
}


# A sweep config file for the sweep runner: SMALL runs, scored on the first
# 1000 test images (scoring is tested elsewhere), one point per dict.
_SWEEP_TEMPLATE = '''
from vae_jax import config_lib

def get_config(arg=None):
  config = config_lib.get_config({base!r}, None, {overrides!r})
  config.sweep = {{"max_group_size": {max_group_size}}}
  return config

def sweep(add):
  for point in {points!r}:
    add(**point)
'''


def write_sweep_config(path, points, max_group_size, **overrides):
  """Writes a sweep config of `points` (override dicts) to `path`."""
  overrides = {**SMALL, "data.eval_split": "test[:1000]",
               "evals.nll.enabled": False, **overrides}
  path.write_text(_SWEEP_TEMPLATE.format(
      base=DEFAULT_CONFIG, overrides=overrides, points=list(points),
      max_group_size=max_group_size))
  return path


def small_config(**overrides):
  return config_lib.get_config(DEFAULT_CONFIG, None, {**SMALL, **overrides})


def cli_args(overrides: dict) -> list[str]:
  args = []
  for k, v in overrides.items():
    if isinstance(v, tuple):
      v = "(" + ",".join(map(str, v)) + ",)"
    args.append(f"--config.{k}={v}")
  return args


def run_cli(workdir, overrides=None, mode="train", env=None, **kwargs):
  """Runs `python -m vae_jax.main` on the default config plus overrides."""
  cmd = [sys.executable, "-m", "vae_jax.main", f"--config={DEFAULT_CONFIG}",
         f"--workdir={workdir}", f"--mode={mode}",
         *cli_args({**SMALL, **(overrides or {})})]
  return subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, **kwargs)


def popen_cli(workdir, overrides=None):
  cmd = [sys.executable, "-m", "vae_jax.main", f"--config={DEFAULT_CONFIG}",
         f"--workdir={workdir}", *cli_args({**SMALL, **(overrides or {})})]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


# ----------------------------------------------------------------------------
# One test run: what its workers (pytest-xdist) and subprocesses share.


def shared_root(tmp_path_factory):
  """A directory shared by every worker of this test run."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # The workers' base temps are its subdirectories.
  return root


@contextlib.contextmanager
def file_lock(path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
  """A persistent compilation cache for the run, in the tests' processes and
  the subprocesses they start (which inherit the environment).

  Most end-to-end tests compile the same few programs (the train step and
  evaluators of `SMALL`), each in its own process: compiled once, the
  others load it. A cache hit returns the same executable, so bit-identical
  comparisons still hold; JAX_LOG_COMPILES still logs every compilation
  (hit or not), so tests that count them still do. Fresh per test run.
  """
  factory = getattr(config, "_tmp_path_factory", None)
  if factory is None:
    return
  cache = shared_root(factory) / "jax_compilation_cache"
  cache.mkdir(exist_ok=True)
  settings = {"JAX_COMPILATION_CACHE_DIR": str(cache),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  os.environ.update(settings)
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@contextlib.contextmanager
def counting(module, name, calls):
  """Counts calls of `module.name` (as looked up by its callers) in `calls`."""
  fn = getattr(module, name)

  def counted(*args, **kwargs):
    calls.append(args)
    return fn(*args, **kwargs)

  with pytest.MonkeyPatch.context() as m:
    m.setattr(module, name, counted)
    yield calls


# ----------------------------------------------------------------------------
# The shared trained workdir.


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  config: ml_collections.ConfigDict
  workdir: str  # Read only: copy it to change anything.
  final: dict  # What train_and_evaluate returned.
  validate_calls: int  # config_lib.validate calls during the run.


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
  """`small_config()` trained in-process, once per test run.

  Every step is traced once, whatever the chunk lengths, evaluations and
  checkpoints in between (a retrace would recompile): `steps.train_step`
  and the -ELBO evaluator's per-batch function once each. A second trace
  fails the run, and with it every test that uses it.
  """
  root = shared_root(tmp_path_factory)
  workdir, done = root / "trained_small", root / "trained_small.json"
  config = small_config()
  with file_lock(str(root / "trained_small.lock")):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      validations = []
      with pytest.MonkeyPatch.context() as m, counting(
          config_lib, "validate", validations):
        m.setattr(steps, "train_step",
                  chex.assert_max_traces(steps.train_step, n=1))
        m.setattr(elbo_evaluator, "_batch_sums",
                  chex.assert_max_traces(elbo_evaluator._batch_sums, n=1))
        final = train.train_and_evaluate(config, str(workdir))
      done.write_text(json.dumps({"final": final,
                                  "validate_calls": len(validations)}))
  record = json.loads(done.read_text())
  return TrainedRun(config=config, workdir=str(workdir),
                    final=record["final"],
                    validate_calls=record["validate_calls"])
