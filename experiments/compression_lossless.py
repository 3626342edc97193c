r"""Lossless compression of the binarized MNIST test set: BB-ANS vs codecs.

  python experiments/compression_lossless.py --workdir=workdirs/mnist_vae_best

(Not experiments/compression.py: run as a script, that name would shadow the
`compression` package JAX imports.)

Codes the run's fixed binarized test set (all 10,000 images, or the first
--num_images) with bits-back coding (`vae_jax.bbans`, the workdir's
`evals.compress` settings), checks that decoding gives every image back
exactly, and sets beside it, in bits per pixel (bits/dim):
  - the model's -ELBO on the same images (single-sample, closed-form KL,
    averaged over --elbo_seeds latent draws), and its importance-sampled NLL
    when the workdir's results.json has one;
  - gzip, bz2, lzma (and zstd if the `zstandard` package is installed) at
    their strongest settings on the images' packed bits, one stream for the
    whole set;
  - PNG (1-bit, optimized) and WebP lossless (Pillow), one file per image
    (as BB-ANS reports them) and one mosaic of all the images.
Writes compression.json and .md under --out (compression_8bit.* for a
model of 8-bit images, e.g. `model.likelihood=discretized_gaussian`, whose
codecs then see the pixel bytes and gray PNG/WebP).

Published for binarized MNIST (Townsend et al. 2019, BB-ANS): VAE -ELBO
0.19, BB-ANS 0.19, bz2 0.25, gzip 0.33, PNG 0.78, WebP 0.44 bits/dim.
"""

import bz2
import dataclasses
import gzip
import io
import json
import lzma
import math
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import bbans  # pylint: disable=g-import-not-at-top
from vae_jax import cli  # pylint: disable=g-import-not-at-top
from vae_jax import losses  # pylint: disable=g-import-not-at-top
from vae_jax import trained  # pylint: disable=g-import-not-at-top
from vae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
from vae_jax.evaluators import compress as compress_evaluator  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained Bernoulli VAE.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 0,
                                   "The first test images coded; 0: all.")
_ELBO_SEEDS = flags.DEFINE_integer("elbo_seeds", 4,
                                   "Latent draws averaged for the -ELBO.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")
flags.mark_flags_as_required(["workdir"])

PUBLISHED = {"VAE -ELBO": 0.19, "BB-ANS": 0.19, "bz2": 0.25, "gzip": 0.33,
             "PNG": 0.78, "WebP": 0.44}


def stream_codecs() -> dict:
  """name -> bytes -> compressed bytes, at each codec's strongest setting."""
  codecs = {
      "gzip -9": lambda b: gzip.compress(b, compresslevel=9, mtime=0),
      "bz2 -9": lambda b: bz2.compress(b, compresslevel=9),
      "lzma -9e": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
  }
  try:
    import zstandard  # pylint: disable=g-import-not-at-top
    codecs["zstd -22"] = lambda b: zstandard.ZstdCompressor(level=22).compress(b)
  except ImportError:
    logging.info("zstandard is not installed: no zstd row.")
  return codecs


def image_bytes(image: np.ndarray, fmt: str) -> int:
  """Bytes of one image `[H, W]` (bool: binary, 1-bit PNG; uint8: gray) as
  a lossless PNG or WebP."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  gray = image.astype(np.uint8) * (255 if image.dtype == np.bool_ else 1)
  if fmt == "PNG":
    im = Image.fromarray(gray)
    (im.convert("1") if image.dtype == np.bool_ else im).save(
        buf, "PNG", optimize=True)
  else:  # WebP has no 1-bit mode: gray, lossless, slowest method.
    Image.fromarray(gray).save(buf, "WEBP", lossless=True, quality=100,
                               method=6)
  return len(buf.getvalue())


def mosaic(images: np.ndarray) -> np.ndarray:
  """`[N, H, W]` -> one `[rows H, cols W]` image, padded with 0 images."""
  n, h, w = images.shape
  cols = int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  grid = np.zeros((rows * cols, h, w), images.dtype)
  grid[:n] = images
  return grid.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(
      rows * h, cols * w)


def measure(workdir: str, num_images: int, elbo_seeds: int, out: str) -> dict:
  m = trained.load(workdir)
  x = m.data.test_x[:num_images or None]  # uint8 {0, 255}, or 0..255
  eight_bit = m.data.binarization == "none" and not m.data.is_binary
  n, dims = len(x), math.prod(m.event_shape)
  per_dim = lambda num_bits: num_bits / (n * dims)
  rows = []

  settings = compress_evaluator.settings_of(m.config.evals.compress)
  codec = bbans.Codec(m.model, m.params, m.event_shape, settings)
  data, enc = codec.compress(x)
  decoded, dec = codec.decompress(data)
  if not np.array_equal(decoded, x):
    raise AssertionError("BB-ANS did not round-trip the test set.")
  rows.append({"codec": "BB-ANS, net (this model)",
               "bits_per_dim": enc.net_bits_per_dim,
               "note": "compressed bits less the initial bits"})
  rows.append({"codec": "BB-ANS, whole file",
               "bits_per_dim": enc.file_bits_per_dim,
               "note": f"+ {enc.initial_bits} initial bits, "
                       f"{enc.file_bytes - enc.payload_bits // 8} bytes of "
                       "header and checksum"})

  scored = x.astype(np.float32) / 255 if eight_bit else (x != 0).astype(
      np.float32)
  nelbo = np.mean([m.score(scored, seed=s)["nelbo"]
                   for s in range(elbo_seeds)], axis=0)
  nelbo_bpd = float(losses.bits_per_dim(np.mean(nelbo, dtype=np.float64),
                                        dims))
  rows.append({"codec": "model -ELBO", "bits_per_dim": nelbo_bpd,
               "note": f"mean of {elbo_seeds} single-sample estimates"})
  nll = None
  if workdir_lib.is_done(workdir):
    results = workdir_lib.read_results(workdir)
    section = results.get("nll", {})
    if section.get("num_examples") == n:  # The same (whole) test set.
      nll = section["nll_bits_per_dim"]
      rows.append({"codec": "model IS-NLL", "bits_per_dim": nll,
                   "note": f"results.json, k = {section['num_samples']}"})

  packed = (x.tobytes() if eight_bit
            else np.packbits((x != 0).reshape(-1)).tobytes())
  for name, fn in stream_codecs().items():
    rows.append({"codec": name, "bits_per_dim": per_dim(8 * len(fn(packed))),
                 "note": "the pixel bytes" if eight_bit
                         else "packed bits, one stream"})
  images = (x if eight_bit else x != 0).reshape(n, *m.event_shape[:2])
  for fmt in ("PNG", "WebP"):
    each = sum(image_bytes(im, fmt) for im in images)
    rows.append({"codec": f"{fmt}, per image", "bits_per_dim":
                 per_dim(8 * each), "note": "one file per image"})
    rows.append({"codec": f"{fmt}, mosaic", "bits_per_dim":
                 per_dim(8 * image_bytes(mosaic(images), fmt)),
                 "note": "all images tiled into one file"})
  return {
      "workdir": workdir, "step": m.step, "num_images": n,
      "pixels": "8-bit" if eight_bit else "binary",
      "data": m.data.about(), "settings": dataclasses.asdict(settings),
      "rows": rows,
      "bbans": {"encode": enc.to_dict(), "decode": dec.to_dict(),
                "nelbo_bits_per_dim": nelbo_bpd, "nll_bits_per_dim": nll},
      "published_bbans_2019": PUBLISHED,
  }


def write(result: dict, out: str, command: str, seconds: float) -> None:
  os.makedirs(out, exist_ok=True)
  result = {**result, "command": command, "wall_seconds": seconds,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
  name = "compression" if result["pixels"] == "binary" else "compression_8bit"
  with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump(result, f, indent=2)
  enc, dec = result["bbans"]["encode"], result["bbans"]["decode"]
  lines = [
      "# Lossless compression of the " + (
          "binarized MNIST test set" if result["pixels"] == "binary"
          else "8-bit MNIST test set"),
      "",
      f"{result['num_images']} test images ("
      + ("binarized once, seed 0" if result["pixels"] == "binary"
         else "8-bit gray") + "), "
      f"model {result['workdir']} at step {result['step']}. Command: "
      f"`{command}` ({seconds:.0f} s wall on {result['machine']}).",
      "",
      "| codec | bits/dim | note |",
      "| --- | ---: | --- |",
  ]
  lines += [f"| {r['codec']} | {r['bits_per_dim']:.4f} | {r['note']} |"
            for r in result["rows"]]
  published = ([
      "",
      "Published (Townsend et al. 2019, BB-ANS): " + ", ".join(
          f"{k} {v}" for k, v in PUBLISHED.items()) + " bits/dim."]
               if result["pixels"] == "binary" else [])
  lines += [
      "",
      f"BB-ANS: {enc['file_bytes']} bytes, initial bits "
      f"{enc['initial_bits']}, net {enc['net_bits']} bits; encoding "
      f"{enc['images_per_second']:.0f} images/s, decoding "
      f"{dec['images_per_second']:.0f} images/s; decoding reproduced every "
      "image exactly. Settings: " + json.dumps(result["settings"]) + ".",
  ] + published
  with open(os.path.join(out, name + ".md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def main(argv):
  del argv
  start = time.time()
  result = cli.run(measure, _WORKDIR.value, _NUM_IMAGES.value,
                   _ELBO_SEEDS.value, _OUT.value)
  command = "python experiments/compression_lossless.py " + " ".join(sys.argv[1:])
  write(result, _OUT.value, command, time.time() - start)


if __name__ == "__main__":
  app.run(main)
