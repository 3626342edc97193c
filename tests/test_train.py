"""End-to-end tests of the train loop and --mode=eval on real MNIST.

One small run (`conftest.SMALL`, 94 steps) is trained once per session (once
per test run, also under pytest-xdist) by the `trained_small` fixture; the
tests that read it share it, and those that change a workdir copy it first.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import time

import chex
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import popen_cli, run_cli, small_config
from vae_jax import config_lib
from vae_jax import sources
from vae_jax import steps
from vae_jax import train
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError
from vae_jax.evaluators import elbo as elbo_evaluator

# results.json labels that are measurements of the machine, not of the model.


def _jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def _results(workdir):
  return workdir_lib.read_results(workdir)


def _final_state(workdir):
  """The last checkpoint's step and state, read without a target."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  return step, manager.restore(step, args=ocp.args.StandardRestore())


def _copy(workdir, tmp_path):
  dst = str(tmp_path / "workdir")
  shutil.copytree(workdir, dst)
  return dst


def _quick_eval(**overrides):
  """The small config, scoring -ELBO only (a change --mode=eval may make)."""
  return small_config(**{"evals.nll.enabled": False,
                         "evals.images.enabled": False, **overrides})


@contextlib.contextmanager
def _counting(module, name, calls):
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
  workdir: str  # Read only: copy it (`_copy`) to change anything.
  final: dict  # What train_and_evaluate returned.
  validate_calls: int  # config_lib.validate calls during the run.


@contextlib.contextmanager
def _file_lock(path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
  """`small_config()` trained in-process, once per test run.

  Every step is traced once, whatever the chunk lengths, evaluations and
  checkpoints in between (a retrace would recompile): `steps.train_step`
  and the -ELBO evaluator's per-batch function once each. A second trace
  fails the run, and with it every test that uses it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # Shared by the workers of this run.
  workdir, done = root / "trained_small", root / "trained_small.json"
  config = small_config()
  with _file_lock(str(root / "trained_small.lock")):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      validations = []
      with pytest.MonkeyPatch.context() as m, _counting(
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


# ----------------------------------------------------------------------------
# Training.


def test_trains_on_mnist_and_writes_outputs(trained_small):
  workdir, final = trained_small.workdir, trained_small.final
  rows = _jsonl(workdir)
  evals = [r for r in rows if "elbo/nelbo" in r]
  assert [r["step"] for r in evals] == [30, 60, 90, 94]
  assert evals[-1]["elbo/nelbo"] < evals[0]["elbo/nelbo"] - 20
  assert np.isfinite(final["elbo"]["nelbo"]) and final["elbo"]["nelbo"] < 200
  results = _results(workdir)
  assert results["step"] == 94 and results["dataset"] == "mnist"
  e = results["elbo"]
  assert e["num_examples"] == 10000 and e["split"] == "test"
  assert e["nelbo"] == final["elbo"]["nelbo"] == evals[-1]["elbo/nelbo"]
  assert e["nelbo"] == pytest.approx(e["recon"] + e["kl"], rel=1e-6)
  assert e["bits_per_dim"] == pytest.approx(e["nelbo"] / (784 * np.log(2)))
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == [*range(10, 91, 10), 94]
  assert all(r["train/img_per_sec"] > 0 for r in train_rows)
  # The importance-sampled NLL runs at the last step only (every_steps 0).
  assert [r["step"] for r in rows if "nll/nll" in r] == [94]
  nll = results["nll"]
  assert nll["num_samples"] == 10 and nll["num_examples"] == 10000
  assert nll["nll"] == final["nll"]["nll"]
  assert nll["nll"] <= e["nelbo"] + 0.5
  assert "nelbo" not in nll  # One number per quantity: the elbo evaluator's.
  for name in ("config.json", "results.json", "metrics.jsonl",
               "images/reconstructions_00000094.png",
               "images/samples_00000094.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tb")))
  assert workdir_lib.checkpoint_steps(workdir) == [80, 94]  # Keeps 2.


def test_eval_is_exact_over_the_test_set(trained_small):
  """Padding never counts: eval batch 999 (padded) scores like 1000."""
  at_1000 = _results(trained_small.workdir)["elbo"]
  at_999 = trained.load(trained_small.workdir,
                        config=_quick_eval(**{"eval.batch_size": 999})
                        ).evaluate()["elbo"]
  assert at_999.about["num_examples"] == 10000
  # Different batches use different latent draws: the means agree closely
  # but not exactly.
  assert at_999.metrics["nelbo"] == pytest.approx(at_1000["nelbo"], rel=2e-3)
  assert at_999.metrics["kl"] == pytest.approx(at_1000["kl"], rel=2e-3)


def _run_until_killed(workdir, wait_for):
  proc = popen_cli(workdir)
  deadline = time.time() + 300
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


def test_sigkill_and_resume_is_bit_identical(trained_small, tmp_path):
  """Killed and resumed on the command line == trained uninterrupted."""
  reference = trained_small.workdir
  ref_step, ref_state = _final_state(reference)

  # Killed twice: once as soon as a checkpoint exists, once mid-interval
  # (after lines were logged past the last checkpoint).
  resumed = str(tmp_path / "resumed")
  _run_until_killed(resumed, _has_checkpoint(resumed, 20))
  _run_until_killed(resumed, _has_lines(resumed, 9))
  assert not workdir_lib.is_done(resumed)
  done = run_cli(resumed)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "Resumed from the checkpoint at step" in done.stderr

  step, state = _final_state(resumed)
  assert step == ref_step
  chex.assert_trees_all_equal(state, ref_state)
  ref_rows, rows = _jsonl(reference), _jsonl(resumed)
  for row in ref_rows + rows:
    row.pop("train/img_per_sec", None)
  assert rows == ref_rows
  assert _results(resumed) == _results(reference)


def test_incompatible_workdir_is_refused(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  with pytest.raises(UserError, match="model.latent_dim"):
    train.train_and_evaluate(small_config(**{"model.latent_dim": 4}), workdir)
  # Longer training of the same model is a compatible change.
  train.train_and_evaluate(
      _quick_eval(**{"training.num_epochs": 0.25}), workdir)
  assert _results(workdir)["step"] == 117  # round(0.25 * 468)


def test_divergence_stops_with_step_and_keeps_good_checkpoints(tmp_path):
  # SGD whose warm-up climbs to an absurd rate: finite for a while, then not.
  config = small_config(**{
      "optimizer.name": "sgd", "optimizer.learning_rate": 5.0,
      "optimizer.warmup_steps": 1000, "optimizer.schedule": "constant",
      "training.checkpoint_every_steps": 5, "training.steps_per_call": 5,
      "training.checkpoints_to_keep": 100, "evals.nll.enabled": False,
      # Up to 92 steps on a tenth of the training set (faster to load).
      "data.train_split": "train[:10%]", "training.num_epochs": 2.0})
  with pytest.raises(train.TrainingDiverged, match=r"at step \d+") as e:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(re.search(r"at step (\d+)", str(e.value)).group(1))
  assert bad_step > 5  # Some checkpoints were written before it.
  saved = workdir_lib.checkpoint_steps(str(tmp_path))
  assert saved and max(saved) <= bad_step
  assert f"checkpoint (step {max(saved)}) was kept" in str(e.value)
  assert not workdir_lib.is_done(str(tmp_path))
  manager = workdir_lib.checkpoint_manager(str(tmp_path))
  for step in saved:
    state = manager.restore(step, args=ocp.args.StandardRestore())
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


# ----------------------------------------------------------------------------
# --mode=eval: the same evaluators, keys and test set as training.


def test_eval_mode_scores_a_trained_workdir(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  os.remove(os.path.join(workdir, "results.json"))
  out = run_cli(workdir, mode="eval")
  assert out.returncode == 0, out.stderr[-2000:]
  assert _results(workdir) == _results(trained_small.workdir)


def test_one_number_per_quantity(trained_small, tmp_path):
  """-ELBO and NLL of a checkpoint: the same number wherever computed."""
  at_training = _results(trained_small.workdir)
  workdir = _copy(trained_small.workdir, tmp_path)
  os.remove(os.path.join(workdir, "results.json"))
  scored = train.evaluate(trained_small.config, workdir)  # --mode=eval
  api = trained.load(workdir).evaluate()  # The notebook API.
  for name, metric in (("elbo", "nelbo"), ("elbo", "recon"), ("elbo", "kl"),
                       ("elbo", "bits_per_dim"), ("nll", "nll"),
                       ("nll", "nll_stderr"), ("nll", "nelbo_k")):
    value = at_training[name][metric]
    assert trained_small.final[name][metric] == value, (name, metric)
    assert scored[name][metric] == value, (name, metric)
    assert api[name].metrics[metric] == value, (name, metric)
  assert _results(workdir) == at_training


def test_validation_runs_once_per_run(trained_small, tmp_path):
  assert trained_small.validate_calls == 1  # train_and_evaluate
  workdir = _copy(trained_small.workdir, tmp_path)
  with _counting(config_lib, "validate", []) as calls:
    train.evaluate(_quick_eval(), workdir)
  assert len(calls) == 1


def test_eval_mode_never_loads_the_training_set(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  with _counting(sources, "read_tfds", []) as calls:
    train.evaluate(_quick_eval(), workdir)
  assert [split for _, split in calls] == ["test"]


# ----------------------------------------------------------------------------
# The command line: one sentence and exit status 2 for what the user can fix.


def _one_error_line(out):
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("vae_jax:")]
  assert len(lines) == 1, out.stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize("overrides, message", [
    ({"data.name": "no_such_dataset"}, "Unknown dataset 'no_such_dataset'"),
    ({"model.latent_dim": 0}, "model.latent_dim must be a positive integer"),
    ({"training.batch_size": -8}, "training.batch_size must be a positive"),
    ({"optimizer.name": "adagrad"}, "Unknown optimizer.name 'adagrad'"),
    ({"model.likelihood": "poisson"}, "Unknown model.likelihood 'poisson'"),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, overrides, message):
  assert message in _one_error_line(run_cli(str(tmp_path), overrides))


def test_eval_mode_on_a_missing_workdir(tmp_path):
  missing = tmp_path / "missing"
  line = _one_error_line(run_cli(str(missing), mode="eval"))
  assert f"Workdir {missing} does not exist" in line
  assert os.listdir(tmp_path) == []  # Nothing created.


def test_missing_data_offline_says_where_to_point(tmp_path):
  out = run_cli(str(tmp_path / "w"),
                {"data.data_dir": str(tmp_path / "empty"),
                 "data.download": False})
  assert "point TFDS_DATA_DIR" in _one_error_line(out)


def test_batch_must_divide_across_devices(tmp_path):
  out = run_cli(str(tmp_path), {"training.batch_size": 126},
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert "does not divide across the 4 devices" in _one_error_line(out)
