"""The model and the data it sees: the backbones (conv4 and its convolution
formulations, ResNet-12, ...), the losses every learner uses, and N-way
K-shot episodes.

    models.py       the backbones and their registry, `make_apply_fn`, init
    hybrid_conv.py  the convolution whose derivatives stay fast on a CPU
    losses.py       cross-entropy and accuracy
    episodes.py     tasks sampled on the device from an explicit key
"""

from advmeta_jax.core import episodes
from advmeta_jax.core import hybrid_conv
from advmeta_jax.core import losses
from advmeta_jax.core import models
from advmeta_jax.core import wide  # registers conv4_wide and resnet12

from advmeta_jax import config as _config  # pylint: disable=g-bad-import-order
_config.register_choices("conv_impl", lambda: models.CONV_IMPLS)
_config.register_choices("backbone", models.backbone_names,
                         describe=lambda n: models.get_backbone(n).description)
_config.register_check("backbone_width", models.check_backbone_width)
_config.register_choices("batchnorm", lambda: models.BATCHNORM_MODES)
_config.register_choices("compute_dtype", lambda: models.COMPUTE_DTYPES)
_config.register_check("image_size", models.feature_map_size)
