r"""MLP VAE on dynamically binarized MNIST: the default vae_jax run.

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
  config.data.shuffle_seed = 0  # Data order; shared within a sweep group.
  config.data.num_shards = 1  # Train-set shards; a multiple of the hosts.

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp_vae"
  config.model.hidden = (500,)  # Encoder widths; the decoder mirrors them.
  config.model.latent_dim = 20
  config.model.activation = "gelu"
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian
  config.model.gaussian_scale = 1.0  # Fixed std of a gaussian likelihood.

  config.objective = ml_collections.ConfigDict()
  config.objective.name = "elbo"
  config.objective.beta = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # adam | adamw | sgd
  config.optimizer.learning_rate = 5e-3  # Peak.
  config.optimizer.schedule = "cosine"  # constant | cosine
  config.optimizer.warmup_steps = 100
  config.optimizer.end_learning_rate_fraction = 0.05
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0  # adamw only.
  config.optimizer.momentum = 0.9  # sgd only.
  config.optimizer.nesterov = False  # sgd only.
  config.optimizer.grad_clip_norm = 0.0  # 0: no clipping.

  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 128  # Global, over all devices and hosts.
  config.training.num_epochs = 10.0
  config.training.steps_per_call = 50  # Steps fused into one device call.
  config.training.model_axis_size = 1  # Devices that split a sweep group.
  config.training.log_every_steps = 200
  config.training.checkpoint_every_steps = 1000
  config.training.checkpoints_to_keep = 2

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500
  config.eval.every_steps = 1000
  config.eval.num_images = 64  # Reconstructions and samples in the grids.
  # Importance-sampled NLL after training (eval.json); 0 skips it.
  config.eval.num_importance_samples = 100
  config.eval.importance_chunk_size = 100

  if arg == "runlocal":
    config.training.num_epochs = 0.2
    config.training.log_every_steps = 20
    config.training.checkpoint_every_steps = 50
    config.eval.every_steps = 50
  return config
