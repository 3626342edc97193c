r"""Decompresses a file made by `vae_jax.compress` (see its docstring).

  python -m vae_jax.decompress --workdir=W --input=images.vae --output=out.npz
"""

import functools

from absl import app

from vae_jax import cli
from vae_jax import compress

if __name__ == "__main__":
  app.run(functools.partial(compress.main, mode="decompress"),
          flags_parser=cli.parse_flags)
