"""The plain-PyTorch second-order MAML (and AQ) baseline of the benchmark.

It lives in `advmeta_jax.torch_baseline` (the benchmark library runs it);
this module keeps `from launch import torch_baseline` working.
"""

from advmeta_jax.torch_baseline import *  # noqa: F401,F403  pylint: disable=wildcard-import
