"""XLA compiler options of the project's programs (the initial train state,
the train chunk and the evaluators).

On the CPU, XLA (jaxlib 0.10) hands fusions of dots, elementwise ops and
reductions to the YNNPACK library by default. For this project's models
YNNPACK is slow on the elementwise and reduction fusions, and even its dot
fusions (a dot with the bias add and activation around it) lose to XLA's
own dots and loop fusions. XLA:CPU also rewrites every reduction of more
than 32 elements into sums over windows of 32 (reduce-window) and a sum of
those (its TreeReductionRewriter, for accuracy over long sums); its
reduce-window kernels are slow: in a train step of the MLP VAE 784-500-20
the bias gradients' sums over the batch of 128 took 0.8 of 7.6 ms. Measured
on the 2-core CI CPU (jaxlib 0.10.2), quiet machine, all settings
interleaved in one process (`experiments/compiler_options.py
--repeats=7`, 2026-11-30 13:31): the train chunk per step (batch 128) and
one chunk of the IS-NLL evaluator (500 test images x 100 samples,
784-500-500-50):

  | YNNPACK fusions   | 784-500-20 | 784-500-500-50 | conv VAE | IS-NLL |
  | all (default)     |    9.49 ms |       12.95 ms |   158 ms | 3.30 s |
  | dots              |    7.93 ms |       14.06 ms |   164 ms | 1.25 s |
  | individual dots   |    8.12 ms |       13.72 ms |   176 ms | 0.94 s |
  | none              |    8.22 ms |       13.25 ms |   193 ms | 0.84 s |
  | none, no tree     |    7.59 ms |       12.45 ms |   345 ms | 0.82 s |

`jit` compiles with no YNNPACK fusion (`xla_cpu_experimental_ynn_fusion_type`
empty): the IS-NLL evaluation 1.5x faster than with YNNPACK's dot fusions,
the MLP train steps the same within this machine's noise (+-5% between
runs). For the conv VAE the runs disagree: with no YNNPACK fusion against
all, 165 vs 169 ms (11:00), 193 vs 158 ms (13:31), 124 vs 123 ms (21:16,
the run now in experiments/results/compiler_options.md, where the IS-NLL
chunk took 1.15 s with all fusions, 1.01 s with dots, 0.67 s with none
and 0.62 s also without tree reductions); open.
Programs of MLP models compile without tree reductions as well
(`xla_disable_hlo_passes=tree_reduction_rewriter`; `jit(...,
tree_reductions=False)`): their sums run over the batch or over features
with a wide axis left to vectorize, and the step is 6-8% faster. A
convolutional model keeps them: its bias gradients sum batch x height x
width into a few channels, which without the tree is one long sequential
loop (the conv VAE's step 1.8x slower). `experiments/benchmark_nll.py` and
`experiments/benchmark_train.py` give the end-to-end numbers. The options
change which kernels run and the order of summation, not what is computed:
results agree to float rounding (an image's IS-NLL moved by at most 1.8e-4
nats against YNNPACK's dot fusions, 3.7e-4 against jax's default). Other
backends ignore them; a jaxlib that does not know them gets no options.

All programs compile with LLVM at optimization level 1 instead of XLA's
default, 3 (`xla_backend_optimization_level`; XLA's
`DefaultDebugOptionsIgnoringFlags`): they compile faster and run as fast,
and the parameters they train are the same bits. `experiments/
compiler_options.py --repeats=7` (2026-11-30 21:16, 2-core AMD EPYC; rows
`..., LLVM -O1` of experiments/results/compiler_options.md), level 3 ->
level 1 with this module's other options: the train chunk per step 6.82 ->
6.95 ms (784-500-20), 11.22 -> 10.52 ms (784-500-500-50), 123.9 -> 119.4 ms
(conv VAE), one IS-NLL chunk 0.616 -> 0.635 s; compile 2.54 -> 2.13 s,
2.40 -> 1.87 s, 6.27 -> 5.34 s and 1.82 -> 1.25 s; after the same 80 train
steps every parameter of the three models bit for bit the same, and the
IS-NLL log p(x) too (with tree reductions it moved by 1.8e-4 nats). Sums
that XLA vectorizes at level 3 round differently: the logged grad_norm by
~1e-6 relative. Whole runs gain more, their evaluators most: a 24-step run
of configs/mnist_beta_vae.py:runlocal compiled in 6.4 s instead of 11.9 s
(its IS-NLL program 4.0 -> 0.9 s, -ELBO evaluator 1.8 -> 0.5 s, train chunk
2.7 -> 1.6 s), with the same results.json; the conv VAE's initial train
state, with its random initializers (a threefry loop and an inverse error
function per kernel), 5.44 -> 1.84 s. Level 0 would halve the compile
again but changes the bits (no fused multiply-adds). Tested:
tests/test_compiler.py. The same bits hold for these models on 28x28
images, not for every shape: the test's conv VAE on 8x8 images differed
after three steps by up to 1.3e-5 relative (a kernel gradient's sums
rounded differently at level 3; 2026-12-01).
"""

import functools
from typing import Any

import jax

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "",
                "xla_backend_optimization_level": 1}
_NO_TREE_REDUCTIONS = {"xla_disable_hlo_passes": "tree_reduction_rewriter"}


@functools.cache
def options(tree_reductions: bool = True) -> dict[str, Any] | None:
  """`compiler_options` for `jax.jit` on the default backend, or None.

  Args:
    tree_reductions: keep XLA:CPU's tree reductions (see above): True for
      convolutional models, False for MLPs.
  """
  if jax.default_backend() != "cpu":
    return None
  wanted = {**_CPU_OPTIONS, **({} if tree_reductions else _NO_TREE_REDUCTIONS)}
  try:  # An XLA that does not know an option refuses it at compile time.
    jax.jit(lambda x: x + 1, compiler_options=wanted).lower(1.0).compile()
  except Exception:  # pylint: disable=broad-except
    return None
  return wanted


def jit(fn, *, tree_reductions: bool, **kwargs):
  """`jax.jit(fn, **kwargs)` with this backend's `options(tree_reductions)`."""
  return jax.jit(fn, compiler_options=options(tree_reductions), **kwargs)


# XLA:CPU's own LLVM level (`DefaultDebugOptionsIgnoringFlags`).
XLA_DEFAULT_LEVEL = 3


def jit_at_xla_defaults(fn, **kwargs):
  """`jax.jit(fn, **kwargs)` with XLA's default options, on the CPU at its
  default LLVM level whatever XLA_FLAGS say (the tests set level 1): for
  programs whose bits must stay those of earlier versions (bits-back
  coding: a file decodes only where the networks compute the bits they
  computed when it was encoded)."""
  level = ({"xla_backend_optimization_level": XLA_DEFAULT_LEVEL}
           if jax.default_backend() == "cpu" else None)
  return jax.jit(fn, compiler_options=level, **kwargs)
