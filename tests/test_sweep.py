"""Vmapped groups and the sweep runner."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from conftest import REPO, run_module, small_config, write_sweep_config
from vae_jax import config_lib
from vae_jax import sweep
from vae_jax import sweep_report
from vae_jax import train
from vae_jax import workdir as workdir_lib

POINTS = ({"objective.beta": 0.5, "seed": 0},
          {"objective.beta": 1.0, "seed": 1, "optimizer.learning_rate": 3e-3},
          {"objective.beta": 4.0, "seed": 2})


def _params(workdir):
  # A checkpoint holds one model's unstacked TrainState; restored without a
  # target it is a dict with keys step, params, opt_state, rng, hparams.
  manager = workdir_lib.checkpoint_manager(workdir)
  return manager.restore(manager.latest_step(),
                         args=ocp.args.StandardRestore())["params"]


def _jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_group_equals_alone_and_kl_falls_with_beta(tmp_path):
  configs = [small_config(**p) for p in POINTS]
  dirs = [str(tmp_path / f"group{i}") for i in range(3)]
  grouped = train.train_group(configs, dirs)
  alone_dir = str(tmp_path / "alone")
  alone = train.train_and_evaluate(small_config(**POINTS[1]), alone_dir)

  # The point trained in the group ends as it does alone: each parameter
  # array within 1e-5 relative difference (norm of the difference over the
  # norm). Element by element, the group's batched matmul rounds differently
  # and Adam scales the kernel rows of pixels that are almost never lit
  # (gradients ~1e-9) up to full steps, so a few of those weights differ by
  # ~1e-5; a wrong key, batch or hyperparameter moves every weight by ~1e-2.
  a, b = _params(dirs[1]), _params(alone_dir)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(y), (
        np.linalg.norm(x - y) / np.linalg.norm(y))
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)
  # Every evaluator's final numbers (the -ELBO terms and the importance-
  # sampled NLL, which SMALL enables) agree.
  assert set(grouped[1]) == set(alone) >= {"elbo", "nll"}
  for key in ("nelbo", "kl", "recon"):
    np.testing.assert_allclose(grouped[1]["elbo"][key], alone["elbo"][key],
                               rtol=1e-5, err_msg=key)
  for key in ("nll", "nelbo_k"):
    np.testing.assert_allclose(grouped[1]["nll"][key], alone["nll"][key],
                               rtol=1e-5, err_msg=key)
  rows_group, rows_alone = _jsonl(dirs[1]), _jsonl(alone_dir)
  assert [r["step"] for r in rows_group] == [r["step"] for r in rows_alone]
  assert any("elbo/nelbo" in r for r in rows_alone)
  assert any("nll/nll" in r for r in rows_alone)
  # Each logged metric is a batch mean of 128 per-example float32 values
  # (all non-negative here), summed in another order in the group's program
  # (XLA:CPU reduces the vmapped [K, B] axis its own way): two orders may
  # differ by up to 2 x 127 x 2^-24 = 1.5e-5 of the sum (recursive
  # summation's bound; measured: 1.1e-5 on train/recon, 2e-7 on the loss).
  for rg, ra in zip(rows_group, rows_alone):
    assert set(rg) == set(ra), (rg["step"], set(rg) ^ set(ra))
    for k in ra:
      if k != "train/img_per_sec":
        np.testing.assert_allclose(rg[k], ra[k], rtol=2 * 127 * 2.0**-24,
                                   err_msg=f"{k} at step {ra['step']}")

  # beta-VAE: the rate (KL) falls as beta rises.
  kls = [r["elbo"]["kl"] for r in grouped]
  assert kls[0] > kls[1] > kls[2], kls


def _write_sweep_config(tmp_path):
  points = [{"model.latent_dim": latent, "objective.beta": beta}
            for latent in (2, 4) for beta in (0.5, 1.0, 2.0)]
  return write_sweep_config(tmp_path / "tiny_sweep.py", points,
                            max_group_size=2,
                            **{"training.num_steps": 24})


def _sweep_args(config_path, workdir, *extra):
  return [f"--config={config_path}", f"--workdir={workdir}", *extra]


def _sweep(config_path, workdir, *extra):
  """Runs `python -m vae_jax.sweep` (`conftest.run_module`)."""
  return run_module("vae_jax.sweep", _sweep_args(config_path, workdir, *extra))


def test_sweep_runs_lists_resumes_and_summarizes(tmp_path):
  config_path = _write_sweep_config(tmp_path)
  workdir = tmp_path / "sweep"

  listed = _sweep(config_path, workdir, "--list")
  assert listed.returncode == 0, listed.stderr[-3000:]
  names = [l.split("\t")[1] for l in listed.stdout.splitlines()]
  assert names[0] == "000_latent_dim=2_beta=0.5" and len(names) == 6
  # Groups: same shapes together, at most max_group_size per group.
  points = sweep.expand(str(config_path),
                        config_lib.load_module(str(config_path)).get_config())
  assert [name for name, _ in points] == names
  assert sweep.groups(points, 2) == [[0, 1], [2], [3, 4], [5]]

  # Killed once the first group finished; the re-run trains only the rest.
  proc = subprocess.Popen([sys.executable, "-m", "vae_jax.sweep",
                           *_sweep_args(config_path, workdir)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = workdir / names[0] / "results.json"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert first.exists()
  assert not (workdir / names[5] / "results.json").exists()
  finished_at = first.stat().st_mtime_ns

  out = _sweep(config_path, workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert first.stat().st_mtime_ns == finished_at  # Not trained again.
  for name in names:
    for f in ("config.json", "results.json", "metrics.jsonl"):
      assert (workdir / name / f).exists(), (name, f)
  for f in ("summary.csv", "summary.json", "summary.md",
            "rate_distortion.png", "elbo_vs_latent.png"):
    assert (workdir / f).exists(), f

  # One row per point, from sweep_report.row_of (less the columns that no
  # point has: the NLL is disabled here); rate, distortion and -ELBO are the
  # test KL, reconstruction and -ELBO of the point's results.json.
  rows = json.loads((workdir / "summary.json").read_text())
  assert [r["point"] for r in rows] == names
  for r, (_, config) in zip(rows, points):
    full = sweep_report.row_of(str(workdir / r["point"]))
    assert r == {k: v for k, v in full.items() if k in r}
    assert "nll" not in r and full["nll"] is None
    assert (r["latent_dim"], r["beta"], r["seed"]) == (
        config.model.latent_dim, config.objective.beta, config.seed)
    assert r["learning_rate"] == config.optimizer.learning_rate
    results = workdir_lib.read_results(str(workdir / r["point"]))
    assert r["rate"] == results["elbo"]["kl"]
    assert r["distortion"] == results["elbo"]["recon"]
    assert r["nelbo"] == results["elbo"]["nelbo"]
    assert r["bits_per_dim"] == results["elbo"]["bits_per_dim"]
    assert all(np.isfinite(r[c])
               for c in ("rate", "distortion", "nelbo", "bits_per_dim"))

  # The summary can be rebuilt from the subdirectories alone.
  for f in ("summary.csv", "summary.json", "rate_distortion.png"):
    (workdir / f).unlink()
  out = _sweep(config_path, workdir, "--summarize")
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((workdir / "summary.json").read_text()) == rows
  assert (workdir / "rate_distortion.png").exists()
  assert (workdir / "summary.csv").exists()


def test_index_runs_one_point_and_rejects_out_of_range(tmp_path):
  config_path = _write_sweep_config(tmp_path)
  workdir = tmp_path / "sweep"
  out = _sweep(config_path, workdir, "--index=4")
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(os.listdir(workdir)) == ["004_latent_dim=4_beta=1.0"]
  assert workdir_lib.is_done(str(workdir / "004_latent_dim=4_beta=1.0"))
  out = _sweep(config_path, workdir, "--index=6")
  assert out.returncode == 2 and "out of range" in out.stderr


def test_group_resumes_from_the_step_every_model_has(tmp_path):
  """A model that got further alone drops its later checkpoints and redoes
  them with the group (Orbax would refuse to save a step twice)."""
  short = {"training.num_epochs": 0.05, "evals.nll.enabled": False,
           "data.eval_split": "test[:500]"}
  configs = [small_config(**{**short, **p}) for p in POINTS[:2]]
  dirs = [str(tmp_path / f"p{i}") for i in range(2)]
  alone = train.train_and_evaluate(configs[0], dirs[0])
  assert _checkpoint_steps(dirs[0]) == [20, 23]
  grouped = train.train_group(configs, dirs)
  assert _checkpoint_steps(dirs[0]) == _checkpoint_steps(dirs[1]) == [20, 23]
  np.testing.assert_allclose(grouped[0]["elbo"]["nelbo"],
                             alone["elbo"]["nelbo"], rtol=1e-5)


def _checkpoint_steps(workdir):
  return sorted(ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints")).all_steps())
