r"""Trains or evaluates a vae_jax model from an ml_collections config.

  python -m vae_jax.main --config=configs/mnist_vae.py --workdir=DIR \
      [--config.model.latent_dim=50] [--mode=eval]

Re-running on an existing workdir resumes from its last checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vae_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mnist_vae.py[:runlocal].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and images.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (resumes if possible) or eval (score the "
                          "latest checkpoint without training).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record) -> bool:
  # Orbax logs every checkpoint step at INFO; keep its warnings only.
  return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  os.makedirs(_WORKDIR.value, exist_ok=True)
  try:
    if _MODE.value == "train":
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      train.evaluate_workdir(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    logging.error("%s", e)
    print(f"vae_jax: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
