"""What every vae_jax command line shares: quiet logs, one-sentence errors."""

import difflib
import logging as std_logging
import os
import sys
from typing import Any, Callable

from absl import flags
from absl import logging

from vae_jax.errors import UserError

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "host:port of process 0 for a multi-process run "
    "(default $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "1")),
    "Processes in the run (default $JAX_NUM_PROCESSES or 1).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ.get("JAX_PROCESS_ID", "0")),
    "This process's index (default $JAX_PROCESS_ID or 0).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with no arguments, letting JAX detect "
    "the cluster (SLURM, Open MPI, Kubernetes, TPU pods).")


def initialize_distributed() -> None:
  """Joins a multi-process run when the flags or environment ask for one."""
  import jax  # pylint: disable=g-import-not-at-top
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  elif _NUM_PROCESSES.value > 1:
    if not _COORDINATOR.value:
      raise UserError("--num_processes > 1 needs --coordinator_address "
                      "(or $JAX_COORDINATOR_ADDRESS) of process 0.")
    # Collectives between CPU processes (tests, CPU clusters); GPUs and
    # TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  else:
    return
  logging.info("Process %d of %d; %d local of %d devices.",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _quiet_orbax(record) -> bool:
  # Orbax logs every checkpoint step at INFO; keep its warnings only.
  return (record.levelno >= std_logging.WARNING
          or "/orbax/" not in record.pathname)


def fail(message: str) -> None:
  """Ends the program with one `vae_jax: message` line, exit status 2."""
  print(f"vae_jax: {message}", file=sys.stderr)
  sys.exit(2)


def run(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """Runs `fn`; a UserError becomes one `vae_jax: ...` line and exit 2."""
  logging.get_absl_handler().addFilter(_quiet_orbax)
  try:
    initialize_distributed()
    return fn(*args, **kwargs)
  except UserError as e:
    logging.error("%s", e)
    fail(str(e))


def override_flags(overrides: dict[str, Any]) -> list[str]:
  """`{"model.hidden": (500,), "seed": 1}` as the command line's config
  overrides: `["--config.model.hidden=(500,)", "--config.seed=1"]` (tuples
  written so that ml_collections parses them back as tuples)."""
  args = []
  for name, value in overrides.items():
    if isinstance(value, tuple):
      value = "(" + ",".join(map(str, value)) + ",)"
    args.append(f"--config.{name}={value}")
  return args


def parse_flags(argv: list[str]) -> list[str]:
  """The `flags_parser` of every vae_jax `app.run`: parses the command line
  and loads the config file, turning any failure (a missing or broken
  config file, an override of a field that does not exist, a bad flag
  value) into one `vae_jax:` sentence and exit status 2.

  Returns:
    The arguments that are not flags (as absl's default parser).
  """
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      # A file that failed to load gives a stand-in that raises on use.
      _ = flags.FLAGS["config"].value.keys()
    return rest
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    fail(config_error(argv, e))


def config_error(argv: list[str], error: Exception) -> str:
  """One sentence for a command line whose flags or config failed to load.

  Diagnoses in order: the config file (missing, syntax error, its
  `get_config` failing), each `--config.a.b=v` override (a field or section
  that does not exist, with the nearest name), then `error` itself.
  """
  # pylint: disable=g-import-not-at-top
  from vae_jax import config_lib
  # pylint: enable=g-import-not-at-top
  paths = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")]
  overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:]
               if a.startswith("--config.")]
  if paths:
    path, _, arg = paths[-1].partition(":")
    if not os.path.isfile(path):
      return f"Config file {path} does not exist."
    try:
      with open(path) as f:
        compile(f.read(), path, "exec")
    except SyntaxError as e:
      return (f"Config file {path} has a syntax error on line {e.lineno}: "
              f"{e.msg}.")
    try:
      config = config_lib.load_module(path).get_config(arg or None)
    except UserError as e:
      return str(e)
    except Exception as e:  # pylint: disable=broad-except
      return (f"Config file {path} failed in get_config: "
              f"{type(e).__name__}: {_first_line(e)}.")
    fields = config_lib.flatten(config)
    sections = {k.rsplit(".", 1)[0] for k in fields}
    for name in overrides:
      if name not in fields and name not in sections:
        near = difflib.get_close_matches(name, list(fields), n=1)
        return (f"--config.{name}: the config {path} has no field {name}"
                + (f" (did you mean {near[0]}?)." if near else "."))
  message = _first_line(error).rstrip(" .?")
  return message + "."


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  if isinstance(error, UserError) or "vae_jax.errors.UserError: " in text:
    text = text.rsplit("vae_jax.errors.UserError: ", 1)[-1]
  return text.splitlines()[0] if text else type(error).__name__
