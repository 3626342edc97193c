"""End-to-end tests of the train loop on real MNIST (TFDS_DATA_DIR)."""

import json
import os
import re
import signal
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import popen_cli, run_cli, small_config
from vae_jax import train
from vae_jax.errors import UserError


def _jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.StandardRestore())
  return manager.latest_step(), restored


def test_trains_on_mnist_and_writes_outputs(tmp_path, monkeypatch):
  # Every step must be traced once, whatever the chunk lengths, evaluations
  # and checkpoints in between (each retrace would recompile).
  monkeypatch.setattr(train, "train_step",
                      chex.assert_max_traces(train.train_step, n=1))
  monkeypatch.setattr(train, "eval_sums",
                      chex.assert_max_traces(train.eval_sums, n=1))
  workdir = str(tmp_path)
  config = small_config(**{"training.num_epochs": 0.3})  # 140 steps.
  final = train.train_and_evaluate(config, workdir)

  evals = [r for r in _jsonl(workdir) if "eval/nelbo" in r]
  assert [r["step"] for r in evals] == [30, 60, 90, 120, 140]
  assert evals[-1]["eval/nelbo"] < evals[0]["eval/nelbo"] - 20
  assert np.isfinite(final["nelbo"]) and final["nelbo"] < 200
  results = _results(workdir)
  assert results["num_examples"] == 10000
  assert results["test/nelbo"] == pytest.approx(final["nelbo"])
  assert results["test/nelbo"] == pytest.approx(
      results["test/recon"] + results["test/kl"], rel=1e-6)
  assert results["test/bits_per_dim"] == pytest.approx(
      final["nelbo"] / (784 * np.log(2)))
  train_rows = [r for r in _jsonl(workdir) if "train/loss" in r]
  assert len(train_rows) == 14 and train_rows[0]["train/img_per_sec"] > 0
  with open(os.path.join(workdir, "eval.json")) as f:
    nll = json.load(f)  # The importance-sampled NLL run after training.
  assert nll["num_importance_samples"] == 10
  assert nll["nll"] <= results["test/nelbo"] + 0.5
  for name in ("config.json", "results.json", "metrics.jsonl",
               "images/reconstructions_00000140.png",
               "images/samples_00000140.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tb")))


def test_eval_is_exact_over_the_test_set(tmp_path):
  """Padding never counts: eval batch 999 (padded) scores like 1000."""
  config = small_config(**{"training.num_epochs": 0.05})
  train.train_and_evaluate(config, str(tmp_path))
  scores = []
  for eval_batch in (1000, 999):
    c = small_config(**{"training.num_epochs": 0.05,
                        "eval.batch_size": eval_batch})
    scores.append(train.evaluate_workdir(c, str(tmp_path)))
  # Different batches use different latent draws: the means agree closely
  # but not exactly; the reconstruction-free KL is exact up to rounding.
  assert scores[0]["nelbo"] == pytest.approx(scores[1]["nelbo"], rel=2e-3)
  assert scores[0]["kl"] == pytest.approx(scores[1]["kl"], rel=2e-3)


def _run_until_killed(workdir, wait_for):
  proc = popen_cli(workdir)
  deadline = time.time() + 120
  while not wait_for() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _has_checkpoint(workdir, step):
  return lambda: os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def _has_lines(workdir, n):
  path = os.path.join(workdir, "metrics.jsonl")

  def check():
    if not os.path.exists(path):
      return False
    with open(path) as f:
      return sum(1 for _ in f) >= n
  return check


def test_sigkill_and_resume_is_bit_identical(tmp_path):
  reference = str(tmp_path / "reference")
  assert run_cli(reference).returncode == 0
  ref_step, ref_state = _final_params(reference)

  # Killed twice: once as soon as a checkpoint exists, once mid-interval
  # (after lines were logged past the last checkpoint).
  resumed = str(tmp_path / "resumed")
  _run_until_killed(resumed, _has_checkpoint(resumed, 20))
  _run_until_killed(resumed, _has_lines(resumed, 9))
  assert not os.path.exists(os.path.join(resumed, "results.json"))
  done = run_cli(resumed)
  assert done.returncode == 0, done.stderr[-2000:]

  step, state = _final_params(resumed)
  assert step == ref_step
  chex.assert_trees_all_equal(state, ref_state)
  ref_rows, rows = _jsonl(reference), _jsonl(resumed)
  for row in ref_rows + rows:
    row.pop("train/img_per_sec", None)
  assert rows == ref_rows
  assert _results(resumed) == _results(reference)


def test_eval_mode_scores_a_trained_workdir(tmp_path):
  workdir = str(tmp_path)
  assert run_cli(workdir, {"training.num_epochs": 0.05}).returncode == 0
  trained = _results(workdir)
  os.remove(os.path.join(workdir, "results.json"))
  out = run_cli(workdir, {"training.num_epochs": 0.05}, mode="eval")
  assert out.returncode == 0, out.stderr[-2000:]
  assert _results(workdir) == trained


@pytest.mark.parametrize("overrides, message", [
    ({"data.name": "no_such_dataset"}, "Unknown dataset 'no_such_dataset'"),
    ({"model.latent_dim": 0}, "model.latent_dim must be a positive integer"),
    ({"training.batch_size": -8}, "training.batch_size must be a positive"),
    ({"optimizer.name": "adagrad"}, "Unknown optimizer.name 'adagrad'"),
    ({"model.likelihood": "poisson"}, "Unknown model.likelihood 'poisson'"),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, overrides, message):
  out = run_cli(str(tmp_path), overrides)
  assert out.returncode == 2
  error_lines = [l for l in out.stderr.splitlines() if l.startswith("vae_jax:")]
  assert len(error_lines) == 1 and message in error_lines[0]
  assert "Traceback" not in out.stderr


def test_missing_data_offline_says_where_to_point(tmp_path):
  out = run_cli(str(tmp_path / "w"),
                {"data.data_dir": str(tmp_path / "empty"),
                 "data.download": False})
  assert out.returncode == 2
  assert "point TFDS_DATA_DIR" in out.stderr
  assert "Traceback" not in out.stderr


def test_batch_must_divide_across_devices(tmp_path):
  out = run_cli(str(tmp_path), {"training.batch_size": 126},
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert out.returncode == 2
  assert "does not divide across the 4 devices" in out.stderr


def test_incompatible_workdir_is_refused(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(small_config(**{"training.num_epochs": 0.05}),
                           workdir)
  with pytest.raises(UserError, match="model.latent_dim"):
    train.train_and_evaluate(
        small_config(**{"training.num_epochs": 0.05, "model.latent_dim": 4}),
        workdir)
  # Longer training of the same model is a compatible change.
  train.train_and_evaluate(small_config(**{"training.num_epochs": 0.1}),
                           workdir)
  assert _results(workdir)["step"] == 47  # round(0.1 * 468)


def test_divergence_stops_with_step_and_keeps_good_checkpoints(tmp_path):
  # SGD whose warm-up climbs to an absurd rate: finite for a while, then not.
  config = small_config(**{
      "optimizer.name": "sgd", "optimizer.learning_rate": 5.0,
      "optimizer.warmup_steps": 1000, "optimizer.schedule": "constant",
      "training.checkpoint_every_steps": 5, "training.steps_per_call": 5,
      "training.checkpoints_to_keep": 100})
  with pytest.raises(train.TrainingDiverged, match=r"at step \d+") as e:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(re.search(r"at step (\d+)", str(e.value)).group(1))
  assert bad_step > 5  # Some checkpoints were written before it.
  manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
  steps = manager.all_steps()
  assert steps and max(steps) <= bad_step
  for step in steps:
    state = manager.restore(step, args=ocp.args.StandardRestore())
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
