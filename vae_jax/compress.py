r"""Lossless compression of images with a trained VAE (BB-ANS).

  python -m vae_jax.compress --workdir=W --input=images.npz --output=images.vae
  python -m vae_jax.decompress --workdir=W --input=images.vae --output=out.npz

(`python -m vae_jax.compress --mode=decompress ...` is the same as the
second.) The input is what `data.source=npz` reads: a `.npz` with `x`
`[N, H, W(, C)]` or a `.npy`, of 0/1 pixels (uint8 0/255, bool or floats of
0 and 1 too) for a Bernoulli VAE, of uint8 pixels for a VAE with a
discretized Gaussian decoder; labels are not compressed. Decompression writes the same
array, dtype and shape included, as a `.npz` (key `x`) or a `.npy` by the
output's extension. The coder is `vae_jax.bbans` with the workdir's
`evals.compress` settings (or the flags below); a file must be decompressed
with the workdir's model that compressed it, on the same kind of machine.

Prints one summary line: net bits/dim (payload less the initial bits the
chain starts from), the file's bits/dim, the initial bits, the model's
-ELBO on the same images, and images per second.
"""

import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained VAE's workdir.")
_INPUT = flags.DEFINE_string("input", None, "The file to read.")
_OUTPUT = flags.DEFINE_string("output", None, "The file to write.")
_MODE = flags.DEFINE_enum("mode", "compress", ["compress", "decompress"],
                          "compress images, or decompress a .vae file.")
_LATENT_BITS = flags.DEFINE_integer(
    "latent_bits", None, "Default evals.compress.latent_bits of the workdir.")
_POSTERIOR_PRECISION = flags.DEFINE_integer(
    "posterior_precision", None,
    "Default evals.compress.posterior_precision of the workdir.")
_BLOCK_SIZE = flags.DEFINE_integer(
    "block_size", None, "Default evals.compress.block_size of the workdir.")
flags.mark_flags_as_required(["workdir", "input", "output"])


def _codec(workdir: str):
  # pylint: disable=g-import-not-at-top
  import dataclasses
  from vae_jax import bbans
  from vae_jax import trained
  from vae_jax.evaluators import compress as compress_evaluator
  # pylint: enable=g-import-not-at-top
  m = trained.load(workdir)
  settings = compress_evaluator.settings_of(m.config.evals.compress)
  changes = {name: flag.value for name, flag in (
      ("latent_bits", _LATENT_BITS),
      ("posterior_precision", _POSTERIOR_PRECISION),
      ("block_size", _BLOCK_SIZE)) if flag.value is not None}
  settings = dataclasses.replace(settings, **changes)
  return m, bbans.Codec(m.model, m.params, m.event_shape, settings)


def _read_array(path: str) -> np.ndarray:
  """The `x` array of a .npz or .npy, exactly as stored (checked by
  `sources.read_npz`, which also gives the errors)."""
  from vae_jax import sources  # pylint: disable=g-import-not-at-top
  sources.read_npz(path)
  f = np.load(path, allow_pickle=False)
  if isinstance(f, np.lib.npyio.NpzFile):
    with f:
      return f["x"]
  return f


def _write_array(path: str, x: np.ndarray) -> None:
  with open(path, "wb") as f:
    if path.lower().endswith(".npz"):
      np.savez(f, x=x)
    else:
      np.save(f, x)


def compress_file(workdir: str, input_path: str, output_path: str) -> dict:
  """Compresses the images of `input_path` into `output_path`.

  Returns:
    The `bbans.Stats` as a dict, with the model's single-sample -ELBO on the
    same images (`nelbo_bits_per_dim`).

  Raises:
    UserError: a missing or unreadable input, images that are not the
      model's shape or kind (binary, or uint8), a model that cannot code.
  """
  from vae_jax import losses  # pylint: disable=g-import-not-at-top
  x = _read_array(input_path)
  m, codec = _codec(workdir)
  data, stats = codec.compress(x, input_path)
  with open(output_path, "wb") as f:
    f.write(data)
  scored = (x.astype(np.float32) / 255 if codec.eight_bit
            else (x != 0).astype(np.float32)).reshape(len(x), *m.event_shape)
  nelbo = float(np.mean(m.score(scored)["nelbo"], dtype=np.float64))
  out = {**stats.to_dict(), "nelbo_bits_per_dim": float(
      losses.bits_per_dim(nelbo, codec.num_dims))}
  print(f"{input_path}: {stats.num_images} images -> {output_path}, "
        f"{stats.file_bytes} bytes: {stats.net_bits_per_dim:.4f} bits/dim "
        f"net, {stats.file_bits_per_dim:.4f} bits/dim with the "
        f"{stats.initial_bits} initial bits and the header; model -ELBO "
        f"{out['nelbo_bits_per_dim']:.4f} bits/dim; "
        f"{stats.images_per_second:.0f} images/s.")
  return out


def decompress_file(workdir: str, input_path: str, output_path: str) -> dict:
  """Decompresses `input_path` (made by `compress_file`) into `output_path`.

  Returns:
    The `bbans.Stats` of the file, as a dict.

  Raises:
    UserError: a missing, foreign or corrupted file, or one compressed with
      another model.
  """
  from vae_jax import bbans_file  # pylint: disable=g-import-not-at-top
  from vae_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(input_path):
    raise UserError(f"{input_path} does not exist.")
  with open(input_path, "rb") as f:
    data = f.read()
  # A foreign file fails before the model loads.
  bbans_file.read_header(data, input_path)
  _, codec = _codec(workdir)
  x, stats = codec.decompress(data, input_path)
  _write_array(output_path, x)
  print(f"{input_path} -> {output_path}: {stats.num_images} images "
        f"{list(x.shape[1:])} {x.dtype}; {stats.images_per_second:.0f} "
        "images/s.")
  return stats.to_dict()


def main(argv, mode: str | None = None):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  fn = (compress_file if (mode or _MODE.value) == "compress"
        else decompress_file)
  cli.run(fn, _WORKDIR.value, _INPUT.value, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
