"""Every config in configs/ is valid and trains a short run that improves.

Each config's `runlocal` variant, cut to 24 steps logged every 6 so the
whole family fits in the test suite's time.
"""

import glob
import json
import math
import os

import pytest

from conftest import REPO
from vae_jax import config_lib
from vae_jax import models
from vae_jax import train
from vae_jax.errors import UserError

CONFIGS = sorted(os.path.basename(p)
                 for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


def _path(name):
  return os.path.join(REPO, "configs", name)


def test_every_model_family_has_a_config():
  for name in ("mnist_vae.py", "mnist_ae.py", "mnist_dae.py",
               "mnist_sparse_ae.py", "mnist_conv_vae.py", "mnist_beta_vae.py",
               "mnist_gaussian_vae.py", "mnist_vae_nll.py", "mnist_iwae.py"):
    assert name in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid_and_has_every_field(name):
  path = _path(name)
  with open(path) as f:
    assert "python -m vae_jax." in f.read()  # The run command is documented.
  for arg in (None, "runlocal"):
    config = config_lib.get_config(path, arg)
    config_lib.validate(config)
    # Every field comes from config_lib.base(): the file adds none.
    kind = "vae" if models.is_vae(config.model) else "ae"
    assert (set(config_lib.flatten(config))
            == set(config_lib.flatten(config_lib.base(kind))))
  with pytest.raises(UserError, match="Unknown config argument 'runlokal'"):
    config_lib.get_config(path, "runlokal")


def _finite(value):
  if isinstance(value, (list, tuple)):
    return all(map(_finite, value))
  return math.isfinite(value)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_a_short_run_that_improves(name, tmp_path):
  is_table = name.startswith("tabular")
  data = {} if is_table else {
      # A tenth of the training set: loading all of it would take longer
      # than the run.
      "data.train_split": "train[:10%]",
      "data.eval_split": "test[:1000]"}  # Scoring is tested elsewhere.
  config = config_lib.get_config(_path(name), "runlocal", {
      **data,
      "training.num_steps": 24,
      "training.steps_per_call": 6,
      "training.log_every_steps": 6,
      "training.checkpoint_every_steps": 12,
      "evals.elbo.every_steps": 0,  # The final evaluation only.
      "evals.images.every_steps": 0,
      "evals.nll.num_samples": 10,
      "evals.images.num_images": 20})  # Over one row of 16, not a multiple.
  final = train.train_and_evaluate(config, str(tmp_path))
  assert all(_finite(v) for metrics in final.values()
             for v in metrics.values()), final
  with open(tmp_path / "metrics.jsonl") as f:
    losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
  assert len(losses) == 4
  assert losses[-1] < losses[0], losses
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  assert results["step"] == 24
  assert math.isfinite(results["elbo"]["loss"])
  assert results["elbo"]["num_examples"] == (114 if is_table else 1000)
  # Tables have no pictures.
  assert os.path.exists(tmp_path / "images" / "reconstructions_00000024.png"
                        ) != is_table
  if models.is_vae(config.model):
    assert math.isfinite(results["elbo"]["nelbo"])
    assert os.path.exists(tmp_path / "images" / "samples_00000024.png"
                          ) != is_table
    if config.evals.nll.enabled:
      assert math.isfinite(results["nll"]["nll"])
      assert results["nll"]["num_samples"] == 10
    else:
      assert "nll" not in results
  else:
    assert math.isfinite(results["elbo"]["psnr"])
    assert "nll" not in results
    # A finished run started again resumes at its end and scores the same.
    again = train.train_and_evaluate(config, str(tmp_path))
    assert again == final
