"""XLA compiler options of the hot programs: the train chunk and evaluators.

On the CPU, XLA (jaxlib 0.10) hands fusions of dots, elementwise ops and
reductions to the YNNPACK library by default. For this project's models
YNNPACK is slow on the elementwise and reduction fusions, and even its dot
fusions (a dot with the bias add and activation around it) lose to XLA's
own dots and loop fusions. Measured on the 2-core CI CPU (jaxlib 0.10.2),
quiet machine, all settings interleaved in one process
(`experiments/compiler_options.py --repeats=7`): the train chunk per step
(batch 128) and one chunk of the IS-NLL evaluator (500 test images x 100
samples, 784-500-500-50):

  | YNNPACK fusions | 784-500-20 | 784-500-500-50 | conv VAE | IS-NLL  |
  | all (default)   |   10.02 ms |       13.38 ms |   169 ms | 3.18 s  |
  | dots            |    9.15 ms |       13.30 ms |   173 ms | 1.30 s  |
  | individual dots |    9.10 ms |       13.60 ms |   165 ms | 0.92 s  |
  | none            |    9.68 ms |       13.75 ms |   165 ms | 0.81 s  |

`jit` compiles with none there (`xla_cpu_experimental_ynn_fusion_type`
empty): the IS-NLL evaluation 1.6x faster than with YNNPACK's dot fusions,
the train steps the same within this machine's noise (+-5% between runs;
`experiments/benchmark_nll.py` and `experiments/benchmark_train.py` give
the end-to-end numbers). The option changes which kernels run, not what is
computed: results agree to float rounding (summation order; an image's
IS-NLL moved by at most 2e-4 nats). Other backends ignore it; a jaxlib
that does not know it gets no options.
"""

import functools
from typing import Any

import jax

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


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
