"""Data parallelism over simulated CPU devices and processes (subprocesses)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, SMALL, cli_args, run_cli, run_module, run_modules
from conftest import devices_env, small_config, write_sweep_config
from vae_jax import config_lib
from vae_jax import sweep
from vae_jax import sweep_report
from vae_jax import train
from vae_jax import workdir as workdir_lib

# Evaluators at the last step only.
LAST_STEP_EVALS = {"evals.elbo.every_steps": 0, "evals.images.every_steps": 0,
                   "evals.nll.every_steps": 0}
# A tenth of MNIST's training set: faster to read in every process.
TENTH = {"data.train_split": "train[:10%]"}
# For the runs whose figures nothing looks at (each test draws them once,
# in its run over several devices or processes).
NO_FIGURES = {"evals.images.enabled": False,
              "evals.latent_maps.enabled": False}


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _state(workdir, like=None):
  """The last checkpoint; `like` gives the layout for one saved elsewhere.

  A checkpoint holds one model's unstacked TrainState (step, params,
  opt_state, rng, hparams).
  """
  manager = workdir_lib.checkpoint_manager(workdir)
  return manager.restore(manager.latest_step(),
                         args=ocp.args.StandardRestore(like))


def _assert_same_scores(results, reference):
  """The test -ELBO and importance-sampled NLL agree with `reference`'s.

  The parameters of the runs compared here differ by ~1e-7 (relative norm),
  and their scores by ~1e-9. rtol 1e-5 still fails when the test batches or
  the latent/importance samples differ: k = 10 on these 1000 images, another
  key stream moves the NLL and nelbo_k by 7e-5 to 8e-4 (relative).
  """
  for r in (results, reference):
    assert r["nll"]["num_samples"] == 10, r["nll"]
    assert r["nll"]["num_examples"] == r["elbo"]["num_examples"] == 1000
  for evaluator, metric in (("elbo", "nelbo"), ("nll", "nll"),
                            ("nll", "nelbo_k")):
    assert np.isfinite(reference[evaluator][metric]), (evaluator, metric)
    np.testing.assert_allclose(results[evaluator][metric],
                               reference[evaluator][metric], rtol=1e-5,
                               err_msg=f"{evaluator}/{metric}")


# The run that the runs over 8 devices and over 2 processes follow: SMALL on
# a tenth of MNIST's training set in 2 shards (what 2 processes read), 40
# steps logged one by one, checkpoints every 10, the evaluators (the NLL
# with SMALL's k = 10) on the first 1000 test images at the last step.
REFERENCE = {**TENTH, "data.num_shards": 2, "optimizer.schedule": "constant",
             "training.num_steps": 40, "training.steps_per_call": 5,
             "training.log_every_steps": 1,
             "training.checkpoint_every_steps": 10, **LAST_STEP_EVALS,
             "data.eval_split": "test[:1000]", "evals.nll.enabled": True,
             "evals.nll.num_samples": 10}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """`REFERENCE` trained in this process, on its one device: the workdir."""
  workdir = str(tmp_path_factory.mktemp("reference") / "one")
  train.train_and_evaluate(small_config(**REFERENCE, **NO_FIGURES), workdir)
  return workdir


def test_eight_devices_follow_the_one_device_trajectory(one_device,
                                                        tmp_path):
  # The evaluators score the test images split over the devices.
  eight = str(tmp_path / "d8")
  out = run_cli(eight, REFERENCE, env=devices_env(8))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "on 8 device(s)" in out.stderr
  l1, l8 = _losses(one_device), _losses(eight)
  assert sorted(l1) == sorted(l8) == list(range(1, 41))
  np.testing.assert_allclose([l8[s] for s in l1], list(l1.values()),
                             rtol=1e-4)
  results = workdir_lib.read_results(eight)
  _assert_same_scores(results, workdir_lib.read_results(one_device))
  # The default eval.batch_size (500) does not divide by 8: batches are
  # padded to the devices, and padding never counts.
  out = run_cli(eight, {**REFERENCE, **NO_FIGURES, "eval.batch_size": 500},
                mode="eval", env=devices_env(8))
  assert out.returncode == 0, out.stderr[-3000:]
  padded = workdir_lib.read_results(eight)
  assert padded["elbo"]["num_examples"] == 1000
  np.testing.assert_allclose(padded["nll"]["nll"], results["nll"]["nll"],
                             rtol=1e-5)  # Per-example keys: batch-invariant.


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir, overrides):
  """Runs the two processes of a run side by side; process 0's log."""
  port = _free_port()
  base = [f"--config={os.path.join(REPO, 'configs', 'mnist_vae.py')}",
          f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2", *cli_args({**SMALL, **overrides})]
  procs = run_modules([("vae_jax.main", base + [f"--process_id={i}"])
                       for i in (1, 0)], env=devices_env(1), timeout=300)
  for p in procs:
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
  return procs[1].stdout + procs[1].stderr


def test_two_processes_train_checkpoint_resume_and_match_one(one_device,
                                                           tmp_path):
  # Trained to step 40, then, as if killed after its step-30 checkpoint
  # (the step-40 checkpoint and results removed), resumed to 40. The
  # evaluators score the test images split over the processes.
  two = str(tmp_path / "two")
  log = _two_processes(two, REFERENCE)
  assert "Process 0 of 2" in log and "on 2 device(s)" in log
  assert max(_losses(two)) == 40
  assert "nll at step 40: IS-NLL" in log
  assert workdir_lib.read_results(two)["step"] == 40
  shutil.rmtree(os.path.join(two, "checkpoints", "40"))
  os.remove(os.path.join(two, "results.json"))
  log = _two_processes(two, {**REFERENCE, **NO_FIGURES})
  assert "Resumed from the checkpoint at step 30" in log
  assert "nll at step 40: IS-NLL" in log

  l1, l2 = _losses(one_device), _losses(two)
  assert sorted(l1) == sorted(l2) == list(range(1, 41))
  np.testing.assert_allclose([l2[s] for s in l1], list(l1.values()),
                             rtol=1e-4)
  # Summing gradients over processes rounds differently; Adam turns that into
  # ~1e-5 differences on weights with near-zero gradients (see test_sweep).
  reference = _state(one_device)
  for a, b in zip(jax.tree.leaves(reference),
                  jax.tree.leaves(_state(two, like=reference))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)

  # The evaluators, the NLL included, score the models alike in 2 processes
  # and in 1.
  r1, r2 = workdir_lib.read_results(one_device), workdir_lib.read_results(two)
  assert r1["step"] == r2["step"] == 40
  _assert_same_scores(r2, r1)


def test_sweep_places_models_on_the_model_axis(tmp_path):
  config_path = write_sweep_config(
      tmp_path / "axis_sweep.py",
      [{"objective.beta": beta} for beta in (0.5, 1.0, 2.0, 4.0)],
      max_group_size=4, **{"training.num_steps": 23})
  # One device: in this process, as the sweep runner runs it.
  workdir = tmp_path / "sweep_1_1"
  config = config_lib.load_module(str(config_path)).get_config()
  config.training.model_axis_size = 1
  sweep.run(str(config_path), config, str(workdir))
  sweep_report.summarize(str(workdir))
  results = [[r["nelbo"] for r in
              json.loads((workdir / "summary.json").read_text())]]
  for devices, model_axis in ((4, 4), (4, 2)):
    workdir = tmp_path / f"sweep_{devices}_{model_axis}"
    out = run_module("vae_jax.sweep", [
        f"--config={config_path}", f"--workdir={workdir}",
        f"--config.training.model_axis_size={model_axis}"],
                     env=devices_env(devices))
    assert out.returncode == 0, out.stderr[-3000:]
    mesh = {"model": model_axis, "data": devices // model_axis}
    assert f"Mesh {mesh}: 4 models split over the model axis" in out.stderr
    rows = json.loads((workdir / "summary.json").read_text())
    results.append([r["nelbo"] for r in rows])
  np.testing.assert_allclose(results[1], results[0], rtol=1e-4)
  np.testing.assert_allclose(results[2], results[0], rtol=1e-4)


def test_mesh_on_a_subset_of_the_devices():
  # What experiments/benchmark_sweep.py --host_devices does: one model on
  # one of two host devices, a group of eight split over both.
  code = ("import jax\n"
          "from vae_jax import sharding\n"
          "one = sharding.create(1, devices=jax.devices()[1:])\n"
          "both = sharding.create(2, 8)\n"
          "print(dict(one.mesh.shape), [d.id for d in one.mesh.devices.flat],"
          " dict(both.mesh.shape), both.models.spec)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=REPO, timeout=300,
                       env={**os.environ, **devices_env(2)})
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split("\n")[0] == (
      "{'model': 1, 'data': 1} [1] {'model': 2, 'data': 1} "
      "P('model',)"), out.stdout
