"""End-to-end tests of the train loop and --mode=eval on real MNIST.

One small run (`conftest.SMALL`, 94 steps) is trained once per session (once
per test run, also under pytest-xdist) by conftest's `trained_small`
fixture; the tests that read it share it, and those that change a workdir
copy it first.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import DEFAULT_CONFIG, SMALL, cli_args, popen_cli, run_cli
from conftest import devices_env, run_module, small_config
from conftest import counting as _counting
from vae_jax import config_lib
from vae_jax import tfds_source
from vae_jax import train
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError

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
  assert [r["step"] for r in train_rows] == [*range(15, 91, 15), 94]
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
  """Killed and resumed on the command line == trained uninterrupted: the
  state, and every line of metrics.jsonl (logs every 15 steps, checkpoints
  every 20: a resume starts inside a logging window)."""
  reference = trained_small.workdir
  ref_step, ref_state = _final_state(reference)

  # Killed twice: once as soon as a checkpoint exists, once mid-interval
  # (after lines were logged past the last checkpoint).
  resumed = str(tmp_path / "resumed")
  _run_until_killed(resumed, _has_checkpoint(resumed, 20))
  _run_until_killed(resumed, _has_lines(resumed, 5))
  assert not workdir_lib.is_done(resumed)
  done = run_cli(resumed, env={"JAX_LOG_COMPILES": "1"})
  assert done.returncode == 0, done.stderr[-2000:]
  assert "Resumed from the checkpoint at step" in done.stderr
  # Everything compiled before the first step: nothing at checkpoints or
  # evaluations.
  loop = done.stderr[done.stderr.index("Training 1 model(s)"):]
  assert "Compiling " not in loop, re.findall(r"Compiling \S+", loop)

  step, state = _final_state(resumed)
  assert step == ref_step
  chex.assert_trees_all_equal(state, ref_state)
  ref_rows, rows = _jsonl(reference), _jsonl(resumed)
  for row in ref_rows + rows:
    row.pop("train/img_per_sec", None)
  assert rows == ref_rows
  assert _results(resumed) == _results(reference)


def test_damaged_newest_checkpoint_falls_back_to_an_intact_one(
    trained_small, tmp_path):
  """Truncated files in the newest checkpoint: training warns with its step,
  sets it aside, resumes from the one before and ends as uninterrupted."""
  workdir = _copy(trained_small.workdir, tmp_path)
  _truncate_newest_checkpoint(workdir)  # Step 94; 80 is intact.
  out = run_cli(workdir)
  assert out.returncode == 0, out.stderr[-2000:]
  assert re.search(r"checkpoint at step 94 .* is damaged", out.stderr)
  assert "Resumed from the checkpoint at step 80" in out.stderr
  assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "94"))
  chex.assert_trees_all_equal(_final_state(workdir)[1],
                              _final_state(trained_small.workdir)[1])
  assert _results(workdir) == _results(trained_small.workdir)


def test_a_second_process_on_a_workdir_is_refused(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  fd = os.open(workdir, os.O_RDONLY)  # What a live run holds.
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  try:
    line = _one_error_line(run_cli(workdir))
  finally:
    os.close(fd)
  assert "is in use by another vae_jax process" in line
  # A run killed with SIGKILL leaves nothing that blocks the next one.
  killed = str(tmp_path / "killed")
  _run_until_killed(killed, _has_checkpoint(killed, 20))
  with workdir_lib.locked(killed):
    pass


def test_incompatible_workdir_is_refused(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  with pytest.raises(UserError, match="model.latent_dim"):
    train.train_and_evaluate(small_config(**{"model.latent_dim": 4}), workdir)
  # The run's length sets every step's learning rate: fixed at the start.
  with pytest.raises(UserError, match=r"training.num_epochs \(0.2 -> 0.25\)"):
    train.train_and_evaluate(
        _quick_eval(**{"training.num_epochs": 0.25}), workdir)
  # What is logged and evaluated may change.
  train.train_and_evaluate(
      _quick_eval(**{"training.log_every_steps": 7}), workdir)
  assert _results(workdir)["step"] == 94


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


def test_python_api_refuses_inputs_outside_the_support(trained_small):
  m = trained.load(trained_small.workdir)
  x = m.test_images(8)  # Binary floats: the fixed binarized test set.
  scored = m.score(x)["nelbo"]
  with pytest.raises(UserError, match=r"span \[-1, 1\]"):
    m.score(x * 2 - 1)
  with pytest.raises(UserError, match="x / 255"):
    m.score(x * 255)
  with pytest.raises(UserError, match="gray values"):
    m.score(x * 0.5)
  # uint8 pixels work, binarized as the test set was: the same numbers.
  raw = tfds_source.read_tfds(tfds_source.tfds_builder(m.config.data), "test").x[:8]
  np.testing.assert_allclose(m.score(raw)["nelbo"], scored, rtol=1e-6)


def test_eval_mode_never_loads_the_training_set(trained_small, tmp_path):
  workdir = _copy(trained_small.workdir, tmp_path)
  with _counting(tfds_source, "read_tfds", []) as calls:
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


def _tree_bytes(path):
  """{relative path: bytes} of everything under `path` (None: absent)."""
  if not os.path.exists(path):
    return None
  if not os.path.isdir(path):
    with open(path, "rb") as f:
      return f.read()
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      rel = os.path.relpath(full, path)
      if os.path.isdir(full):
        out[rel] = "dir"
      else:
        with open(full, "rb") as f:
          out[rel] = f.read()
  return out


def _truncate_newest_checkpoint(workdir):
  newest = os.path.join(workdir, "checkpoints",
                        str(max(workdir_lib.checkpoint_steps(workdir))))
  for root, _, files in os.walk(newest):
    for name in files:
      os.truncate(os.path.join(root, name), 0)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


# Each case: (id, workdir set-up, command-line arguments, the sentence's
# expected part). Set-ups: "new" (a path that does not exist), "trained" (a
# copy of trained_small), or a function of (trained copy, tmp_path) that
# damages it and returns the workdir. Arguments are added to the default
# config with SMALL's overrides; "@CONFIG" replaces the --config flag.
_SWEEP = "vae_jax.sweep"
BAD_INPUTS = [
    # Config loading.
    ("missing config file", "new", ["@CONFIG=/no/such/config.py"],
     "Config file /no/such/config.py does not exist"),
    ("config syntax error", "new", ["@CONFIG={tmp}/bad.py"],
     "has a syntax error on line 1"),
    ("config get_config fails", "new", ["@CONFIG={tmp}/raises.py"],
     "failed in get_config: ZeroDivisionError"),
    ("override of a field that does not exist", "new",
     ["--config.model.latent_dimm=3"],
     "has no field model.latent_dimm (did you mean model.latent_dim?)"),
    ("override of a section that does not exist", "new",
     ["--config.foo.bar=3"], "has no field foo.bar"),
    ("override of a whole section", "new", ["--config.model=3"],
     "--config.model"),
    ("override value of the wrong type", "new",
     ["--config.model.latent_dim=abc"], "latent_dim=abc"),
    ("unknown config argument", "new", ["@CONFIG={default}:bogus"],
     "Unknown config argument 'bogus'"),
    ("unknown flag", "new", ["--workdirr=3"],
     "Unknown command line flag 'workdirr'"),
    ("unknown mode", "new", ["--mode=fit"], "--mode"),
    # Values, checked whether or not their part runs.
    ("negative importance samples", "new",
     ["--config.evals.nll.num_samples=-5"],
     "evals.nll.num_samples must be a positive integer, got -5"),
    ("zero importance chunk", "new", ["--config.evals.nll.chunk_size=0"],
     "evals.nll.chunk_size must be a positive integer"),
    ("zero chunk of a disabled evaluator", "new",
     ["--config.evals.anomaly.chunk_size=0"],
     "evals.anomaly.chunk_size must be a positive integer"),
    ("no checkpoints kept", "new", ["--config.training.checkpoints_to_keep=0"],
     "training.checkpoints_to_keep must be a positive integer"),
    ("zero shards", "new", ["--config.data.num_shards=0"],
     "data.num_shards must be a positive integer"),
    ("NaN learning rate", "new", ["--config.optimizer.learning_rate=nan"],
     "optimizer.learning_rate must be a finite number"),
    ("negative epochs", "new", ["--config.training.num_epochs=-1"],
     "training.num_epochs must be positive"),
    ("negative beta", "new", ["--config.objective.beta=-1"],
     "objective.beta must be non-negative"),
    ("Adam b1 of 1", "new", ["--config.optimizer.b1=1.0"],
     "optimizer.b1 must be in [0, 1)"),
    ("negative seed", "new", ["--config.seed=-1"],
     "seed must be an integer >= 0"),
    ("zero eval batch", "new", ["--config.eval.batch_size=0"],
     "eval.batch_size must be a positive integer"),
    ("test fraction above 1", "new", ["--config.data.test_fraction=1.5"],
     "data.test_fraction must be in (0, 1)"),
    ("negative batch", "new", ["--config.training.batch_size=-8"],
     "training.batch_size must be a positive"),
    ("unknown optimizer", "new", ["--config.optimizer.name=adagrad"],
     "Unknown optimizer.name 'adagrad'"),
    ("unknown likelihood", "new", ["--config.model.likelihood=poisson"],
     "Unknown model.likelihood 'poisson'"),
    ("zero latent units", "new", ["--config.model.latent_dim=0"],
     "model.latent_dim must be a positive integer"),
    # Data.
    ("unknown dataset", "new", ["--config.data.name=no_such_dataset"],
     "Unknown dataset 'no_such_dataset'"),
    ("npz without a path", "new", ["--config.data.source=npz"],
     "needs data.path"),
    ("npz file that does not exist", "new",
     ["--config.data.source=npz", "--config.data.path=/no/such.npz"],
     "/no/such.npz"),
    # The workdir.
    ("workdir is a file", lambda w, tmp: _write(tmp / "afile", "x") or str(
        tmp / "afile"), [], "is a file, not a directory"),
    ("workdir cannot be written", lambda w, tmp: "/proc/vae_jax_test/w", [],
     "cannot be"),
    ("truncated config.json", lambda w, tmp: _write(
        os.path.join(w, "config.json"), '{"data": {') or w, [],
     "config.json of workdir"),
    ("truncated config.json, eval", lambda w, tmp: _write(
        os.path.join(w, "config.json"), "") or w, ["--mode=eval"],
     "config.json of workdir"),
    ("damaged newest checkpoint, eval",
     lambda w, tmp: _truncate_newest_checkpoint(w) or w, ["--mode=eval"],
     "The checkpoint at step 94"),
    ("epochs changed on resume", "trained",
     ["--config.training.num_epochs=0.25"], "training.num_epochs"),
    ("model changed on resume", "trained", ["--config.model.latent_dim=4"],
     "model.latent_dim"),
    ("eval of a missing workdir", "new", ["--mode=eval"], "does not exist"),
    # The sweep runner shares the boundary.
    ("sweep: field that does not exist", "new",
     [_SWEEP, "--config.model.latent_dimm=3"], "has no field"),
    ("sweep: missing config file", "new",
     [_SWEEP, "@CONFIG=/no/such/sweep.py"], "does not exist"),
]


@pytest.mark.parametrize("name, setup, args, expected", BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_sentence_exit_2_nothing_changed(
    trained_small, tmp_path, name, setup, args, expected):
  del name
  _write(tmp_path / "bad.py", "def get_config(:\n")
  _write(tmp_path / "raises.py", "def get_config(arg=None):\n  return 1 / 0\n")
  if setup == "new":
    workdir = str(tmp_path / "new")
  else:
    workdir = _copy(trained_small.workdir, tmp_path)
    if callable(setup):
      workdir = setup(workdir, tmp_path)
  module = args[0] if args[:1] == [_SWEEP] else "vae_jax.main"
  args = [a.format(tmp=tmp_path, default=DEFAULT_CONFIG)
          for a in args if a != _SWEEP]
  config = next((a[len("@CONFIG="):] for a in args
                 if a.startswith("@CONFIG=")), DEFAULT_CONFIG)
  before = _tree_bytes(workdir)
  out = run_module(module, [f"--config={config}", f"--workdir={workdir}",
                            *cli_args(SMALL),
                            *(a for a in args if not a.startswith("@CONFIG="))])
  assert expected in _one_error_line(out)
  assert "Traceback" not in out.stdout
  assert _tree_bytes(workdir) == before


def test_missing_data_offline_says_where_to_point(tmp_path):
  out = run_cli(str(tmp_path / "w"),
                {"data.data_dir": str(tmp_path / "empty"),
                 "data.download": False})
  assert "point TFDS_DATA_DIR" in _one_error_line(out)


def test_download_offline_fails_fast_and_leaves_nothing(tmp_path):
  # Probed here, not in a skipif: offline, the probe waits out its timeout
  # (5 s), which at collection would hold up every worker.
  if tfds_source._online():
    pytest.skip("needs a machine offline")
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  start = time.time()
  out = run_cli(str(tmp_path / "w"), {"data.name": "fashion_mnist",
                                      "data.data_dir": str(data_dir)})
  assert "cannot reach" in _one_error_line(out)
  assert time.time() - start < 60  # TFDS's own retries took 213 s.
  assert not os.path.exists(tmp_path / "w")
  assert [p for p in data_dir.rglob("*") if p.is_file()] == []


def test_batch_must_divide_across_devices(tmp_path):
  out = run_cli(str(tmp_path), {"training.batch_size": 126},
                env=devices_env(4))
  assert "does not divide across the 4 devices" in _one_error_line(out)
