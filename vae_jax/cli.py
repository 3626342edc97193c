"""What every vae_jax command line shares: quiet logs, one-sentence errors."""

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


def run(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """Runs `fn`; a UserError becomes one `vae_jax: ...` line and exit 2."""
  logging.get_absl_handler().addFilter(_quiet_orbax)
  try:
    initialize_distributed()
    return fn(*args, **kwargs)
  except UserError as e:
    logging.error("%s", e)
    print(f"vae_jax: {e}", file=sys.stderr)
    sys.exit(2)
