"""What every vae_jax command line shares: quiet logs, one-sentence errors."""

import sys
from typing import Any, Callable

from absl import logging

from vae_jax.errors import UserError


def _quiet_orbax(record) -> bool:
  # Orbax logs every checkpoint step at INFO; keep its warnings only.
  return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def run(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """Runs `fn`; a UserError becomes one `vae_jax: ...` line and exit 2."""
  logging.get_absl_handler().addFilter(_quiet_orbax)
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    logging.error("%s", e)
    print(f"vae_jax: {e}", file=sys.stderr)
    sys.exit(2)
