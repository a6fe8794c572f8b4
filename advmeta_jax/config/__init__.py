"""The settings of a run, at the bottom of the library: each field declared once
with its default, help text and check (`setting(...)`), and the absl flags
generated from them. This package imports nothing of the library but
`errors`; the registries register the names a setting allows
(`register_choices`).

    settings.py   the sections, `Config`, the checks of single values
    flags.py      absl flags of the settings that take `auto` or a value
    protocol.py   the meta-test protocol's settings
    certification.py  randomized smoothing's settings (advmeta-certify)
"""

from advmeta_jax.config import autotune
from advmeta_jax.config import certification
from advmeta_jax.config import flags
from advmeta_jax.config import protocol
from advmeta_jax.config import settings
from advmeta_jax.config.settings import attack_budget
from advmeta_jax.config.settings import AttackConfig
from advmeta_jax.config.settings import AUTO
from advmeta_jax.config.settings import auto_or_bool
from advmeta_jax.config.settings import auto_or_non_negative_int
from advmeta_jax.config.settings import AutoBool
from advmeta_jax.config.settings import AutoInt
from advmeta_jax.config.settings import choices
from advmeta_jax.config.settings import Config
from advmeta_jax.config.settings import DataConfig
from advmeta_jax.config.settings import eps_text
from advmeta_jax.config.settings import EvalConfig
from advmeta_jax.config.settings import fields
from advmeta_jax.config.settings import fraction
from advmeta_jax.config.settings import image_size_check
from advmeta_jax.config.settings import integer
from advmeta_jax.config.settings import is_int
from advmeta_jax.config.settings import LoopConfig
from advmeta_jax.config.settings import MetaConfig
from advmeta_jax.config.settings import ModelConfig
from advmeta_jax.config.settings import n_way_check
from advmeta_jax.config.settings import non_negative_float
from advmeta_jax.config.settings import non_negative_int
from advmeta_jax.config.settings import positive_eps_text
from advmeta_jax.config.protocol import ProtocolConfig
from advmeta_jax.config.certification import CertifyConfig
from advmeta_jax.config.settings import positive_float
from advmeta_jax.config.settings import positive_int
from advmeta_jax.config.settings import register_check
from advmeta_jax.config.settings import register_choices
from advmeta_jax.config.settings import RESUMABLE_SECTIONS
from advmeta_jax.config.settings import SECTION_OF
from advmeta_jax.config.settings import SECTIONS
from advmeta_jax.config.settings import setting
from advmeta_jax.config.settings import train_attacks
from advmeta_jax.config.flags import define_flags
from advmeta_jax.config.flags import define_protocol_flags
from advmeta_jax.config.flags import from_flags
from advmeta_jax.config.flags import protocol_from_flags
