"""Every config in configs/ trains a short run of its own model and improves.

Each config's `runlocal` variant, cut to 24 steps logged every 6 so the
whole family fits in the test suite's time.
"""

import glob
import json
import math
import os

import pytest

from conftest import REPO
from vae_jax import config_utils
from vae_jax import train

CONFIGS = sorted(os.path.basename(p)
                 for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


def test_every_model_family_has_a_config():
  for name in ("mnist_vae.py", "mnist_ae.py", "mnist_dae.py",
               "mnist_sparse_ae.py", "mnist_conv_vae.py", "mnist_beta_vae.py",
               "mnist_gaussian_vae.py", "mnist_vae_nll.py", "mnist_iwae.py"):
    assert name in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_a_short_run_that_improves(name, tmp_path):
  path = os.path.join(REPO, "configs", name)
  with open(path) as f:
    assert "python -m vae_jax." in f.read()  # The run command is documented.
  config = config_utils.get_config(path, "runlocal", {
      "training.num_epochs": 0.052,  # 24 steps.
      "training.steps_per_call": 6,
      "training.log_every_steps": 6,
      "training.checkpoint_every_steps": 12,
      "eval.every_steps": 0,  # The final evaluation only.
      "eval.num_importance_samples": 10,
      "eval.num_images": 20,  # Over one row of 16, not a multiple of it.
      "data.eval_split": "test[:1000]"})  # Scoring is tested elsewhere.
  final = train.train_and_evaluate(config, str(tmp_path))
  assert all(math.isfinite(v) for v in final.values()), final
  with open(tmp_path / "metrics.jsonl") as f:
    losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
  assert len(losses) == 4
  assert losses[-1] < losses[0], losses
  results = json.load(open(tmp_path / "results.json"))
  assert math.isfinite(results["test/loss"])
  if config.model.name.endswith("_vae"):
    nll = json.load(open(tmp_path / "eval.json"))
    assert math.isfinite(nll["nll"]) and nll["num_importance_samples"] == 10
  else:
    # A finished run started again resumes at its end and scores the same.
    again = train.train_and_evaluate(config, str(tmp_path))
    assert again == final
