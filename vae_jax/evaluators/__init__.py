"""Evaluators: every use of a trained model, one small class per file.

`config.evals.<name>` configures the evaluator registered as `name`:
`enabled`, `every_steps` (0: the last step only) and its own fields. The
train loop runs each enabled evaluator at its steps and at the last step,
`--mode=eval` and `trained.TrainedModel.evaluate` run them once; all call
the same objects. See the README, "Adding an evaluator".
"""

from absl import logging
import ml_collections

from vae_jax.errors import UserError
from vae_jax.evaluators import ae_pca
from vae_jax.evaluators import anomaly
from vae_jax.evaluators import common
from vae_jax.evaluators import compress
from vae_jax.evaluators import elbo
from vae_jax.evaluators import images
from vae_jax.evaluators import latent_maps
from vae_jax.evaluators import nll

Context = common.Context
Output = common.Output

# name -> class with __init__(entry, ctx), validate(entry, config),
# compile(state) and run(state) -> [Output per model], and optionally
# applies(ctx) -> bool (default True: whether it has anything to say about
# this data).
REGISTRY = {
    "elbo": elbo.Evaluator,
    "nll": nll.Evaluator,
    "images": images.Evaluator,
    "anomaly": anomaly.Evaluator,
    "compress": compress.Evaluator,
    "latent_maps": latent_maps.Evaluator,
    "ae_pca": ae_pca.Evaluator,
}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every `config.evals` entry; raises UserError."""
  for name, entry in config.evals.items():
    if name not in REGISTRY:
      raise UserError(f"Unknown evaluator evals.{name}; known: "
                      f"{', '.join(REGISTRY)}.")
    if entry.every_steps < 0:
      raise UserError(f"evals.{name}.every_steps must be >= 0 (0: the last "
                      f"step only), got {entry.every_steps}.")
    if entry.enabled:
      REGISTRY[name].validate(entry, config)


def create(ctx: Context) -> dict:
  """The enabled evaluators of `ctx.config` that apply to its data, by name,
  in config order."""
  out = {}
  for name, entry in ctx.config.evals.items():
    cls = REGISTRY[name]
    if not entry.enabled:
      continue
    if hasattr(cls, "applies") and not cls.applies(ctx):
      logging.info("evals.%s does not apply to %s (%s data); skipped.", name,
                   ctx.data.name, ctx.data.kind)
      continue
    out[name] = cls(entry, ctx)
  return out


def summary_line(name: str, metrics: dict[str, float]) -> str:
  """An evaluator's headline numbers, for the log."""
  bits = lambda name: (f" ({metrics[name]:.4f} bits/dim)"
                        if name in metrics else "")
  if "nll" in metrics:
    return (f"IS-NLL {metrics['nll']:.3f} +- {metrics['nll_stderr']:.3f} "
            f"nats{bits('nll_bits_per_dim')}")
  if "nelbo" in metrics:
    return f"-ELBO {metrics['nelbo']:.3f} nats{bits('bits_per_dim')}"
  aurocs = {k[:-len("_auroc")]: v for k, v in metrics.items()
            if k.endswith("_auroc")}
  if aurocs:
    return "AUROC (%) " + ", ".join(f"{k} {v:.2f}" for k, v in aurocs.items())
  if "pca_sse" in metrics:
    return (f"squared error per image {metrics['sse']:.3f} (PCA "
            f"{metrics['pca_sse']:.3f}), PSNR {metrics['psnr']:.2f} dB "
            f"(PCA {metrics['pca_psnr']:.2f})")
  if "psnr" in metrics:
    line = (f"reconstruction loss {metrics['recon']:.3f}, "
            f"PSNR {metrics['psnr']:.2f} dB")
    if "psnr_input" in metrics:
      line += f" (corrupted input {metrics['psnr_input']:.2f} dB)"
    return line
  return name
