"""Optimizers and learning-rate schedules from the `optimizer` config section.

The peak learning rate is not baked into the Optax transformation: `create`
returns a transformation whose updates are scaled by a unit schedule
(warm-up, then constant or cosine, peaking at 1), and the train step
multiplies them by `-learning_rate`, which it receives as data. That keeps
the learning rate a per-model hyperparameter that `jax.vmap` can batch over
in sweeps, while the result equals `optax.adam(peak * schedule)` and friends.
"""

import ml_collections
import optax

from vae_jax.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def validate_config(config: ml_collections.ConfigDict) -> None:
  if config.name not in OPTIMIZERS:
    raise UserError(f"Unknown optimizer.name {config.name!r}; "
                    f"known: {', '.join(OPTIMIZERS)}.")
  if config.schedule not in SCHEDULES:
    raise UserError(f"Unknown optimizer.schedule {config.schedule!r}; "
                    f"known: {', '.join(SCHEDULES)}.")
  if config.learning_rate <= 0:
    raise UserError("optimizer.learning_rate must be positive, got "
                    f"{config.learning_rate}.")
  if config.weight_decay and config.name != "adamw":
    raise UserError("optimizer.weight_decay is only used by 'adamw'; set it "
                    f"to 0 for {config.name!r} or use 'adamw'.")
  if config.warmup_steps < 0:
    raise UserError("optimizer.warmup_steps must be >= 0, got "
                    f"{config.warmup_steps}.")


def unit_schedule(config: ml_collections.ConfigDict,
                  total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to 1, then constant or cosine decay to `end`."""
  warmup = config.warmup_steps
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0,
        warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=config.end_learning_rate_fraction)
  if not warmup:
    return optax.constant_schedule(1.0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, 1.0, warmup), optax.constant_schedule(1.0)],
      [warmup])


def create(config: ml_collections.ConfigDict,
           total_steps: int) -> tuple[optax.GradientTransformation,
                                      optax.Schedule]:
  """The optimizer without its learning rate, and its unit schedule.

  Returns:
    `(tx, schedule)`: apply `-learning_rate * update` to the params;
    `learning_rate * schedule(step)` is the effective rate at `step`.
  """
  validate_config(config)
  schedule = unit_schedule(config, total_steps)
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.name in ("adam", "adamw"):
    parts.append(optax.scale_by_adam(b1=config.b1, b2=config.b2,
                                     eps=config.eps))
    if config.name == "adamw":
      parts.append(optax.add_decayed_weights(config.weight_decay))
  else:
    if config.momentum:
      parts.append(optax.trace(decay=config.momentum,
                               nesterov=config.nesterov))
  parts.append(optax.scale_by_schedule(schedule))
  return optax.chain(*parts), schedule
