r"""The PyTorch equivalent of vae_jax's MLP VAE training, for benchmarks.

  python experiments/torch_vae.py --hidden=500 --latent_dim=20 --epochs=5

The model, loss and optimizer of `configs/mnist_vae.py` with
`model.hidden=(500,)`, written as a PyTorch user would: an MLP encoder
(784-500, tanh-approximated GELU as `jax.nn.gelu`, linear heads for the
posterior mean and log-variance), the reparameterized sample, an MLP
decoder to Bernoulli logits, the negative ELBO (`binary_cross_entropy_with_
logits` summed over pixels plus the closed-form KL to N(0, I)) averaged over
the batch, and Adam (b1 0.9, b2 0.999, eps 1e-8) with a linear warm-up and
cosine decay of the learning rate per step (`LambdaLR`). The data is held in
memory as tensors (uint8 MNIST), shuffled each epoch with `randperm`, each
batch dynamically binarized (`torch.bernoulli`); no evaluation runs inside
the timed loop. Needs the `bench` extra (torch, the CPU build here).

Prints one JSON line: images/s over the timed steps (after `--warmup_steps`
untimed ones), the final training loss, threads and versions.
"""

import json
import math
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from vae_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_HIDDEN = flags.DEFINE_integer("hidden", 500, "Width of the hidden layer.")
_LATENT = flags.DEFINE_integer("latent_dim", 20, "Latent dimensions.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Images per step.")
_EPOCHS = flags.DEFINE_float("epochs", 5.0, "Epochs to train.")
_LR = flags.DEFINE_float("learning_rate", 5e-3, "Peak learning rate.")
_WARMUP = flags.DEFINE_integer("warmup_lr_steps", 100,
                               "Linear learning-rate warm-up steps.")
_UNTIMED = flags.DEFINE_integer("warmup_steps", 20,
                                "First steps, not timed (allocator warm-up).")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "torch.set_num_threads; 0 keeps PyTorch's default (the "
    "physical cores).")
_NPZ = flags.DEFINE_string(
    "npz", "", "Read MNIST's training images from this npz (key x) instead "
    "of tfds.")


def load_train_images() -> np.ndarray:
  """MNIST's 60,000 training images, `[N, 784]` uint8 (tfds, or --npz)."""
  if _NPZ.value:
    return np.load(_NPZ.value)["x"].reshape(-1, 784)
  # pylint: disable=g-import-not-at-top
  from vae_jax import config_lib
  from vae_jax import tfds_source
  # pylint: enable=g-import-not-at-top
  data = config_lib.base().data  # MNIST from tfds, as vae_jax reads it.
  builder = tfds_source.tfds_builder(data)
  return tfds_source.read_tfds(builder, "train").x.reshape(-1, 784)


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("vae_jax: PyTorch is not installed: install the benchmark extra "
          "with `.venv/bin/pip install -e \".[bench]\"`.", file=sys.stderr)
    sys.exit(2)
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  torch.manual_seed(0)
  hidden, latent = _HIDDEN.value, _LATENT.value

  class VAE(nn.Module):

    def __init__(self):
      super().__init__()
      self.enc = nn.Linear(784, hidden)
      self.mean = nn.Linear(hidden, latent)
      self.log_var = nn.Linear(hidden, latent)
      self.dec = nn.Linear(latent, hidden)
      self.logits = nn.Linear(hidden, 784)

    def forward(self, x):
      h = F.gelu(self.enc(x), approximate="tanh")
      mean, log_var = self.mean(h), self.log_var(h)
      z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
      logits = self.logits(F.gelu(self.dec(z), approximate="tanh"))
      nll = F.binary_cross_entropy_with_logits(
          logits, x, reduction="none").sum(-1)
      kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)
      return (nll + kl).mean()

  images = torch.from_numpy(load_train_images())
  n, b = images.shape[0], _BATCH.value
  per_epoch = n // b
  total = max(1, round(_EPOCHS.value * per_epoch))
  model = VAE()
  opt = torch.optim.Adam(model.parameters(), lr=_LR.value, betas=(0.9, 0.999),
                         eps=1e-8)
  warmup = _WARMUP.value

  def unit_rate(step):  # Linear warm-up, then cosine decay to 1%.
    if step < warmup:
      return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

  sched = torch.optim.lr_scheduler.LambdaLR(opt, unit_rate)
  untimed = min(_UNTIMED.value, total - 1)
  start, perm, loss = None, None, None
  for step in range(total):
    if step == untimed:
      start = time.perf_counter()
    epoch, pos = divmod(step, per_epoch)
    if pos == 0:
      perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
    batch = images[perm[pos * b:(pos + 1) * b]].float().div_(255.0)
    x = torch.bernoulli(batch)
    loss = model(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
  final = float(loss)  # Waits for nothing: CPU ops are synchronous.
  seconds = time.perf_counter() - start
  print(json.dumps({
      "img_per_sec": (total - untimed) * b / seconds,
      "seconds": seconds, "steps": total, "timed_steps": total - untimed,
      "final_loss": final, "threads": torch.get_num_threads(),
      "torch": torch.__version__}))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
