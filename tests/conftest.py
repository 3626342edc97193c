"""Shared test helpers: small real-MNIST configs, subprocess runs, the
session's trained workdir, its persistent compilation cache and dataset
cache."""

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# What the tests compile themselves, and the operations they run one by one
# (random inputs, reference values, a function of the package called
# outside a program), compile at LLVM optimization level 1. The package's
# programs set their level themselves (level 1, `compiler.jit`; bits-back
# coding's XLA's default 3, `compiler.jit_at_xla_defaults`), so they compile
# here as they do outside the tests. At XLA:CPU's default level a random
# draw of a few hundred numbers took 1-2 s to compile (LLVM unrolls its
# threefry loops), 0.2-0.3 s at level 1: ~50 s of a test run. Set before
# JAX starts its backend; subprocesses inherit it (`devices_env` keeps it).
LLVM_LEVEL_FLAG = "--xla_backend_optimization_level=1"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS"), LLVM_LEVEL_FLAG]))

import chex
import jax
import ml_collections
import pytest

from vae_jax import cli
from vae_jax import config_lib
from vae_jax import tfds_source
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


# What the sweep tests need of each point's run: -ELBO scores (the figures
# of the images and latent_maps evaluators are tested elsewhere), trained on
# a tenth of MNIST's training set (faster to read; set training.num_steps).
SWEEP_POINT = {"data.train_split": "train[:10%]",
               "data.eval_split": "test[:1000]", "evals.nll.enabled": False,
               "evals.images.enabled": False,
               "evals.latent_maps.enabled": False}


def write_sweep_config(path, points, max_group_size, **overrides):
  """Writes a sweep config of `points` (override dicts) to `path`."""
  overrides = {**SMALL, **SWEEP_POINT, **overrides}
  path.write_text(_SWEEP_TEMPLATE.format(
      base=DEFAULT_CONFIG, overrides=overrides, points=list(points),
      max_group_size=max_group_size))
  return path


def devices_env(n):
  """The environment of a command that simulates `n` CPU devices (and keeps
  the tests' XLA_FLAGS)."""
  return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={n}".strip()}


def small_config(**overrides):
  return config_lib.get_config(DEFAULT_CONFIG, None, {**SMALL, **overrides})


cli_args = cli.override_flags


def run_cli(workdir, overrides=None, mode="train", env=None):
  """Runs `python -m vae_jax.main` on the default config plus overrides."""
  return run_module("vae_jax.main", [
      f"--config={DEFAULT_CONFIG}", f"--workdir={workdir}", f"--mode={mode}",
      *cli_args({**SMALL, **(overrides or {})})], env=env)


# ----------------------------------------------------------------------------
# Command lines, forked from a process that has imported vae_jax.

# The fork server: it imports what every command imports (jax, flax, optax,
# orbax, matplotlib, tensorflow_datasets and its registry of datasets, not
# TensorFlow: ~2.5 s of a command's start), starts no JAX backend and no
# Python thread, freezes what it holds out of the garbage collector
# (`gc.freeze`, as preforking servers do), then forks a child per command,
# which runs the module as `python -m` would. The modules that define flags
# when imported (main, sweep, compress, decompress) are not imported here,
# so the child runs them as __main__ once; `vae_jax.report` is (train
# imports it; its flags are defined under __main__), and the child drops it
# from sys.modules first, as a new process would not have it. One
# difference from a new process: flags of the modules imported here
# (orbax's) are defined before the command line is parsed.
_FORK_SERVER = r"""
import gc, json, os, runpy, signal, sys, threading, time
from jax._src import xla_bridge
import tensorflow_datasets as tfds
from vae_jax import train, writers
writers.pyplot()
tfds.list_builders(with_community_datasets=False)  # Imports its registry.
assert threading.active_count() == 1, threading.enumerate()
assert not xla_bridge.backends_are_initialized()
# What is imported here stays out of the children's garbage collections,
# their exit's included (0.64 -> 0.15 s from fork to the exit of a child
# that exits at once; most commands of the bad-input tests exit in 10 ms).
gc.collect()
gc.freeze()
print("ready", flush=True)


def child(request, command):
  for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                         (1, command["stdout"], os.O_WRONLY),
                         (2, command["stderr"], os.O_WRONLY)):
    opened = os.open(path, mode)
    os.dup2(opened, fd)
    os.close(opened)
  os.chdir(request["cwd"])
  os.environ.clear()
  os.environ.update(request["env"])
  sys.argv = [command["module"], *command["args"]]
  sys.path[0] = request["cwd"]
  sys.modules.pop(command["module"], None)
  # What it raises (SystemExit included) ends the child as it would end
  # `python -m`: exit status, traceback, exit handlers.
  runpy.run_module(command["module"], run_name="__main__", alter_sys=True)
  sys.exit(0)


for line in sys.stdin:
  request = json.loads(line)
  pids = []
  for command in request["commands"]:  # Started together, run side by side.
    pid = os.fork()
    if not pid:
      child(request, command)
    pids.append(pid)
  deadline, codes = time.time() + request["timeout"], {}
  while len(codes) < len(pids) and time.time() < deadline:
    for pid in pids:
      if pid not in codes and (done := os.waitpid(pid, os.WNOHANG))[0]:
        codes[pid] = os.waitstatus_to_exitcode(done[1])
    time.sleep(0.02)
  if len(codes) < len(pids):
    for pid in pids:
      if pid not in codes:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print("timeout", flush=True)
  else:
    print(json.dumps([codes[pid] for pid in pids]), flush=True)
"""

# What a command's environment may differ in from the fork server's and
# still fork: what is read when the JAX backend starts, in the child (`env`
# of `run_module`); pytest's name of the test running; and what a test
# process sets in its own environment by starting JAX's backend or
# importing scikit-learn or TensorFlow, for libraries the fork server has
# not loaded (TensorFlow, OpenMP, TPU runtimes; jaxlib's C++ log level
# may stay the server's). Any other difference starts a new process (~2 s
# more; before these keys were allowed, most commands of a test run did,
# after its first such import). Tested in tests/test_harness.py.
_FORKABLE_ENV = ("XLA_FLAGS", "PYTEST_CURRENT_TEST",
                 # JAX's CPU backend (jaxlib 0.10):
                 "TF_CPP_MIN_LOG_LEVEL", "TPU_SKIP_MDS_QUERY",
                 # scikit-learn 1.x:
                 "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK",
                 # TensorFlow 2.21:
                 "ENABLE_RUNTIME_UPTIME_TELEMETRY", "HDF5_PLUGIN_PATH",
                 "TF2_BEHAVIOR", "TPU_ML_PLATFORM", "TPU_ML_PLATFORM_VERSION")


class _ForkServer:
  """One fork server per test process, started on first use."""

  def __init__(self):
    self.env = dict(os.environ)
    self.proc = subprocess.Popen(
        [sys.executable, "-c", _FORK_SERVER], cwd=REPO, env=self.env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert self._reply("starting") == "ready"

  def _reply(self, doing):
    line = self.proc.stdout.readline().strip()
    if not line:
      raise RuntimeError(f"The tests' fork server died {doing} (exit status "
                         f"{self.proc.wait()}; its traceback is above).")
    return line

  def forkable(self, env):
    """Whether a command with environment `env` may fork from here."""
    keys = set(env) | set(self.env)
    return all(env.get(k) == self.env.get(k) for k in keys
               if k not in _FORKABLE_ENV)

  def run(self, commands, env, cwd, timeout):
    """Runs `commands` ([(module, args)]) side by side; their
    CompletedProcesses."""
    with tempfile.TemporaryDirectory() as tmp:
      request = {"commands": [], "env": env, "cwd": cwd, "timeout": timeout}
      for i, (module, args) in enumerate(commands):
        out, err = os.path.join(tmp, f"out{i}"), os.path.join(tmp, f"err{i}")
        for path in (out, err):
          open(path, "w").close()
        request["commands"].append({"module": module, "args": list(args),
                                    "stdout": out, "stderr": err})
      self.proc.stdin.write(json.dumps(request) + "\n")
      self.proc.stdin.flush()
      codes = self._reply(f"running {commands[0][0]}")
      outputs = []
      for command in request["commands"]:
        with open(command["stdout"]) as f_out, open(command["stderr"]) as f_err:
          outputs.append((f_out.read(), f_err.read()))
    cmds = [[sys.executable, "-m", module, *args] for module, args in commands]
    if codes == "timeout":
      raise subprocess.TimeoutExpired(cmds[0], timeout, *outputs[0])
    return [subprocess.CompletedProcess(cmd, code, *output)
            for cmd, code, output in zip(cmds, json.loads(codes), outputs)]


_fork_server = None


def run_module(module, args, env=None, cwd=REPO, timeout=600):
  """`subprocess.run([python, "-m", module, *args], capture_output=True,
  text=True, timeout=timeout)`, forked from the fork server when `env`
  allows it (`_FORKABLE_ENV`: a child that starts with vae_jax's
  dependencies imported, ~2 s sooner), else a new process. Callers start
  their own processes where a fork would not do: the README's commands as
  typed (tests/test_readme.py), runs that are signalled.

  Raises:
    subprocess.TimeoutExpired: the command ran over `timeout` seconds (it
      is killed).
  """
  (done,) = run_modules([(module, args)], env, cwd, timeout)
  return done


def run_modules(commands, env=None, cwd=REPO, timeout=600):
  """`run_module` of each `(module, args)` of `commands`, all started
  together and run side by side (the processes of a multi-process run);
  their CompletedProcesses, in order.

  Raises:
    subprocess.TimeoutExpired: a command still ran after `timeout` seconds
      (all are killed).
  """
  global _fork_server
  env = {**os.environ, **(env or {})}
  if _fork_server is None:
    _fork_server = _ForkServer()
  if not _fork_server.forkable(env):
    return _run_new_processes(commands, env, cwd, timeout)
  try:
    return _fork_server.run(commands, env, cwd, timeout)
  except (RuntimeError, BrokenPipeError):
    _fork_server = None  # The next command starts a new one.
    raise


def _run_new_processes(commands, env, cwd, timeout):
  """`run_modules` in new interpreters. Their output goes to files, not
  pipes: a process blocked on a full pipe would stall the others of a
  multi-process run in their collectives."""
  with contextlib.ExitStack() as stack:
    files = [[stack.enter_context(tempfile.TemporaryFile("w+"))
              for _ in range(2)] for _ in commands]
    procs = [subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd,
                              env=env, stdout=out, stderr=err)
             for (module, args), (out, err) in zip(commands, files)]
    deadline = time.time() + timeout
    try:
      for p in procs:
        p.wait(timeout=max(deadline - time.time(), 0))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
        p.wait()
      raise
    outputs = []
    for out, err in files:
      out.seek(0)
      err.seek(0)
      outputs.append((out.read(), err.read()))
  return [subprocess.CompletedProcess(p.args, p.returncode, *output)
          for p, output in zip(procs, outputs)]


def pytest_unconfigure(config):
  """Stops this test process's fork server, if it started one."""
  del config
  if _fork_server is not None:
    _fork_server.proc.stdin.close()
    try:
      _fork_server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      _fork_server.proc.kill()


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
  """A persistent compilation cache and a cache of decoded datasets for the
  run, in the tests' processes and the subprocesses they start (which
  inherit the environment).

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
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
              # Decoded tfds splits (`tfds_source.read_tfds`): decoded once per
              # test run, not read from (or left in) the user's cache.
              tfds_source.CACHE_ENV: str(shared_root(factory) / "vae_jax_cache")}
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


def train_once(tmp_path_factory, name, run):
  """`run(workdir)` once per test run, whichever worker asks first (the
  others wait for it): the shared workdir (read only: copy it to change
  anything) and the JSON record `run` returned."""
  root = shared_root(tmp_path_factory)
  workdir, done = root / name, root / f"{name}.json"
  with file_lock(str(root / f"{name}.lock")):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      done.write_text(json.dumps(run(str(workdir))))
  return str(workdir), json.loads(done.read_text())


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
  """`small_config()` trained in-process, once per test run.

  Every step is traced once, whatever the chunk lengths, evaluations and
  checkpoints in between (a retrace would recompile): `steps.train_step`
  and the -ELBO evaluator's per-batch function once each. A second trace
  fails the run, and with it every test that uses it.
  """
  config = small_config()

  def run(workdir):
    validations = []
    with pytest.MonkeyPatch.context() as m, counting(
        config_lib, "validate", validations):
      m.setattr(steps, "train_step",
                chex.assert_max_traces(steps.train_step, n=1))
      m.setattr(elbo_evaluator, "_batch_sums",
                chex.assert_max_traces(elbo_evaluator._batch_sums, n=1))
      final = train.train_and_evaluate(config, workdir)
    return {"final": final, "validate_calls": len(validations)}

  workdir, record = train_once(tmp_path_factory, "trained_small", run)
  return TrainedRun(config=config, workdir=workdir, final=record["final"],
                    validate_calls=record["validate_calls"])


# A small run on scikit-learn's 8x8 digits (offline, seconds): an MLP VAE
# with a 3-D latent, the figure evaluators (images, latent maps) at steps 100
# and 200, the NLL at k = 10 at the end. What tests/test_report.py and
# tests/test_latent_maps.py read.
DIGITS_VAE = {
    "data.source": "sklearn", "data.name": "digits",
    "model.hidden": (64,), "model.latent_dim": 3,
    "training.num_steps": 200, "training.batch_size": 64,
    "training.steps_per_call": 50, "training.log_every_steps": 50,
    "training.checkpoint_every_steps": 100,
    "optimizer.warmup_steps": 20, "optimizer.learning_rate": 3e-3,
    "eval.batch_size": 120,
    "evals.elbo.every_steps": 100, "evals.images.every_steps": 100,
    "evals.latent_maps.every_steps": 100, "evals.nll.num_samples": 10,
}


def digits_config(**overrides):
  return config_lib.get_config(DEFAULT_CONFIG, None,
                               {**DIGITS_VAE, **overrides})


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
  """`digits_config()` trained in-process, once per test run; its workdir,
  read only (tests copy it to change anything)."""
  workdir, _ = train_once(
      tmp_path_factory, "trained_digits",
      lambda w: train.train_and_evaluate(digits_config(), w))
  return workdir


# ----------------------------------------------------------------------------
# Scheduling over the workers (pytest-xdist).

# Modules and tests that share a fixture that trains, by the unit they run
# in on one worker, so that the fixture is built once: a module-scoped
# fixture, or a session one that several modules read (`trained_digits`).
GROUPED = {
    "test_anomaly.py": "test_anomaly.py",
    "test_compress.py": "test_compress.py",
    "test_evaluators.py": "test_evaluators.py",
    "test_latent_maps.py": "trained_digits",
    "test_report.py": "trained_digits",
    # Their one-device reference run (`one_device`).
    "test_distributed.py::test_eight_devices_follow_the_one_device_trajectory":
        "one_device",
    "test_distributed.py::test_two_processes_train_checkpoint_resume_and_match_one":
        "one_device",
}

# Seconds a test takes on the reference machine (2 cores), for the longest
# ones (by function, each parametrization alike); others count 1 s.
SECONDS = {
    "test_distributed.py::test_two_processes_train_checkpoint_resume_and_match_one": 120,
    "test_anomaly.py::test_a_one_class_model_in_a_group_ends_as_alone": 90,
    "test_distributed.py::test_sweep_places_models_on_the_model_axis": 87,
    "test_distributed.py::test_eight_devices_follow_the_one_device_trajectory": 25,
    "test_compress.py::test_round_trip_is_exact_at_the_elbo_rate": 71,
    "test_train.py::test_sigkill_and_resume_is_bit_identical": 67,
    "test_sweep.py::test_sweep_runs_lists_resumes_and_summarizes": 61,
    "test_evaluators.py::test_eval_mode_rescores_with_more_samples": 52,
    "test_readme.py::test_first_command_and_eval_mode_run_with_runlocal": 44,
    "test_sweep.py::test_group_equals_alone_and_kl_falls_with_beta": 42,
    "test_compress.py::test_cli_round_trip_and_clear_errors": 38,
    "test_evaluators.py::test_training_reports_the_nll": 32,
    "test_train.py::test_damaged_newest_checkpoint_falls_back_to_an_intact_one": 22,
    "test_compiler.py::test_llvm_level_1_computes_the_bits_of_the_default_level_3": 22,
    "test_configs.py::test_config_trains_a_short_run_that_improves": 21,
    "test_latent_maps.py::test_unlabeled_conv_autoencoder": 21,
    "test_train.py::test_a_second_process_on_a_workdir_is_refused": 21,
    "test_sweep.py::test_group_resumes_from_the_step_every_model_has": 20,
    "test_experiments.py::test_flop_count_includes_every_chunk": 17,
    "test_sweep.py::test_index_runs_one_point_and_rejects_out_of_range": 16,
    "test_harness.py::test_what_jax_and_imports_write_to_the_environment_still_forks": 14,
    "test_train.py::test_eval_mode_scores_a_trained_workdir": 16,
    "test_compress.py::test_eight_bit_images_round_trip_at_the_elbo_rate": 15,
    "test_latent_maps.py::test_vae_figures_at_every_eval_and_history": 12,
    "test_sources.py::test_short_run_from_each_source": 11,
    "test_anomaly.py::test_a_model_of_0s_finds_1s_anomalous_and_the_api_agrees": 10,
    "test_train.py::test_one_number_per_quantity": 10,
    "test_train.py::test_download_offline_fails_fast_and_leaves_nothing": 10,
    "test_latent_maps.py::test_eval_mode_rebuilds_the_figures_and_keeps_history": 9,
    "test_train.py::test_missing_data_offline_says_where_to_point": 9,
    "test_importance.py::test_batches_count_every_example_once": 9,
    "test_family.py::test_ae_objective_adds_its_terms_and_reconstructs_the_clean_input": 9,
    "test_evaluators.py::test_estimate_does_not_depend_on_chunk_or_batch_size": 8,
    "test_train.py::test_divergence_stops_with_step_and_keeps_good_checkpoints": 8,
    "test_readme.py::test_adding_an_evaluator_example_runs": 7,
    "test_family.py::test_trained_api_loads_a_workdir_and_matches_the_run": 7,
    "test_ae_pca.py::test_linear_autoencoder_reaches_pca": 7,
    "test_steps.py::test_hparam_and_group_fields_follow_the_objective": 7,
    "test_report.py::test_command_line_rebuilds_it_and_refuses_a_missing_workdir": 6,
    "test_report.py::test_report_shows_how_numbers_were_estimated_and_the_command": 6,
    "test_family.py::test_corruptions_have_their_rates_and_ranges": 5,
    "test_distributed.py::test_mesh_on_a_subset_of_the_devices": 5,
    "test_config_lib.py::test_base_defines_every_field_each_module_reads": 4,
    "test_compress.py::test_evaluator_codes_the_test_set_at_the_elbo_rate": 3,
    "test_report.py::test_sweep_report_links_its_points": 3,
    "test_train.py::test_incompatible_workdir_is_refused": 3,
    "test_sources.py::test_bad_data_is_one_sentence_exit_2_nothing_written": 3,
    "test_train.py::test_bad_input_is_one_sentence_exit_2_nothing_changed": 3,
}


def _seconds(nodeid):
  return SECONDS.get(nodeid.split("[")[0].rsplit("/", 1)[-1], 1.0)


def _unit(nodeid):
  """What runs on one worker: a group (`GROUPED`), or the test alone."""
  module = nodeid.split("::")[0].rsplit("/", 1)[-1]
  test = nodeid.split("[")[0].rsplit("/", 1)[-1]
  return GROUPED.get(test, GROUPED.get(module, nodeid))


def pytest_collection_modifyitems(items):
  """The work starts with the longest units (LPT): the workers finish
  together."""
  units = {}
  for item in items:
    units.setdefault(_unit(item.nodeid), []).append(item)
  ordered = sorted(units.values(),
                   key=lambda u: -sum(_seconds(i.nodeid) for i in u))
  items[:] = [item for unit in ordered for item in unit]


def pytest_xdist_make_scheduler(config, log):
  """Units (`_unit`) go to the next free worker in collection order."""
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class UnitScheduling(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      return _unit(nodeid)

  config.option.loadscopereorder = False  # Keep the order above.
  return UnitScheduling(config, log)
