"""Shared test helpers: small real-MNIST configs and subprocess runs."""

import os
import subprocess
import sys

from vae_jax import config_lib

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
