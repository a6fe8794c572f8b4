"""Adversarial attacks (the module moved to `advmeta_jax.attacks.linf`)."""

from advmeta_jax.attacks.linf import *  # noqa: F401,F403
from advmeta_jax.attacks.linf import __all__  # noqa: F401
from advmeta_jax.attacks.linf import Array  # noqa: F401
from advmeta_jax.attacks.linf import ConfigError  # noqa: F401
from advmeta_jax.attacks.linf import LogitsFn  # noqa: F401
