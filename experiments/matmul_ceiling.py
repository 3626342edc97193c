r"""The matmul ceiling of a jitted function: how fast its own dots can run.

A function's FLOPs are nearly all in its matrix products; this module finds
those products (every `dot_general` in its jaxpr, nested jaxprs included,
each with its shapes, dimension numbers and how many times it runs) and
times each shape alone in a dispatch-free `lax.fori_loop` on the same
device. Their times add up to the *matmul floor* of the function: what it
would take if it did nothing but its matmuls at the speed this machine
reaches on those shapes. `benchmark_train.py` and `benchmark_nll.py` set
the measured time of a train step and of the IS-NLL evaluation against it.

Use: `dots(fn, *args)`, `time_dot(dot)`, `floor(fn, *args)`,
`xla_flops(compiled)`.
"""

import dataclasses
import math
import time
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from vae_jax import compiler


@dataclasses.dataclass(frozen=True)
class Dot:
  """One `dot_general` of a function, `count` times per call."""
  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  dimension_numbers: Any
  dtype: Any
  count: int = 1

  @property
  def flops(self) -> float:
    """2 x (output elements) x (contracted size), per execution."""
    (lc, rc), (lb, rb) = self.dimension_numbers
    contracted = math.prod(self.lhs[d] for d in lc)
    batch = math.prod(self.lhs[d] for d in lb)
    lhs_free = math.prod(s for d, s in enumerate(self.lhs)
                         if d not in lc and d not in lb)
    rhs_free = math.prod(s for d, s in enumerate(self.rhs)
                         if d not in rc and d not in rb)
    return 2.0 * batch * lhs_free * rhs_free * contracted

  def describe(self) -> str:
    (lc, rc), (lb, rb) = self.dimension_numbers
    return (f"{list(self.lhs)} x {list(self.rhs)} (contract {list(lc)}/"
            f"{list(rc)}" + (f", batch {list(lb)}/{list(rb)}" if lb else "")
            + ")")


def _subjaxprs(eqn):
  for v in eqn.params.values():
    for item in (v if isinstance(v, (list, tuple)) else [v]):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _walk(jaxpr, multiplier: int, out: list[Dot]) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      lhs, rhs = (v.aval for v in eqn.invars)
      out.append(Dot(tuple(lhs.shape), tuple(rhs.shape),
                     eqn.params["dimension_numbers"], lhs.dtype, multiplier))
      continue
    # A scan's body runs `length` times; a while loop's trip count is data,
    # so its body is counted once (pass the loop body itself to count it).
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for sub in _subjaxprs(eqn):
      _walk(sub, multiplier * times, out)


def dots(fn, *args) -> list[Dot]:
  """The `dot_general`s of `fn(*args)`, equal shapes merged into counts."""
  found: list[Dot] = []
  _walk(jax.make_jaxpr(fn)(*args).jaxpr, 1, found)
  merged: dict[tuple, Dot] = {}
  for d in found:
    key = (d.lhs, d.rhs, str(d.dimension_numbers), str(d.dtype))
    if key in merged:
      merged[key] = dataclasses.replace(merged[key],
                                        count=merged[key].count + d.count)
    else:
      merged[key] = d
  return list(merged.values())


def time_dot(dot: Dot, min_seconds: float = 0.5, repeats: int = 5,
             compiler_options: dict[str, Any] | None = None) -> float:
  """Seconds of one execution of `dot` in a dispatch-free loop (median).

  The loop's operand depends on the previous product (a scalar added to the
  left operand), so XLA can neither hoist nor drop any of the products.
  `compiler_options` as for `jax.jit`.
  """
  key = jax.random.key(0)
  lhs = jax.random.normal(key, dot.lhs, dot.dtype)
  rhs = jax.random.normal(jax.random.fold_in(key, 1), dot.rhs, dot.dtype)

  def run(iters, lhs, rhs):
    def body(_, c):
      out = lax.dot_general(lhs + c, rhs, dot.dimension_numbers)
      return c + 1e-30 * out.ravel()[0]
    return lax.fori_loop(0, iters, body, jnp.zeros((), dot.dtype))

  run = jax.jit(run, compiler_options=compiler_options)
  jax.block_until_ready(run(1, lhs, rhs))
  iters, seconds = 1, 0.0
  while seconds < min_seconds / repeats:  # Sizes the loop.
    iters *= 2
    start = time.perf_counter()
    jax.block_until_ready(run(iters, lhs, rhs))
    seconds = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run(iters, lhs, rhs))
    times.append((time.perf_counter() - start) / iters)
  return float(np.median(times))


def floor(fn, *args, min_seconds: float = 0.5) -> dict[str, Any]:
  """The matmul floor of one call of `fn(*args)`.

  Each dot is timed with XLA's default CPU kernels and with the project's
  options (`vae_jax.compiler`), and the faster counts: the floor is the
  best this machine does on those shapes, whichever library runs them.

  Returns:
    `seconds` (sum over its dots of count x the dot's time alone),
    `dot_flops` (their FLOPs), `gflops` (dot_flops / seconds: the rate this
    device reaches on these shapes) and `dots` (a row per shape).
  """
  rows, total_s, total_f = [], 0.0, 0.0
  for d in dots(fn, *args):
    s = min(time_dot(d, min_seconds, compiler_options=o)
            for o in [None] + ([compiler.options()] if compiler.options()
                               else []))
    rows.append({"shape": d.describe(), "count": d.count, "flops": d.flops,
                 "seconds": s, "gflops": d.flops / s / 1e9})
    total_s += d.count * s
    total_f += d.count * d.flops
  return {"seconds": total_s, "dot_flops": total_f,
          "gflops": total_f / total_s / 1e9, "dots": rows}


def xla_flops(compiled) -> float:
  """XLA's cost analysis of a compiled function: its FLOPs per call."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per module.
    cost = cost[0]
  return float(cost["flops"])
