r"""Trains or evaluates a vae_jax model from an ml_collections config.

  python -m vae_jax.main --config=configs/mnist_vae.py --workdir=DIR \
      [--config.model.latent_dim=50] [--mode=eval]

Re-running on an existing workdir resumes from its last checkpoint.
`--mode=eval` runs the config's evaluators on the latest checkpoint, e.g.
`--mode=eval --config.evals.nll.num_samples=5000`, and rewrites
results.json.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from vae_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mnist_vae.py[:runlocal].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and images.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (resumes if possible) or eval (score the "
                          "latest checkpoint without training).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  run = (train.train_and_evaluate if _MODE.value == "train"
         else train.evaluate)
  cli.run(run, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
