"""The nll evaluator on a trained workdir, through the production paths.

One small run is trained once for the module, by the command line, with the
IWAE objective (k=2) and `evals.nll.num_samples=20`; the tests read its
results.json and score its checkpoint again with `--mode=eval` and
`train.evaluate`. The estimator itself is tested in test_importance.py.
"""

import json
import math
import os
import re

import numpy as np
import pytest

from conftest import REPO, run_cli, small_config
from vae_jax import config_lib
from vae_jax import train
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError

# A few steps of the IWAE objective (k=2) and the NLL with K=20 in chunks
# of 8, over the 10 test batches of 1000 (SMALL's eval.batch_size).
RUN = {"training.num_epochs": 0.05, "objective.name": "iwae",
       "objective.num_samples": 2, "evals.nll.num_samples": 20,
       "evals.nll.chunk_size": 8}
CPU = {"JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, results.json and stderr of the training run)."""
  workdir = str(tmp_path_factory.mktemp("nll") / "run")
  proc = run_cli(workdir, RUN, env=CPU)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, workdir_lib.read_results(workdir), proc.stderr


def _one_sentence(message):
  assert "\n" not in message and message.endswith("."), message
  assert not re.search(r"[.:;!?]\s+[A-Z]", message), message


def test_training_reports_the_nll(run):
  workdir, results, stderr = run
  nll, elbo = results["nll"], results["elbo"]
  step = results["step"]
  assert step == 23  # 0.05 epochs of 468 steps.
  # The evaluator's progress and headline in the log.
  assert "IS-NLL (k=20) batch 10/10 (100%)" in stderr and "ETA" in stderr
  assert f"nll at step {step}: IS-NLL" in stderr
  # How the number was obtained.
  assert nll["num_samples"] == 20 and nll["chunk_size"] == 8
  assert nll["num_examples"] == 10000 and nll["split"] == "test"
  assert nll["binarization"] == "fixed, seed 0"
  assert "importance sampling, k=20" in nll["estimator"]
  assert nll["device"] and "eval_time_s" not in nll  # Reproducible file.
  # One number per quantity: the single-sample terms are the elbo
  # evaluator's.
  assert not {"nelbo", "recon", "kl"} & set(nll)
  # The estimate and its definitions.
  assert np.isfinite(nll["nll"]) and nll["nll_stderr"] > 0
  assert nll["nll"] <= nll["nelbo_k"]  # Jensen, example by example.
  assert nll["elbo_gap"] == pytest.approx(nll["nelbo_k"] - nll["nll"])
  assert nll["nll_bits_per_dim"] == pytest.approx(
      nll["nll"] / (784 * math.log(2)))
  # The same binarized test set and parameters as the elbo evaluator: the
  # IS-NLL is below its -ELBO, the K-sample -ELBO agrees with the
  # single-sample one, and the closed-form KL is the same.
  assert nll["nll"] <= elbo["nelbo"] + 0.5
  assert nll["nelbo_k"] == pytest.approx(elbo["nelbo"], abs=0.5)
  assert sum(nll["kl_per_dim"]) == pytest.approx(elbo["kl"], rel=1e-4)
  # Latent diagnostics, one entry per unit.
  assert len(nll["kl_per_dim"]) == 8
  variance = np.asarray(nll["posterior_mean_variance"])
  assert variance.shape == (8,) and np.all(variance >= 0)
  assert nll["active_units"] == int(np.sum(
      variance > nll["active_unit_threshold"]))
  assert 0 <= nll["active_units"] <= 8
  # Scalars in metrics.jsonl, at the last step.
  rows = [r for r in _jsonl(workdir) if "nll/nll" in r]
  assert [r["step"] for r in rows] == [step]
  assert rows[0]["nll/nll"] == pytest.approx(nll["nll"])


def _jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_eval_mode_rescores_with_more_samples(run):
  workdir, trained, _ = run
  proc = run_cli(workdir, {**RUN, "evals.nll.num_samples": 50}, mode="eval",
                 env=CPU)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "IS-NLL (k=50) batch 10/10 (100%)" in proc.stderr
  assert "ETA" in proc.stderr
  assert "Training" not in proc.stderr  # No step was taken.
  results = workdir_lib.read_results(workdir)
  assert results["step"] == trained["step"]
  nll = results["nll"]
  assert nll["num_samples"] == 50 and np.isfinite(nll["nll"])
  # A tighter bound: samples 0..19 of each example are those of K=20.
  assert nll["nll"] <= trained["nll"]["nll"]
  assert nll["nll"] <= nll["nelbo_k"]
  # The other evaluators' numbers are those written by training.
  assert results["elbo"]["nelbo"] == pytest.approx(trained["elbo"]["nelbo"],
                                                   rel=1e-6)


def test_estimate_does_not_depend_on_chunk_or_batch_size(run):
  workdir, trained, _ = run
  # In process, as --mode=eval calls it: other chunks and batches, the
  # same samples and the same numbers.
  config = small_config(**{**RUN, "evals.nll.chunk_size": 5,
                           "eval.batch_size": 500,
                           "evals.elbo.enabled": False,
                           "evals.images.enabled": False,
                           "evals.latent_maps.enabled": False})
  final = train.evaluate(config, workdir)
  assert set(final) == {"nll"}
  nll, expected = final["nll"], trained["nll"]
  for name in ("nll", "nelbo_k", "nll_stderr"):
    assert nll[name] == pytest.approx(expected[name], rel=1e-5), name
  np.testing.assert_allclose(nll["kl_per_dim"], expected["kl_per_dim"],
                             rtol=1e-4)
  results = workdir_lib.read_results(workdir)
  assert results["nll"]["chunk_size"] == 5
  assert results["nll"]["nll"] == nll["nll"]


def test_nll_of_an_autoencoder_is_a_one_sentence_user_error(tmp_path):
  path = os.path.join(REPO, "configs", "mnist_ae.py")
  config_lib.validate(config_lib.get_config(path))  # Off by default.
  config = config_lib.get_config(path, None, {"evals.nll.enabled": True})
  workdir = tmp_path / "ae"
  with pytest.raises(UserError, match="autoencoder") as e:
    train.train_and_evaluate(config, str(workdir))
  _one_sentence(str(e.value))
  assert "evals.nll.enabled=False" in str(e.value)
  assert not workdir.exists()


@pytest.mark.parametrize("field", ["num_samples", "chunk_size"])
def test_bad_nll_sizes_are_user_errors_before_any_data(run, tmp_path, field):
  workdir, _, _ = run
  # No dataset there and no download: loading any data would fail with
  # another error, so the size must be refused first.
  no_data = {"data.data_dir": str(tmp_path / "no_data"),
             "data.download": False}
  bad = small_config(**{**RUN, **no_data, f"evals.nll.{field}": 0})
  fresh = tmp_path / "fresh"
  with pytest.raises(UserError, match=f"evals.nll.{field} must be a positive integer"):
    train.train_and_evaluate(bad, str(fresh))
  assert not fresh.exists()
  with pytest.raises(UserError, match=f"evals.nll.{field} must be a positive integer"):
    train.evaluate(bad, workdir)
  # The control: with good sizes, the same config does reach the data.
  with pytest.raises(UserError, match="not prepared"):
    train.evaluate(small_config(**{**RUN, **no_data}), workdir)


def test_eval_needs_a_checkpoint(tmp_path):
  untrained = tmp_path / "untrained"
  os.makedirs(untrained)
  config = small_config(**RUN)
  workdir_lib.write_config(str(untrained), config)
  with pytest.raises(UserError, match="no checkpoint"):
    train.evaluate(config, str(untrained))
