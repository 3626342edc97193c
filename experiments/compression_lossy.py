r"""Lossy compression of 8-bit MNIST: a VAE's quantized latents vs JPEG, WebP.

  python experiments/compression_lossy.py --workdir=workdirs/mnist_gaussian_vae

For a VAE trained on gray (not binarized) MNIST, e.g. `configs/
mnist_gaussian_vae.py`, each test image's posterior mean mu(x) `[Z]` is
quantized to a grid of step Delta, k = round(mu / Delta), and the integers
are entropy-coded with constriction's `QuantizedGaussian` under
  - prior: the VAE's prior N(0, 1) per unit (no side information), or
  - fitted: a factorized Gaussian N(m_d, s_d^2) per unit, fitted to the
    posterior means of the training split (a learned density; its 2 Z
    floats are part of the codec, not of each file);
one stream for the whole test set, decoded back and checked. The decoder's
mean at Delta k, clipped to [0, 1] and rounded to 8 bits, is the
reconstruction. Rate: the coded bits per image; distortion: PSNR (per
image, 10 log10(1 / MSE) on [0, 1] pixels, then averaged) and the squared
error summed over the pixels. JPEG and WebP (Pillow) code the same images
as one mosaic of 32 x 32 tiles (each 28 x 28 image at a tile's corner, so
JPEG's 8 x 8 blocks never straddle two images and the headers are shared),
over their quality settings: matched rates are read off the curves.
Writes compression_lossy.json, .md and .png under --out.
"""

import dataclasses
import io
import json
import math
import os
import platform
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import cli  # pylint: disable=g-import-not-at-top
from vae_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from vae_jax import trained  # pylint: disable=g-import-not-at-top
from vae_jax.errors import UserError  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "A VAE trained on gray (8-bit) images.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 0,
                                   "The first test images coded; 0: all.")
_STEPS = flags.DEFINE_list("steps", ["2", "1", "0.5", "0.25", "0.125",
                                     "0.0625", "0.03125"],
                           "Quantization steps Delta of the latent means.")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "results"),
                           "Where the result files go.")

JPEG_QUALITIES = (1, 5, 10, 20, 30, 50, 70, 90)
WEBP_QUALITIES = (0, 5, 10, 25, 50, 75, 90)
TILE = 32


@dataclasses.dataclass
class Point:
  method: str
  setting: str
  bits_per_image: float
  psnr: float  # dB, mean over images
  sse: float  # squared error summed over pixels ([0, 1] units), mean


def distortion(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Mean PSNR (dB) and mean summed squared error of uint8 images
  `[N, ...]` y against x, on [0, 1] pixels (PSNR floored at 100 dB)."""
  d = (x.astype(np.float64) - y.astype(np.float64)) / 255.0
  sq = np.square(d).reshape(len(x), -1)
  mse = np.maximum(sq.mean(axis=1), 1e-10)
  return float(np.mean(10 * np.log10(1.0 / mse))), float(sq.sum(1).mean())


def to_uint8(x: np.ndarray) -> np.ndarray:
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def code_latents(k: np.ndarray, mean: np.ndarray, std: np.ndarray) -> int:
  """Bits of the integers `k` `[N, Z]` under N(mean, std^2) `[Z]` (in grid
  units) quantized to the integers, coded and decoded by constriction."""
  import constriction  # pylint: disable=g-import-not-at-top
  bound = int(np.abs(k).max()) + 1
  model = constriction.stream.model.QuantizedGaussian(-bound, bound)
  n = len(k)
  means = np.tile(mean, n).astype(np.float64)
  stds = np.tile(np.maximum(std, 1e-3), n).astype(np.float64)
  coder = constriction.stream.stack.AnsCoder()
  coder.encode_reverse(k.reshape(-1).astype(np.int32), model, means, stds)
  bits = coder.num_bits()
  decoded = coder.decode(model, means, stds)
  if not np.array_equal(decoded, k.reshape(-1)):
    raise AssertionError("The latents did not decode exactly.")
  return bits


def mosaic(images: np.ndarray) -> tuple[np.ndarray, int]:
  """`[N, 28, 28]` uint8 -> one image of 32 x 32 tiles, and its columns."""
  n, h, w = images.shape
  cols = int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  tiles = np.zeros((rows * cols, TILE, TILE), np.uint8)
  tiles[:n, :h, :w] = images
  return tiles.reshape(rows, cols, TILE, TILE).transpose(0, 2, 1, 3).reshape(
      rows * TILE, cols * TILE), cols


def unmosaic(image: np.ndarray, cols: int, n: int, h: int, w: int
             ) -> np.ndarray:
  rows = image.shape[0] // TILE
  tiles = image.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3)
  return tiles.reshape(-1, TILE, TILE)[:n, :h, :w]


def image_codec_points(x: np.ndarray) -> list[Point]:
  """JPEG and WebP over their qualities, on one mosaic of the images."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = x[..., 0]
  n, h, w = images.shape
  big, cols = mosaic(images)
  points = []
  for fmt, qualities in (("JPEG", JPEG_QUALITIES), ("WebP", WEBP_QUALITIES)):
    for q in qualities:
      buf = io.BytesIO()
      kwargs = ({"quality": q, "optimize": True} if fmt == "JPEG"
                else {"quality": q, "method": 6})
      Image.fromarray(big).save(buf, "JPEG" if fmt == "JPEG" else "WEBP",
                                **kwargs)
      decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
      y = unmosaic(decoded, cols, n, h, w)
      psnr, sse = distortion(images, y)
      points.append(Point(fmt, f"quality {q}", 8 * len(buf.getvalue()) / n,
                          psnr, sse))
  return points


def measure(workdir: str, num_images: int, steps: list[float]) -> dict:
  m = trained.load(workdir)
  if not m.is_vae:
    raise UserError("Lossy latent coding needs a VAE; this workdir holds an "
                    "autoencoder.")
  if m.data.binarization != "none" or m.data.test_x.dtype != np.uint8:
    raise UserError("This experiment codes 8-bit images: give a VAE trained "
                    "with data.binarization='none' on uint8 images.")
  x = m.data.test_x[:num_images or None]  # [N, 28, 28, 1] uint8
  mu = m.encode(x).mean  # [N, Z]
  # The fitted density: the training split's posterior means, per unit.
  train = input_pipeline.load(m.config.data, train=True).train_shards
  train_x = np.concatenate(train)
  train_mu = np.concatenate([m.encode(train_x[i:i + 5000]).mean
                             for i in range(0, len(train_x), 5000)])
  fitted_mean, fitted_std = train_mu.mean(0), train_mu.std(0)
  points = []
  for delta in steps:
    k = np.round(mu / delta).astype(np.int64)
    y = to_uint8(np.asarray(m.decode(k * delta).mean()))
    psnr, sse = distortion(x, y)
    for name, mean, std in (
        ("VAE latents, prior", np.zeros(mu.shape[1]), np.ones(mu.shape[1])),
        ("VAE latents, fitted density", fitted_mean, fitted_std)):
      bits = code_latents(k, mean / delta, std / delta)
      points.append(Point(name, f"Delta {delta:g}", bits / len(x), psnr,
                          sse))
  y = to_uint8(np.asarray(m.decode(mu).mean()))
  psnr_limit, sse_limit = distortion(x, y)
  points += image_codec_points(x)
  return {"workdir": workdir, "step": m.step, "num_images": len(x),
          "latent_dim": int(mu.shape[1]),
          "unquantized": {"psnr": psnr_limit, "sse": sse_limit},
          "points": [dataclasses.asdict(p) for p in points]}


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
  methods = dict.fromkeys(p["method"] for p in result["points"])
  for method in methods:
    pts = sorted((p for p in result["points"] if p["method"] == method),
                 key=lambda p: p["bits_per_image"])
    ax.plot([p["bits_per_image"] for p in pts], [p["psnr"] for p in pts],
            "o-", label=method, markersize=4)
  ax.axhline(result["unquantized"]["psnr"], ls=":", color="gray",
             label="VAE at the unquantized mean")
  ax.set(xscale="log", xlabel="rate (bits per image)", ylabel="PSNR (dB)",
         title=f"8-bit MNIST test set ({result['num_images']} images)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


def write(result: dict, out: str, command: str, seconds: float) -> None:
  os.makedirs(out, exist_ok=True)
  result = {**result, "command": command, "wall_seconds": seconds,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
  with open(os.path.join(out, "compression_lossy.json"), "w") as f:
    json.dump(result, f, indent=2)
  plot(result, os.path.join(out, "compression_lossy.png"))
  lines = [
      "# Lossy compression of 8-bit MNIST: VAE latents vs JPEG and WebP",
      "",
      f"{result['num_images']} test images, model {result['workdir']} at "
      f"step {result['step']} ({result['latent_dim']} latent units). "
      f"Command: `{command}` ({seconds:.0f} s wall on {result['machine']}).",
      "Rate: bits per image (784 pixels); PSNR: mean over images; squared "
      "error: summed over the pixels of an image ([0, 1] units), mean over "
      "images. JPEG and WebP code one mosaic of all the images.",
      "",
      "| method | setting | bits/image | PSNR (dB) | squared error |",
      "| --- | --- | ---: | ---: | ---: |",
  ]
  lines += [f"| {p['method']} | {p['setting']} | {p['bits_per_image']:.1f} | "
            f"{p['psnr']:.2f} | {p['sse']:.2f} |" for p in result["points"]]
  u = result["unquantized"]
  lines += ["", f"The decoder at the unquantized posterior mean: PSNR "
            f"{u['psnr']:.2f} dB, squared error {u['sse']:.2f}.",
            "", "![rate-distortion](compression_lossy.png)"]
  with open(os.path.join(out, "compression_lossy.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv):
  del argv
  start = time.time()
  result = cli.run(measure, _WORKDIR.value, _NUM_IMAGES.value,
                   [float(s) for s in _STEPS.value])
  command = "python experiments/compression_lossy.py " + " ".join(sys.argv[1:])
  write(result, _OUT.value, command, time.time() - start)
  print(open(os.path.join(_OUT.value, "compression_lossy.md")).read())


if __name__ == "__main__":
  app.run(main)
