"""A run's directory: its config, checkpoints and results.

    DIR/config.json     the run's full config (`config_lib` schema)
    DIR/checkpoints/    Orbax checkpoints of the train state, one per step
    DIR/results.json    the evaluators' final numbers, labelled
    DIR/metrics.jsonl   every logged scalar (`writers.MetricWriter`)
    DIR/provenance.jsonl  one line per start: command line, code version
    DIR/report.html, DIR/report.md  the run report (`vae_jax.report`)
    DIR/images/, DIR/tb/

Only process 0 writes config.json and results.json; every process writes its
part of the checkpoints, to a workdir on a shared file system.
"""

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from vae_jax import config_lib
from vae_jax import files
from vae_jax import splits
from vae_jax.errors import UserError

CONFIG = "config.json"
WINDOWS = "train_windows.json"
PROVENANCE = "provenance.jsonl"
RESULTS = "results.json"
STANDARDIZATION = "standardization.json"
# Fields added to the schema since config.json files were first written,
# whose defaults do what the runs that lack them did (a tfds dataset, all
# classes): an older run's config.json gets them.
ADDED_FIELDS = ("data.source", "data.path", "data.test_path",
                "data.test_fraction", "data.split_seed", "data.label_column",
                "data.train_classes", "data.test_classes", "data.standardize",
                "data.validation_fraction", "training.num_steps",
                "evals.anomaly.", "evals.compress.", "evals.latent_maps.",
                "evals.ae_pca.")
# Fields a resumed run may change: they alter what is logged, evaluated or
# where data is read from, not what any step computes. Any other difference
# is an error: the length of a run (training.num_epochs, num_steps) sets the
# learning-rate schedule of every step, so it is fixed when the run starts.
RESUMABLE_CHANGES = ("eval.", "evals.", "sweep.", "training.log_every_steps",
                     "training.checkpoint_every_steps",
                     "training.checkpoints_to_keep", "training.steps_per_call",
                     "training.model_axis_size", "data.data_dir",
                     "data.download")
DAMAGED = "damaged_checkpoints"


def check_writable(workdir: str) -> None:
  """Raises UserError if `workdir` cannot be a run's directory: it names a
  file, or it (or the nearest existing folder above it) cannot be written.
  Creates nothing that outlives the call."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"Workdir {workdir} is a file, not a directory: give a "
                    "new or existing directory.")
  existing = os.path.abspath(workdir)
  while not os.path.isdir(existing):
    parent = os.path.dirname(existing)
    if os.path.exists(existing) or parent == existing:
      raise UserError(f"Workdir {workdir} cannot be created: {existing} is "
                      "not a directory.")
    existing = parent
  try:  # A real write: permissions alone miss read-only file systems.
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f"Workdir {workdir} cannot be written ({existing}: "
                    f"{e.strerror}).") from None


@contextlib.contextmanager
def locked(workdir: str):
  """Holds `workdir`'s lock while the block runs (process 0 only).

  An advisory `flock` on the directory itself (no file is written): the
  kernel releases it when the process ends in any way, SIGKILL included, so
  nothing stale can block a later run.

  Raises:
    UserError: another live process holds it.
  """
  if jax.process_index() != 0:
    yield
    return
  fd = os.open(workdir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f"Workdir {workdir} is in use by another vae_jax "
                      "process: wait for it to end, or use another "
                      "--workdir.") from None
    yield
  finally:
    os.close(fd)  # Releases the lock.


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a run; UserError if there is none."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    raise UserError(f"Workdir {workdir} has no {CONFIG}: give the workdir of "
                    "a training run.")
  try:
    with open(path) as f:
      config = config_lib.from_json(f.read())
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"The {CONFIG} of workdir {workdir} is damaged "
                    f"({type(e).__name__} at {str(e)[:60]}): restore it, or "
                    "use a new --workdir.") from None
  defaults = config_lib.flatten(config_lib.base())
  missing = sorted(set(defaults) - set(config_lib.flatten(config)))
  for name in [m for m in missing if m.startswith(ADDED_FIELDS)]:
    *parents, leaf = name.split(".")
    node = config
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[leaf] = defaults[name]
    missing.remove(name)
  if missing:
    raise UserError(
        f"Workdir {workdir} was written by an older vae_jax whose {CONFIG} "
        f"lacks {len(missing)} field(s) of today's schema ({missing[0]}, "
        "...): retrain it, or load it with the vae_jax version that wrote "
        "it.")
  return config


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() == 0:
    files.write_text(os.path.join(workdir, CONFIG), config.to_json(indent=2))


def code_version() -> dict[str, Any]:
  """The vae_jax source's git commit and whether it had local changes
  (`{"git_commit": hash or None, "git_dirty": bool or None}`); None where
  the code is not a git checkout or git is missing."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = lambda *a: subprocess.run(["git", "-C", root, *a], check=True,
                                    capture_output=True, text=True,
                                    timeout=10).stdout.strip()
    return {"git_commit": run("rev-parse", "HEAD"),
            "git_dirty": bool(run("status", "--porcelain", "--",
                                  "vae_jax", "configs"))}
  except (OSError, subprocess.SubprocessError):
    return {"git_commit": None, "git_dirty": None}


def command_line() -> str:
  """This process's command line as one would type it again: `python -m
  vae_jax.<module> ...` for the vae_jax entry points."""
  argv = list(sys.argv)
  script = os.path.abspath(argv[0]) if argv else ""
  parts = os.path.normpath(script).split(os.sep)
  if len(parts) >= 2 and parts[-2] == "vae_jax" and script.endswith(".py"):
    argv = ["python", "-m", f"vae_jax.{parts[-1][:-3]}", *argv[1:]]
  return " ".join(shlex.quote(a) for a in argv)


def write_provenance(workdir: str) -> None:
  """Appends this start's command line, code version and time to
  `provenance.jsonl` (process 0): the first line is the run's command."""
  if jax.process_index() != 0:
    return
  line = {"command": command_line(), **code_version(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds")}
  with open(os.path.join(workdir, PROVENANCE), "a") as f:
    f.write(json.dumps(line) + "\n")


def read_provenance(workdir: str) -> list[dict[str, Any]]:
  """The lines of `provenance.jsonl`, oldest first; [] if there is none."""
  path = os.path.join(workdir, PROVENANCE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def check_compatible(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that holds a run with an incompatible config."""
  if not os.path.exists(os.path.join(workdir, CONFIG)):
    return
  saved = load_config(workdir)
  diff = config_lib.differences(saved, config, RESUMABLE_CHANGES)
  if diff:
    old, new = config_lib.flatten(saved), config_lib.flatten(config)
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})"
                      for k in diff[:3])
    raise UserError(
        f"Workdir {workdir} holds a run with a different config ({shown}"
        f"{', ...' if len(diff) > 3 else ''}): use a new --workdir, or the "
        f"saved {CONFIG}.")


def checkpoint_manager(workdir: str, max_to_keep: int | None = None
                       ) -> ocp.CheckpointManager:
  """The Orbax manager of `workdir/checkpoints/` (created if missing)."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           create=True))


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps saved in `workdir`, sorted; creates nothing."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return []
  return sorted(checkpoint_manager(workdir).all_steps())


def restore(manager: ocp.CheckpointManager, step: int, like: Any, *,
            params_only: bool = False) -> Any:
  """The state saved at `step`, in the layout and dtypes of `like`.

  Args:
    manager: the workdir's `checkpoint_manager`.
    step: a saved step.
    like: a train state (arrays or `jax.ShapeDtypeStruct`s, with their
      shardings) of the run; with `params_only`, its parameters.
    params_only: return the parameters only, checking their structure and
      shapes against `like` (the checkpoint is read without a target, in
      the layout it was saved in).

  Returns:
    The restored state, or parameters.

  Raises:
    UserError: the checkpoint does not hold parameters shaped like `like`.
  """
  if not params_only:
    return manager.restore(step, args=ocp.args.StandardRestore(like))
  params = manager.restore(step, args=ocp.args.StandardRestore())["params"]
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  if (jax.tree.structure(params) != jax.tree.structure(like)
      or shapes(params) != shapes(like)):
    raise UserError(f"The checkpoint at step {step} in {manager.directory} "
                    f"does not match the model in its {CONFIG}.")
  return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), params, like)


class DamagedCheckpoint(UserError):
  """A checkpoint that cannot be read (truncated or partly written)."""


def restore_checked(manager: ocp.CheckpointManager, step: int, like: Any, *,
                    params_only: bool = False) -> Any:
  """`restore`, with any failure to read the files a `DamagedCheckpoint`
  that names the step (a mismatch with the model stays a UserError)."""
  try:
    return restore(manager, step, like, params_only=params_only)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    others = [s for s in manager.all_steps() if s != step]
    raise DamagedCheckpoint(
        f"The checkpoint at step {step} in {manager.directory} is damaged "
        f"and cannot be read ({type(e).__name__}); other steps saved: "
        f"{sorted(others) or 'none'}.") from None


def set_aside(manager: ocp.CheckpointManager, workdir: str, step: int) -> str:
  """Moves a damaged checkpoint out of the way (to `workdir/DAMAGED/step`),
  kept for inspection, so that training can save that step again."""
  src = os.path.join(os.fspath(manager.directory), str(step))
  dst = os.path.join(workdir, DAMAGED, str(step))
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  if os.path.exists(dst):
    shutil.rmtree(dst)
  shutil.move(src, dst)
  manager.reload()
  return dst


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves one model's (unstacked) train state at `step`, asynchronously."""
  manager.save(step, args=ocp.args.StandardSave(state))


def write_window(workdir: str, step: int, window_step: int,
                 sums: dict[str, Any], saved: list[int]) -> None:
  """Records the training-metric window open at the checkpoint of `step`:
  the step of the last log and the metrics' float32 sums since then. Written
  before the checkpoint is saved; entries of steps not in `saved` (the
  manager's steps) are dropped."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, WINDOWS)
  kept = set(map(str, saved))
  windows = {k: v for k, v in _read_windows(path).items() if k in kept}
  windows[str(step)] = {"window_step": int(window_step),
                        "sums": {k: float(v) for k, v in sums.items()}}
  files.write_json(path, windows)


def read_window(workdir: str, step: int) -> dict[str, Any] | None:
  """The window `write_window` recorded at `step`, or None."""
  return _read_windows(os.path.join(workdir, WINDOWS)).get(str(step))


def _read_windows(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def write_results(workdir: str, results: dict[str, Any]) -> None:
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, RESULTS), results, indent=2)


def read_results(workdir: str) -> dict[str, Any]:
  with open(os.path.join(workdir, RESULTS)) as f:
    return json.load(f)


def is_done(workdir: str) -> bool:
  """Whether the run in `workdir` finished (wrote its results)."""
  return os.path.exists(os.path.join(workdir, RESULTS))


def write_standardization(workdir: str,
                          standardization: splits.Standardization | None
                          ) -> None:
  """Saves a table's standardization (`splits.Standardization` or None)."""
  if standardization is not None and jax.process_index() == 0:
    files.write_text(os.path.join(workdir, STANDARDIZATION),
                     standardization.to_json())


def read_standardization(workdir: str) -> splits.Standardization | None:
  """The run's saved `splits.Standardization`, or None if it has none."""
  path = os.path.join(workdir, STANDARDIZATION)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return splits.Standardization.from_json(f.read())
