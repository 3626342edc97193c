"""The config schema: every field of every section, defaults, validation.

A config file builds on `base()` and changes what its experiment needs:

    from vae_jax import config_lib

    def get_config(arg=None):
      arg = config_lib.parse_arg(arg, runlocal=False)
      config = config_lib.base()
      config.model.latent_dim = 10
      if arg.runlocal:
        config_lib.runlocal(config)
      return config

`base()` defines every field, so an override of a field that does not exist
is refused by `config_flags` (the config is locked), and a run's saved
`config.json` has every field. `validate(config)` runs once, at the entry of
a run (`train.train_group`, `train.evaluate`), before any data is loaded.
"""

import importlib.util
import json
import math
import os
import types
from typing import Any

import jax
import ml_collections

from vae_jax.errors import UserError

# Fields that hold tuples: JSON turns them into lists.
_TUPLE_FIELDS = ("model.hidden", "model.conv_channels")


def base(kind: str = "vae") -> ml_collections.ConfigDict:
  """Every field of every section, at the default run's values.

  Args:
    kind: "vae" (the default MLP VAE on dynamically binarized MNIST) or "ae"
      (the default autoencoder: MLP 784-500-32 on grayscale MNIST, objective
      `ae`, 20 epochs, no NLL).

  Returns:
    A ConfigDict with sections seed, data, model, objective, optimizer,
    training, eval, evals and sweep.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # tfds | npz | images | csv | sklearn (vae_jax/sources.py, tfds_source.py).
  c.data.source = "tfds"
  c.data.name = "mnist"  # tfds: a dataset; sklearn: digits | breast_cancer
  c.data.path = ""  # npz, images, csv: the file or folder.
  # npz, images, csv: the test split's file or folder; empty: a seeded
  # held-out fraction of data.path (sklearn: always held out).
  c.data.test_path = ""
  c.data.test_fraction = 0.2
  c.data.split_seed = 0  # The held-out splits.
  # A seeded fraction of the training split (all classes, before
  # train_classes) held out from training as the validation split: the
  # anomaly evaluator's threshold. 0: none.
  c.data.validation_fraction = 0.0
  c.data.label_column = ""  # csv: the column of labels, if any.
  # Comma-separated class names (tfds/sklearn names, folder names, label
  # values) a split is restricted to, e.g. "3" or "0,6"; empty: all.
  c.data.train_classes = ""
  c.data.test_classes = ""
  c.data.standardize = True  # Tables: per feature, training statistics.
  c.data.data_dir = ""  # Empty: $TFDS_DATA_DIR, else TFDS's default.
  c.data.download = True  # Download with TFDS if not prepared.
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.binarization = "dynamic"  # dynamic | static | none
  c.data.binarization_seed = 0  # The fixed test-set binarization.
  # Data order and dynamic binarization noise; shared within a sweep group.
  c.data.shuffle_seed = 0
  c.data.num_shards = 1  # Train-set shards; a multiple of the hosts.

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp_vae"  # mlp_vae | conv_vae | mlp_ae | conv_ae
  c.model.hidden = (500, 500)  # Encoder widths; the decoder mirrors them.
  c.model.conv_channels = (32, 64)  # conv_*: stride-2 4x4 conv layers.
  c.model.latent_dim = 50
  c.model.activation = "gelu"
  c.model.code_activation = "none"  # Autoencoders: none | sigmoid | relu
  # auto: bernoulli for images, gaussian with a learned per-feature std
  # (learn_scale per_pixel) for tables. Or bernoulli | gaussian |
  # discretized_gaussian (uint8 images: 256 levels).
  c.model.likelihood = "auto"
  c.model.gaussian_scale = 1.0  # Gaussian std (initial, if learned).
  c.model.learn_scale = "none"  # Gaussian: none | global | per_pixel
  c.model.min_scale = 0.01  # Floor of a learned Gaussian std.

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "elbo"  # elbo | iwae (VAEs); ae (autoencoders)
  c.objective.num_samples = 1  # Latent samples per example (iwae: k).
  c.objective.beta = 1.0  # elbo: KL weight.
  c.objective.kl_warmup_steps = 0  # elbo: KL weight ramps 0 -> beta.
  c.objective.free_bits = 0.0  # elbo: KL floor per latent unit, nats.
  c.objective.corruption = "none"  # ae: none | gaussian | masking | salt_and_pepper
  c.objective.noise_level = 0.0  # ae: gaussian sigma, or the corrupted rate.
  c.objective.l1_weight = 0.0  # ae: weight of sum_j |h_j| on the code.
  c.objective.sparsity_weight = 0.0  # ae: weight of sum_j KL(rho || rho_hat_j).
  c.objective.sparsity_target = 0.05  # ae: rho, for sigmoid codes.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # adam | adamw | sgd
  c.optimizer.learning_rate = 1e-3  # Peak.
  c.optimizer.schedule = "cosine"  # constant | cosine
  c.optimizer.warmup_steps = 500
  c.optimizer.end_learning_rate_fraction = 0.01
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # adamw only.
  c.optimizer.momentum = 0.9  # sgd only.
  c.optimizer.nesterov = False  # sgd only.
  c.optimizer.grad_clip_norm = 0.0  # 0: no clipping.

  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 128  # Global, over all devices and hosts.
  c.training.num_epochs = 800.0
  # > 0: the number of steps, whatever the data size (models of a group
  # that train on their own classes need the same number); 0: num_epochs.
  c.training.num_steps = 0
  c.training.steps_per_call = 50  # Steps fused into one device call.
  c.training.model_axis_size = 1  # Devices that split a sweep group.
  c.training.log_every_steps = 1000
  c.training.checkpoint_every_steps = 2000
  c.training.checkpoints_to_keep = 2

  # What every evaluator shares.
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500  # Test examples per device call, all devices.

  # One entry per evaluator (`vae_jax/evaluators/`), run every `every_steps`
  # steps and at the last step (0: the last step only), and by --mode=eval.
  c.evals = ml_collections.ConfigDict()
  c.evals.elbo = ml_collections.ConfigDict(
      {"enabled": True, "every_steps": 5000})
  c.evals.images = ml_collections.ConfigDict(
      {"enabled": True, "every_steps": 5000, "num_images": 64})
  c.evals.nll = ml_collections.ConfigDict({
      "enabled": True, "every_steps": 0,
      "num_samples": 5000,  # K importance samples per test example.
      # Samples scored at once: memory ~ chunk * eval.batch_size outputs.
      "chunk_size": 100,
  })
  # Anomaly detection (vae_jax/evaluators/anomaly.py): per-example scores,
  # AUROC, AUPRC and FPR at 95% TPR on the test set.
  c.evals.anomaly = ml_collections.ConfigDict({
      "enabled": False, "every_steps": 0,
      # Comma-separated classes that are normal; empty: data.train_classes.
      "normal_classes": "",
      "num_samples": 100,  # VAEs: k of the nelbo and nll scores.
      "chunk_size": 100,
      # The threshold's false-positive rate on the validation split's normal
      # examples (data.validation_fraction > 0).
      "target_fpr": 0.05,
  })

  # Lossless bits-back coding (vae_jax/bbans.py, vae_jax/compress.py) of the
  # test set: net bits/dim, initial bits, images/s. Its settings are also
  # what `python -m vae_jax.compress` uses.
  c.evals.compress = ml_collections.ConfigDict({
      "enabled": False, "every_steps": 0,
      "latent_bits": 8,  # 2^latent_bits buckets of equal prior mass per unit.
      "posterior_precision": 20,  # q(bucket|x) in counts summing to 2^this.
      "block_size": 100,  # Images per network call and chain step.
      "num_examples": 0,  # The first test examples coded; 0: all.
  })

  # Latent maps (vae_jax/evaluators/latent_maps.py): scatter of the test
  # codes by label, decoded manifold, traversals, interpolations, and the
  # scatter across training. Images only.
  c.evals.latent_maps = ml_collections.ConfigDict({
      "enabled": True, "every_steps": 5000,
      "projection": "pca",  # pca | tsne: a latent of > 2 dims to 2-D.
      "num_points": 5000,  # The first test examples, in the scatters.
      "grid_size": 15,  # The manifold: grid_size x grid_size decodings.
      "num_steps": 11,  # Traversal and interpolation columns.
      "traversal_range": 3.0,  # VAE traversals over [-r, r].
      "max_units": 10,  # Traversal rows: the active units by KL.
      "num_pairs": 4,  # Interpolated pairs of test examples.
      "max_panels": 10,  # The scatter across training: panels shown.
  })

  # AE vs PCA (vae_jax/evaluators/ae_pca.py): squared error per image and
  # PSNR of the model and of PCA at its code size, on the test set. On for
  # autoencoders.
  c.evals.ae_pca = ml_collections.ConfigDict(
      {"enabled": False, "every_steps": 0})

  c.sweep = ml_collections.ConfigDict()
  c.sweep.max_group_size = 8  # Models per compiled program.

  if kind == "ae":
    c.data.binarization = "none"
    c.model.name = "mlp_ae"
    c.model.hidden = (500,)
    c.model.latent_dim = 32
    c.objective.name = "ae"
    c.optimizer.warmup_steps = 100
    c.training.num_epochs = 20.0
    c.evals.elbo.every_steps = 2000
    c.evals.images.every_steps = 2000
    c.evals.latent_maps.every_steps = 2000
    c.evals.nll.enabled = False  # Autoencoders have no likelihood of x.
    c.evals.ae_pca.enabled = True
  elif kind != "vae":
    raise ValueError(f"kind must be 'vae' or 'ae', got {kind!r}.")
  return c


def runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a run to a smoke test: ~90 steps through every code path.

  Config files call it last, after their own settings.
  """
  config.training.num_epochs = 0.2
  if config.training.num_steps:
    config.training.num_steps = min(config.training.num_steps, 60)
  config.training.steps_per_call = 10
  config.training.log_every_steps = 20
  config.training.checkpoint_every_steps = 50
  config.optimizer.warmup_steps = 10
  for name in ("elbo", "images", "latent_maps"):
    config.evals[name].every_steps = 50
  config.evals.nll.num_samples = min(config.evals.nll.num_samples, 100)
  config.evals.anomaly.num_samples = min(config.evals.anomaly.num_samples, 10)


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses a config file's argument, `path.py:runlocal,latent=8`.

  Args:
    arg: comma-separated `name` (sets a bool to True) or `name=value`
      entries; None or empty for none.
    **spec: the names the config knows, with their defaults; a value is
      converted to its default's type.

  Returns:
    A ConfigDict of every name in `spec`.

  Raises:
    UserError: for a name the config does not know, or a bad value.
  """
  out = ml_collections.ConfigDict(spec)
  for item in filter(None, (arg or "").split(",")):
    name, _, value = item.partition("=")
    if name not in spec:
      raise UserError(f"Unknown config argument {name!r}; this config knows "
                      f"{', '.join(spec) or 'none'}.")
    kind = type(spec[name])
    if kind is bool:
      out[name] = value.lower() in ("", "1", "true", "yes")
    else:
      try:
        out[name] = kind(value)
      except ValueError:
        raise UserError(f"Config argument {name}={value!r} is not a "
                        f"{kind.__name__}.") from None
  return out


# ----------------------------------------------------------------------------
# Validation: once per run, before any data.


# The domain of every numeric field, by its name (the last part of its dotted
# name, so an evaluator's `num_samples` and the objective's share one), as
# (test, what the test says). Checked for every field of a config, enabled
# evaluators or not, before anything else.
_POSITIVE_INT = (lambda v: v >= 1, "a positive integer")
_COUNT = (lambda v: v >= 0, "an integer >= 0")
_POSITIVE = (lambda v: v > 0, "positive")
_NON_NEGATIVE = (lambda v: v >= 0, "non-negative")
_OPEN_UNIT = (lambda v: 0 < v < 1, "in (0, 1)")
_HALF_OPEN_UNIT = (lambda v: 0 <= v < 1, "in [0, 1)")
DOMAINS = {
    **dict.fromkeys(("batch_size", "num_samples", "chunk_size", "num_images",
                     "max_group_size", "latent_dim", "num_shards",
                     "steps_per_call", "checkpoints_to_keep",
                     "model_axis_size"), _POSITIVE_INT),
    **dict.fromkeys(("seed", "split_seed", "shuffle_seed", "binarization_seed",
                     "every_steps", "warmup_steps", "kl_warmup_steps",
                     "num_steps", "log_every_steps", "checkpoint_every_steps"),
                    _COUNT),
    **dict.fromkeys(("learning_rate", "eps", "gaussian_scale", "min_scale",
                     "num_epochs"), _POSITIVE),
    **dict.fromkeys(("beta", "free_bits", "l1_weight", "sparsity_weight",
                     "noise_level", "weight_decay", "grad_clip_norm"),
                    _NON_NEGATIVE),
    **dict.fromkeys(("sparsity_target", "target_fpr", "test_fraction"),
                    _OPEN_UNIT),
    **dict.fromkeys(("validation_fraction", "b1", "b2", "momentum"),
                    _HALF_OPEN_UNIT),
    "end_learning_rate_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def check_domains(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for the first numeric field outside its `DOMAINS`
  entry, or not finite."""
  for name, value in flatten(config).items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if not math.isfinite(value):
      raise UserError(f"{name} must be a finite number, got {value}.")
    test, what = DOMAINS.get(name.rsplit(".", 1)[-1], (None, None))
    if test is not None and not test(value):
      raise UserError(f"{name} must be {what}, got {value}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Every check that needs no data; raises UserError on the first problem.

  Covers every field's domain (`DOMAINS`), every section (each module checks
  its own) and what depends on the devices: the global batches must split
  over the data axis of the mesh.
  """
  # pylint: disable=g-import-not-at-top
  from vae_jax import evaluators
  from vae_jax import input_pipeline
  from vae_jax import models
  from vae_jax import objectives
  from vae_jax import optim
  # pylint: enable=g-import-not-at-top
  check_domains(config)
  t = config.training
  for name in ("batch_size", "steps_per_call", "checkpoints_to_keep"):
    if t[name] < 1:
      raise UserError(f"training.{name} must be a positive integer, got "
                      f"{t[name]}.")
  if t.num_steps < 0:
    raise UserError(f"training.num_steps must be >= 0 (0: from num_epochs), "
                    f"got {t.num_steps}.")
  if t.num_epochs <= 0:
    raise UserError(f"training.num_epochs must be positive, got "
                    f"{t.num_epochs}.")
  if config.eval.batch_size < 1:
    raise UserError(f"eval.batch_size must be a positive integer, got "
                    f"{config.eval.batch_size}.")
  if t.model_axis_size < 1 or jax.device_count() % t.model_axis_size:
    raise UserError(f"training.model_axis_size={t.model_axis_size} must "
                    f"divide the {jax.device_count()} devices.")
  n = jax.device_count() // t.model_axis_size
  where = f"the {n} devices" + (" of the data axis"
                                if t.model_axis_size > 1 else "")
  # (Evaluation batches are padded to the devices: `evaluators.TestSet`.)
  if t.batch_size % n:
    raise UserError(f"training.batch_size={t.batch_size} does not divide "
                    f"across {where}; use a multiple of {n}.")
  input_pipeline.validate_config(config.data)
  if t.batch_size % config.data.num_shards:
    raise UserError(f"training.batch_size={t.batch_size} does not divide "
                    f"among data.num_shards={config.data.num_shards} shards.")
  models.validate_config(config.model)
  objectives.validate_config(config.objective, config.model)
  optim.validate_config(config.optimizer)
  evaluators.validate_config(config)
  if config.sweep.max_group_size < 1:
    raise UserError("sweep.max_group_size must be >= 1, got "
                    f"{config.sweep.max_group_size}.")


# ----------------------------------------------------------------------------
# Flat views, JSON, and config files outside the command line.


def flatten(config: ml_collections.ConfigDict | dict,
            prefix: str = "") -> dict[str, Any]:
  """`{"a.b.c": value}` of a nested config; tuples as lists (as in JSON)."""
  out = {}
  items = (config.items() if isinstance(config, dict)
           else config.to_dict().items())
  for k, v in items:
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def differences(a, b, ignore: tuple[str, ...] = ()) -> list[str]:
  """Sorted dotted names of the fields that differ, less those in `ignore`.

  A name in `ignore` ending in "." ignores a whole section.
  """
  fa, fb = flatten(a), flatten(b)
  return sorted(k for k in set(fa) | set(fb)
                if fa.get(k) != fb.get(k) and not k.startswith(ignore))


def from_json(text: str) -> ml_collections.ConfigDict:
  """A config from its JSON (`config.json`), tuples restored."""
  d = json.loads(text)
  for name in _TUPLE_FIELDS:  # Before the ConfigDict: it keeps a list a list.
    section, field = name.split(".")
    if field in d.get(section, {}):
      d[section][field] = tuple(d[section][field])
  return ml_collections.ConfigDict(d)


def load_module(path: str) -> types.ModuleType:
  """Imports a config file such as `configs/mnist_vae.py` as a module."""
  if not os.path.isfile(path):
    raise UserError(f"Config file {path} does not exist.")
  name = "vae_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(path: str, arg: str | None = None,
               overrides: dict[str, Any] | None = None
               ) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file at `path`, with dotted-field overrides."""
  config = load_module(path).get_config(arg)
  for key, value in (overrides or {}).items():
    set_field(config, key, value)
  return config


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets `a.b.c` in `config`; raises UserError if the field does not exist."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node:
      raise UserError(f"Config has no field {key!r}.")
    node = node[p]
  if leaf not in node:
    raise UserError(f"Config has no field {key!r}.")
  with node.unlocked():
    try:
      node[leaf] = value
    except TypeError:
      raise UserError(f"Config field {key} holds a "
                      f"{type(node[leaf]).__name__}, not {value!r}.") from None
