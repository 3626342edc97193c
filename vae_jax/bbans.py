"""Lossless bits-back coding with a VAE (BB-ANS), on constriction's ANS.

Townsend, Bird and Barber (2019), "Practical lossless compression with
latent variables using bits back coding", ICLR: a VAE codes an image x in
about -ELBO(x) bits, here with a Bernoulli decoder (binary images) or a
discretized Gaussian one (8-bit images, each pixel's 256 levels coded with
counts summing to 2^24). With an ANS stack
(last in, first out) holding some bits already, one image is pushed by

  1. popping (decoding) a latent z from q(z|x): this takes -log q(z|x)
     bits off the stack (the "bits back");
  2. pushing x with p(x|z): -log p(x|z) bits;
  3. pushing z with the prior p(z): -log p(z) bits;

a net of log q(z|x) - log p(x|z) - log p(z) bits, whose mean over q is
-ELBO(x). Decoding runs the steps backwards and in reverse order: pop z
with p(z), pop x with p(x|z), push z back with q(z|x), which returns the
bits step 1 took. The entropy coder is `constriction.stream.stack.AnsCoder`
(Bamler 2022); only the models fed to it are built here.

Discretization (BB-ANS, section 2.5.1): each latent unit's prior N(0, 1) is
cut into K = 2^latent_bits buckets of equal prior mass 1/K, edges
e_i = Phi^-1(i / K), so the prior is uniform over bucket indices and costs
exactly latent_bits bits per unit; a bucket stands for its median
Phi^-1((i + 1/2) / K), which is what the decoder sees. The posterior is the
mass N(mu, sigma^2) puts on each bucket, quantized to integer counts that sum
to 2^posterior_precision (every bucket at least one count), so coding a
bucket costs -log2(count / 2^posterior_precision) bits exactly.

Batching: images go through the chain in blocks of `block_size`: a block is
one BB-ANS "symbol" whose latent is the block's latents and whose data are
its pixels. Encoding and decoding then run the encoder and the decoder on
the same padded `[block_size, ...]` batches, so both sides compute
bit-identical probabilities (a network's outputs can depend on its batch
shape, and any difference between the two sides would decode garbage).

The chain starts from `initial_words` seeded random 32-bit words (the clean
bits the first block's posterior draws consume); decoding ends with exactly
those words left on the stack, which is checked. Net bits are the
compressed words less these initial ones.

The file layout: `vae_jax.bbans_file`.
"""

import dataclasses
import functools
import hashlib
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import bbans_counts
from vae_jax import bbans_file
from vae_jax import compiler
from vae_jax import losses
from vae_jax import models
from vae_jax.errors import UserError

# The decoders whose pixels can be coded: binary images, 8-bit images.
PIXEL_MODELS = ("bernoulli", "discretized_gaussian")
_INITIAL_SEED = 0x5EED  # The initial words; decoding checks it gets them back.


@dataclasses.dataclass(frozen=True)
class Settings:
  """How latents are discretized and coded (`config.evals.compress`)."""
  latent_bits: int = 8  # log2 of the buckets of equal prior mass per unit.
  posterior_precision: int = 20  # log2 of q's total count per unit.
  block_size: int = 100  # Images per network call and chain step.

  def validate(self) -> None:
    """Raises UserError for settings the coder cannot use."""
    if not 1 <= self.latent_bits <= 12:
      raise UserError(f"compress latent_bits must be in 1..12 (2 to 4096 "
                      f"buckets per latent unit), got {self.latent_bits}.")
    if not self.latent_bits + 2 <= self.posterior_precision <= 24:
      raise UserError(
          "compress posterior_precision must be in latent_bits + 2..24 (q "
          f"needs at least one count per bucket and constriction codes 24 "
          f"bits), got {self.posterior_precision} with latent_bits "
          f"{self.latent_bits}.")
    if self.block_size < 1:
      raise UserError(f"compress block_size must be >= 1, got "
                      f"{self.block_size}.")


@dataclasses.dataclass(frozen=True)
class Stats:
  """What a compression cost, in bits (file sizes in bytes)."""
  num_images: int
  num_dims: int  # D per image
  file_bytes: int  # the whole file: header, words, digest
  payload_bits: int  # 32 x the compressed words
  initial_bits: int  # 32 x the initial words the chain started from
  seconds: float  # coding only (networks and ANS), not I/O

  @property
  def net_bits(self) -> int:
    """Bits the images added to the stack: payload less initial bits."""
    return self.payload_bits - self.initial_bits

  @property
  def net_bits_per_dim(self) -> float:
    return self.net_bits / (self.num_images * self.num_dims)

  @property
  def file_bits_per_dim(self) -> float:
    return 8 * self.file_bytes / (self.num_images * self.num_dims)

  @property
  def images_per_second(self) -> float:
    return self.num_images / max(self.seconds, 1e-9)

  def to_dict(self) -> dict[str, float]:
    return {"num_images": self.num_images, "file_bytes": self.file_bytes,
            "payload_bits": self.payload_bits,
            "initial_bits": self.initial_bits, "net_bits": self.net_bits,
            "net_bits_per_dim": self.net_bits_per_dim,
            "file_bits_per_dim": self.file_bits_per_dim,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second}


def _constriction():
  try:
    import constriction  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("Bits-back coding needs the constriction package: pip "
                    "install 'constriction>=0.4.2,<0.6'.") from None
  return constriction


@dataclasses.dataclass(frozen=True)
class BinaryArray:
  """How a binary array is stored: restored exactly by `restore`."""
  shape: tuple[int, ...]  # as given, e.g. [N, 28, 28] or [N, 28, 28, 1]
  dtype: str  # numpy dtype string, e.g. "|u1"
  one: float  # the value of an "on" pixel: 1, 255 or True

  @classmethod
  def of(cls, x: np.ndarray, where: str) -> "BinaryArray":
    """Describes `x`; UserError unless every value is 0 or one value."""
    values = np.unique(x)
    if x.dtype == np.bool_:
      one = 1.0
    elif set(values.tolist()) <= {0, 1}:
      one = 1.0 if x.dtype != np.uint8 or 1 in values else 255.0
    elif set(values.tolist()) <= {0, 255} and x.dtype == np.uint8:
      one = 255.0
    else:
      shown = ", ".join(f"{v:g}" for v in values[:4])
      raise UserError(
          f"{where} is not binary (values {shown}{', ...' if len(values) > 4 else ''}): "
          "bits-back coding with a Bernoulli VAE takes images of 0 and 1 "
          "(or uint8 0 and 255); binarize them first.")
    return cls(tuple(x.shape), x.dtype.str, one)

  def restore(self, bits: np.ndarray) -> np.ndarray:
    """`bits` (`[N, D]` of 0/1) as the original array."""
    out = bits.reshape(self.shape).astype(np.dtype(self.dtype))
    return out * np.dtype(self.dtype).type(self.one)


class Codec:
  """BB-ANS for one VAE with a Bernoulli decoder (module docstring).

  Build it once per model; `compress` and `decompress` jit the networks for
  `[settings.block_size, *event]` batches on first use.
  """

  def __init__(self, model: models.VAE, params: Any,
               event_shape: tuple[int, ...], settings: Settings):
    """Raises UserError for a model that is not a VAE with a Bernoulli or
    discretized Gaussian decoder."""
    settings.validate()
    if not isinstance(model, models.VAE):
      raise UserError("Bits-back coding needs a VAE (a latent-variable "
                      "model); this workdir holds an autoencoder.")
    if model.decoder.likelihood not in PIXEL_MODELS:
      raise UserError(
          "Bits-back coding needs a distribution over discrete pixels: a "
          "Bernoulli decoder (binary images) or a discretized Gaussian one "
          f"(8-bit images); this model's likelihood is "
          f"{model.decoder.likelihood!r}.")
    self.pixels = model.decoder.likelihood
    self.eight_bit = self.pixels == "discretized_gaussian"
    self.model, self.params, self.settings = model, params, settings
    self.event_shape = tuple(event_shape)
    self.num_dims = math.prod(self.event_shape)
    self.latent_dim = model.encoder.latent_dim
    self.params_hash = bbans_file.params_hash(params, self.event_shape)
    self._centres = bbans_counts.bucket_centres(settings.latent_bits)
    self._encode = compiler.jit_at_xla_defaults(functools.partial(
        _encode, model, latent_bits=settings.latent_bits,
        precision=settings.posterior_precision))
    self._decode = compiler.jit_at_xla_defaults(functools.partial(
        _decode, model, pixels=self.pixels))
    cx = _constriction()
    self._cx = cx
    self._categorical = cx.stream.model.Categorical(perfect=False)
    self._bernoulli = cx.stream.model.Bernoulli(perfect=False)
    self._uniform = cx.stream.model.Uniform(2**settings.latent_bits)

  def _compile(self) -> None:
    """Compiles both networks (before a timer starts)."""
    b = self.settings.block_size
    jax.block_until_ready(self._encode(
        self.params, np.zeros((b, *self.event_shape), np.float32)))
    jax.block_until_ready(self._decode(
        self.params, np.zeros((b, self.latent_dim), np.float32)))

  # -- the networks, on padded blocks ---------------------------------------

  def _pad(self, a: np.ndarray) -> np.ndarray:
    out = np.zeros((self.settings.block_size, *a.shape[1:]), np.float32)
    out[:len(a)] = a
    return out

  def _posterior(self, bits: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q(bucket|x) for a block of `[n, D]` bits: counts `[n Z, K]` float64
    (constriction's Categorical), and the draw's cost in bits, mean and
    variance `[n]` (`bbans_counts.draw_cost`)."""
    x = self._pad(bits.reshape(-1, *self.event_shape))
    if self.eight_bit:
      x /= 255.0  # As the run feeds uint8 pixels (input_pipeline.to_float).
    counts, mean, var = jax.device_get(self._encode(self.params, x))
    n = len(bits)
    return (counts[:n].reshape(-1, counts.shape[-1]).astype(np.float64),
            mean[:n].astype(np.float64), var[:n].astype(np.float64))

  def _pixel_probs(self, buckets: np.ndarray) -> np.ndarray:
    """p(x|z) for bucket indices `[n Z]`: p(x_d = 1 | z) `[n D]` float64
    (Bernoulli), or counts `[n, D, 256]` of the levels (8-bit)."""
    z = self._centres[buckets].reshape(-1, self.latent_dim)
    out = np.asarray(jax.device_get(self._decode(self.params, self._pad(z))))
    if self.eight_bit:
      return out[:len(z)]
    logits = out[:len(z)].reshape(-1).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-logits))

  def _push_pixels(self, coder, block: np.ndarray, probs: np.ndarray) -> None:
    """Pushes a block's pixels `[n, D]` int32 with `_pixel_probs`."""
    if not self.eight_bit:
      coder.encode_reverse(block.reshape(-1), self._bernoulli, probs)
      return
    for image, counts in zip(block[::-1], probs[::-1]):  # Pops in order.
      coder.encode_reverse(image, self._categorical,
                           counts.astype(np.float64))

  def _pop_pixels(self, coder, probs: np.ndarray, n: int) -> np.ndarray:
    """Pops a block's pixels `[n, D]` int32 (`_push_pixels` backwards)."""
    if not self.eight_bit:
      return coder.decode(self._bernoulli, probs).reshape(n, self.num_dims)
    return np.stack([coder.decode(self._categorical, c.astype(np.float64))
                     for c in probs])

  # -- the chain --------------------------------------------------------------

  def _initial_words(self, n: int) -> np.ndarray:
    words = np.random.default_rng(_INITIAL_SEED).integers(
        0, 2**32, n, dtype=np.uint32)
    words[-1] |= 1  # constriction refuses a zero top word of an unsealed stack.
    return words

  def _chain(self, bits: np.ndarray, num_initial_words: int
             ) -> tuple[Any, list[int]] | None:
    """Pushes every image onto a coder that starts from the initial words.

    Block sizes ramp up: each block holds as many images (at most
    `block_size`) as the stack can pay the posterior draws of, by q's
    entropy plus four standard deviations, so that every draw takes clean
    or compressed bits and the initial words can be few (about one image's
    draw rather than one block's).

    Returns:
      The coder and the block sizes, or None when the initial words were
      too few for the first image.
    """
    coder = self._cx.stream.stack.AnsCoder(
        self._initial_words(num_initial_words))
    sizes, start, n = [], 0, len(bits)
    while start < n:
      size = min(self.settings.block_size, n - start)
      counts, mean, var = self._posterior(bits[start:start + size])
      while True:
        budget = coder.num_valid_bits() - 64
        fits = int(np.sum(np.cumsum(mean) + 4 * np.sqrt(np.cumsum(var))
                          <= budget))
        if fits >= size:
          break
        if fits == 0:
          return None
        size = fits
        counts, mean, var = self._posterior(bits[start:start + size])
      buckets = coder.decode(self._categorical, counts)
      if coder.num_valid_bits() < 32:  # A draw four sigmas out: retry.
        return None
      block = bits[start:start + size]
      self._push_pixels(coder, block, self._pixel_probs(buckets))
      coder.encode_reverse(buckets, self._uniform)
      sizes.append(size)
      start += size
    return coder, sizes

  def compress(self, x: np.ndarray, where: str = "the input"
               ) -> tuple[bytes, Stats]:
    """Codes images into a file's bytes.

    Args:
      x: `[N, *event]` (or `[N, H, W]` for one channel): for a Bernoulli
        model 0/1 values of any dtype (uint8 0/255 too), for a discretized
        Gaussian one uint8 pixels; restored exactly, dtype and shape
        included.
      where: names the input in errors.

    Returns:
      The file's bytes and what they cost (`Stats`).

    Raises:
      UserError: images of another shape than the model's, not binary (a
        Bernoulli model) or not uint8 (a discretized Gaussian one).
    """
    x = np.asarray(x)
    if not self.eight_bit:
      layout = BinaryArray.of(x, where)
    elif x.dtype == np.uint8:
      layout = BinaryArray(tuple(x.shape), x.dtype.str, 1.0)
    else:
      raise UserError(f"{where} holds {x.dtype} values; this model codes "
                      "8-bit images: give uint8 pixels.")
    if (x.ndim < 2 or math.prod(x.shape[1:]) != self.num_dims
        or tuple(x.shape[1:]) not in (self.event_shape,
                                      self.event_shape[:-1])):
      raise UserError(f"{where} holds images {list(x.shape[1:])}, but the "
                      f"model codes {list(self.event_shape)}.")
    if len(x) == 0:
      raise UserError(f"{where} holds no images.")
    bits = (x if self.eight_bit else x != 0).reshape(
        len(x), self.num_dims).astype(np.int32)
    self._compile()
    start = time.perf_counter()
    _, mean, var = self._posterior(bits[:1])
    num_initial = int(math.ceil((mean[0] + 4 * math.sqrt(var[0]) + 96) / 32))
    while (chain := self._chain(bits, num_initial)) is None:
      num_initial *= 2
    coder, sizes = chain
    words = np.asarray(coder.get_compressed(), np.uint32)
    seconds = time.perf_counter() - start
    header = {
        "format": "vae_jax BB-ANS", "version": bbans_file.FORMAT_VERSION,
        "params_sha256": self.params_hash,
        "event_shape": list(self.event_shape), "latent_dim": self.latent_dim,
        "array": {"shape": list(layout.shape), "dtype": layout.dtype,
                  "one": layout.one},
        "settings": dataclasses.asdict(self.settings),
        "initial_words": num_initial, "num_words": len(words),
        "block_sizes": sizes,
        "pixels": self.pixels,
        "images_sha256": hashlib.sha256(bits.astype(np.uint8)).hexdigest(),
    }
    data = bbans_file.pack(header, words)
    return data, Stats(len(x), self.num_dims, len(data), 32 * len(words),
                       32 * num_initial, seconds)

  def decompress(self, data: bytes, where: str = "the input"
                 ) -> tuple[np.ndarray, Stats]:
    """The images of a file's bytes, exactly as compressed.

    Raises:
      UserError: not a vae_jax BB-ANS file, a corrupted one, one written by
        another model (parameter hash), or one whose images do not decode
        to their checksum (another platform's arithmetic).
    """
    header, words = bbans_file.unpack(data, where)
    if header["params_sha256"] != self.params_hash:
      raise UserError(
          f"{where} was compressed with another model (parameters "
          f"{header['params_sha256'][:12]}...), not this workdir's "
          f"({self.params_hash[:12]}...): decompress it with the workdir "
          "that compressed it.")
    settings = Settings(**header["settings"])
    if settings != self.settings:  # Decode with the file's settings.
      return Codec(self.model, self.params, self.event_shape,
                   settings).decompress(data, where)
    layout = BinaryArray(tuple(header["array"]["shape"]),
                         header["array"]["dtype"], header["array"]["one"])
    n = layout.shape[0]
    self._compile()
    start = time.perf_counter()
    coder = self._cx.stream.stack.AnsCoder(words)
    blocks = []
    for size in reversed(header["block_sizes"]):
      buckets = coder.decode(self._uniform, size * self.latent_dim)
      block = self._pop_pixels(coder, self._pixel_probs(buckets), size)
      coder.encode_reverse(buckets, self._categorical,
                           self._posterior(block)[0])
      blocks.append(block)
    seconds = time.perf_counter() - start
    bits = np.concatenate(blocks[::-1])
    initial = self._initial_words(header["initial_words"])
    if (not np.array_equal(coder.get_compressed(), initial)
        or hashlib.sha256(bits.astype(np.uint8)).hexdigest()
        != header["images_sha256"]):
      raise UserError(
          f"{where} did not decode to the images it was made from: it was "
          "compressed on a machine whose arithmetic differs from this one's "
          "(another device or library version), or by another vae_jax.")
    stats = Stats(n, self.num_dims, len(data), 32 * len(words),
                  32 * len(initial), seconds)
    return layout.restore(bits), stats


def _encode(model, params, x, *, latent_bits, precision):
  q = model.apply(params, x, method="encode")
  counts = bbans_counts.posterior_counts(q.mean, q.log_var, latent_bits,
                                        precision)
  return (counts, *bbans_counts.draw_cost(counts, precision))


def _decode(model, params, z, *, pixels):
  """Bernoulli: the logits `[B, *event]`; 8-bit: counts `[B, D, 256]` of
  each pixel's levels under the discretized Gaussian, summing to 2^24
  (constriction's precision)."""
  likelihood = model.apply(params, z, method="decode")
  if pixels == "bernoulli":
    return likelihood.loc
  b = z.shape[0]
  loc = likelihood.loc.reshape(b, -1, 1)
  log_scale = jnp.broadcast_to(likelihood.log_scale,
                               likelihood.loc.shape).reshape(b, -1, 1)
  levels = jnp.arange(256, dtype=jnp.float32) / 255.0
  log_p = losses.discretized_gaussian_log_prob(levels, loc, log_scale, 0)
  return bbans_counts.quantize(jnp.exp(log_p), 24)
