"""Errors that a user can act on.

Every check of user input (flags, data, hyperparameters) raises one of these
with a message that names the value that was given and what is allowed. Launch
scripts turn them into a one-line message and a non-zero exit, never a
traceback from deep inside JAX.
"""


class AdvMetaError(ValueError):
  """Base class of all user-facing errors of advmeta_jax."""


class ConfigError(AdvMetaError):
  """A flag or hyperparameter has a value that is not allowed."""


class DataError(AdvMetaError):
  """A dataset is missing, malformed or too small for the episodes asked for."""


class NonFiniteLossError(AdvMetaError):
  """Training produced a NaN or infinite loss."""


class Interrupted(AdvMetaError):
  """Training stopped at a signal (SIGTERM, a preemption notice) after saving
  a checkpoint of the current step; the same command resumes it."""
  exit_code = 143   # 128 + SIGTERM, what schedulers expect of a stopped job
