r"""MLP VAE on dynamically binarized MNIST: the default vae_jax run.

784-500-500-50 with gelu units (the decoder mirrors the encoder), Adam with
a cosine decay for 800 epochs: about 40 minutes on a 2-core CPU, then the
importance-sampled test NLL with k = 5000 (eval.json; see the README for
the measured numbers and times).

Train (resumes if the workdir holds a checkpoint):

  python -m vae_jax.main --config=configs/mnist_vae.py --workdir=workdirs/mnist_vae

A smoke-test size run: `--config=configs/mnist_vae.py:runlocal`.
Override any field: `--config.model.latent_dim=50 --config.training.num_epochs=100`.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"
  config.data.data_dir = ""  # Empty: $TFDS_DATA_DIR, else TFDS's default.
  config.data.download = True  # Download with TFDS if not prepared.
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.binarization = "dynamic"  # dynamic | static | none
  config.data.binarization_seed = 0  # The fixed test-set binarization.
  # Data order and dynamic binarization noise; shared within a sweep group.
  config.data.shuffle_seed = 0
  config.data.num_shards = 1  # Train-set shards; a multiple of the hosts.

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp_vae"  # mlp_vae | conv_vae | mlp_ae | conv_ae
  config.model.hidden = (500, 500)  # Encoder widths; the decoder mirrors them.
  config.model.conv_channels = (32, 64)  # conv_*: stride-2 4x4 conv layers.
  config.model.latent_dim = 50
  config.model.activation = "gelu"
  config.model.code_activation = "none"  # Autoencoders: none | sigmoid | relu
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian
  config.model.gaussian_scale = 1.0  # Gaussian std (initial, if learned).
  config.model.learn_scale = "none"  # Gaussian: none | global | per_pixel
  config.model.min_scale = 0.01  # Floor of a learned Gaussian std.

  config.objective = ml_collections.ConfigDict()
  config.objective.name = "elbo"  # elbo | iwae (VAEs); ae (autoencoders)
  config.objective.beta = 1.0
  config.objective.kl_warmup_steps = 0  # KL weight ramps 0 -> beta.
  config.objective.free_bits = 0.0  # KL floor per latent unit, nats.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # adam | adamw | sgd
  config.optimizer.learning_rate = 1e-3  # Peak.
  config.optimizer.schedule = "cosine"  # constant | cosine
  config.optimizer.warmup_steps = 500
  config.optimizer.end_learning_rate_fraction = 0.01
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0  # adamw only.
  config.optimizer.momentum = 0.9  # sgd only.
  config.optimizer.nesterov = False  # sgd only.
  config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.

  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 128  # Global, over all devices and hosts.
  config.training.num_epochs = 800.0
  config.training.steps_per_call = 50  # Steps fused into one device call.
  config.training.model_axis_size = 1  # Devices that split a sweep group.
  config.training.log_every_steps = 1000
  config.training.checkpoint_every_steps = 2000
  config.training.checkpoints_to_keep = 2

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500
  config.eval.every_steps = 5000
  config.eval.num_images = 64  # Reconstructions and samples in the grids.
  # Importance-sampled NLL after training (eval.json); 0 skips it.
  config.eval.num_importance_samples = 5000
  config.eval.importance_chunk_size = 100

  if arg == "runlocal":
    runlocal(config)
  return config


def runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a run to a smoke test: ~90 steps through every code path.

  Configs built on this one call it last, after their own settings.
  """
  config.training.num_epochs = 0.2
  config.training.steps_per_call = 10
  config.training.log_every_steps = 20
  config.training.checkpoint_every_steps = 50
  config.optimizer.warmup_steps = 10
  config.eval.every_steps = 50
  config.eval.num_importance_samples = min(
      config.eval.num_importance_samples, 100)
