"""XLA compiler options of the hot programs: the train chunk and evaluators.

On the CPU, XLA (jaxlib 0.10) hands fusions of dots, elementwise ops and
reductions to the YNNPACK library by default. For this project's MLPs,
YNNPACK is fast on the dots alone but slow on the elementwise and reduction
fusions around them (measured on the 2-core CI CPU, one run, quiet machine,
MLP VAE 784-500-20 train step and the IS-NLL of 784-500-500-50):

  | YNNPACK fusions            | train step | IS-NLL batch |
  | default (dot, elementwise) |      1.00x |        1.00x |
  | dots only                  |      0.81x |        0.83x |

(with `losses.softplus`; `experiments/benchmark_train.py` and
`experiments/benchmark_nll.py` give the current numbers). `jit` compiles
with dots only there. The option changes which kernels run, not what is
computed: results agree to float rounding (summation order). Other backends
ignore it; a jaxlib that does not know it gets no options.
"""

import functools
from typing import Any

import jax

_CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def options() -> dict[str, Any] | None:
  """`compiler_options` for `jax.jit` on the default backend, or None."""
  if jax.default_backend() != "cpu":
    return None
  try:  # An XLA that does not know the option refuses it at compile time.
    jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(
        1.0).compile()
  except Exception:  # pylint: disable=broad-except
    return None
  return dict(_CPU_OPTIONS)


def jit(fn, **kwargs):
  """`jax.jit(fn, **kwargs)` with this backend's `options()`."""
  return jax.jit(fn, compiler_options=options(), **kwargs)
