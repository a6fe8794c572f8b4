"""The settings of certification by randomized smoothing, declared once
(`CertifyConfig`), as the meta-test protocol's are in protocol.py: the
`advmeta-certify` flags are generated from it (`define_certify_flags`).

The defaults are those of "Certified Adversarial Robustness via Randomized
Smoothing" (Cohen, Rosenfeld, Kolter 2019, arXiv:1902.02918) and its code
(locuslab/smoothing, `code/certify.py`: N0 = 100, N = 100,000, α = 0.001);
`SHRUNK` holds the smaller sample counts of a smoke run (`--shrink`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Tuple

from absl import flags

from advmeta_jax.config.flags import define_setting_flag
from advmeta_jax.config.settings import positive_float
from advmeta_jax.config.settings import positive_int
from advmeta_jax.config.settings import Section
from advmeta_jax.config.settings import setting
from advmeta_jax.errors import ConfigError


def _failure_probability(value, name: str) -> None:
  if isinstance(value, bool) or not (
      isinstance(value, (int, float)) and 0 < value < 0.5):
    raise ConfigError(f"{name} must be in (0, 0.5) (the probability that a "
                      f"certificate is wrong), got {value}.")


def radii_values(value) -> Tuple[float, ...]:
  """The radii of a list flag's value (strings or numbers), as floats."""
  items = value.split(",") if isinstance(value, str) else list(value)
  out = []
  for item in items:
    text = str(item).strip()
    if not text:
      continue
    try:
      out.append(float(text))
    except ValueError:
      raise ConfigError(f"radii must be numbers, got {text!r}.") from None
  return tuple(out)


def _radii(value, name: str) -> None:
  radii = radii_values(value)
  if not radii:
    raise ConfigError(f"{name} must name at least one L2 radius, got "
                      f"{value!r}.")
  bad = [r for r in radii if not (math.isfinite(r) and r >= 0)]
  if bad:
    raise ConfigError(f"{name} must be finite numbers >= 0, got {bad[0]}.")


@dataclasses.dataclass(frozen=True)
class CertifyConfig(Section):
  """Randomized smoothing of the adapt-then-predict classifier: the noise,
  the Monte Carlo sample counts, the failure probability and the radii at
  which certified accuracy is reported."""
  sigma: float = setting(
      0.25, "sigma: standard deviation of the Gaussian noise added to the "
      "query images (pixel values in [0, 1], no clipping).",
      check=positive_float)
  n0: int = setting(100, "N0: noise samples per query image that select "
                    "the top class (CERTIFY).", check=positive_int)
  n: int = setting(100_000, "N: noise samples per query image that bound "
                   "the top class's probability (CERTIFY; also PREDICT's "
                   "sample with --predict).", check=positive_int)
  alpha: float = setting(
      0.001, "alpha: failure probability of each certificate (and of each "
      "PREDICT answer).", check=_failure_probability)
  noise_batch: int = setting(
      100, "Noise samples evaluated at once (each is the whole query set of "
      "an episode): a memory knob, results do not depend on it.",
      check=positive_int)
  radii: Tuple[str, ...] = setting(
      ("0", "0.25", "0.5", "0.75", "1.0"), "L2 radii at which certified "
      "accuracy is reported (comma-separated).", check=_radii, kind=list)
  predict: bool = setting(
      False, "Also run PREDICT (N fresh samples, the binomial test) and "
      "report the smoothed classifier's accuracy and abstentions.")

  @property
  def radius_values(self) -> Tuple[float, ...]:
    return radii_values(self.radii)


# A smoke run's sample counts (`--shrink`): enough for the curve's shape,
# not for its values (N = 1,000 at α = 0.001 certifies at most
# σ·Φ⁻¹(0.001^(1/1000)) ≈ 2.46·σ).
SHRUNK: Dict[str, int] = {"n0": 32, "n": 1000}


def define_certify_flags(flag_values=None) -> None:
  """One absl flag per `CertifyConfig` field, with its default and help."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  for f in dataclasses.fields(CertifyConfig):
    define_setting_flag(f, flag_values, f.default)


def certify_from_flags(flag_values=None, *, shrink: bool = False
                       ) -> CertifyConfig:
  """The validated `CertifyConfig` of the flags; with `shrink`, `SHRUNK`'s
  sample counts replace the defaults of the flags not given."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  values = {}
  for f in dataclasses.fields(CertifyConfig):
    flag = flag_values[f.name]
    value = tuple(flag.value) if f.metadata.get("kind") is list else flag.value
    if shrink and f.name in SHRUNK and not flag.present:
      value = SHRUNK[f.name]
    values[f.name] = value
  return CertifyConfig(**values).validate()
