"""The backbones (`--backbone`): their registry, parameter counts and output
shapes at the papers' sizes, the reference code's functions, DropBlock, and
every learner on every backbone (one train step, one episode under PGD).

MetaOptNet's ResNet-12 (kjunelee/MetaOptNet, models/ResNet12_embedding.py)
and R2-D2's conv4 (bertinetto/r2d2, fewshots/models/load_model.py,
`RRFeatures`) are transcribed in PyTorch below; those tests are skipped
where torch is not installed.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advmeta_jax import attacks
from advmeta_jax import config as config_lib
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.core import wide
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import metatest
from tests.conftest import tiny_config

# Sizes of the papers: 84×84 (MiniImageNet, tieredImageNet) and 32×32
# (CIFAR-FS, FC100) RGB images.
PAPER_SIZES = (84, 32)

# D, the embedding's size, at 84 and 32 px and the default --filters (32),
# as the reference code states it where it does.
EMBEDDING_DIMS = {
    "conv4": (5 * 5 * 32, 2 * 2 * 32),
    "conv4_strided": (256, 256),
    "conv4_64": (5 * 5 * 64, 2 * 2 * 64),          # MetaOptNet: 64 * 25, 64 * 4
    "conv4_wide": (31104 + 41472, 3456 + 4608),    # r2d2's train.py out_dim
    "resnet12": (640 * 25, 640 * 4),               # MetaOptNet: fea_dim
}


def test_the_registry_is_the_flags_choices_and_documents_each_backbone():
  assert models.backbone_names() == tuple(EMBEDDING_DIMS)
  field = {f.name: f for _, f in config_lib.fields()}["backbone"]
  assert field.metadata["choices"]() == models.backbone_names()
  help_ = field.metadata["help"]()
  for name in models.backbone_names():
    spec = models.get_backbone(name)
    assert spec.name == name and len(spec.description) > 20 and spec.reference
    assert f"{name}: {spec.description.rstrip('.')}" in help_
  with pytest.raises(ConfigError, match="unknown backbone 'resnet50'; choose "
                     "one of conv4, conv4_strided, conv4_64, conv4_wide, "
                     "resnet12"):
    models.make_conv4_embedding(backbone="resnet50")


def _shapes(model, size, channels=3):
  params = jax.eval_shape(
      lambda k: models.init_params(model, k, (size, size, channels)),
      jax.random.key(0))
  out = jax.eval_shape(models.make_apply_fn(model), params,
                       jnp.zeros((7, size, size, channels)))
  return params, out


@pytest.mark.parametrize("backbone", list(EMBEDDING_DIMS))
def test_output_shapes_at_the_papers_sizes(backbone):
  for size, dim in zip(PAPER_SIZES, EMBEDDING_DIMS[backbone]):
    assert models.embedding_dim(32, size, backbone) == dim
    _, emb = _shapes(models.make_conv4_embedding(image_size=size,
                                                 backbone=backbone), size)
    assert emb.shape == (7, dim)
    params, logits = _shapes(models.make_conv4(
        num_classes=5, image_size=size, backbone=backbone), size)
    assert logits.shape == (7, 5)
    assert params["head"]["kernel"].shape == (dim, 5)   # ANIL's "head"


def test_resnet12_has_metaoptnets_parameter_count():
  """12,424,320 parameters, counted by hand from MetaOptNet's architecture:
  per block of c_in → c channels, 9·c_in·c + 2·9·c² in the 3×3 convolutions,
  3·2c in their BatchNorms, c_in·c + 2c in the 1×1 shortcut and its
  BatchNorm (PyTorch's running averages are buffers, not parameters)."""
  by_hand = 0
  for c_in, c in [(3, 64), (64, 160), (160, 320), (320, 640)]:
    by_hand += 9 * c_in * c + 2 * 9 * c * c + 6 * c + c_in * c + 2 * c
  assert by_hand == 12_424_320 == wide.resnet12_num_params()
  for size in PAPER_SIZES:
    params, _ = _shapes(models.make_conv4_embedding(image_size=size,
                                                    backbone="resnet12"), size)
    assert models.num_params(params) == by_hand
    assert sorted(params) == ["block0", "block1", "block2", "block3"]
    assert sorted(params["block3"]) == [
        "bn0", "bn1", "bn2", "conv0", "conv1", "conv2", "shortcut_bn",
        "shortcut_kernel"]
  # At a reduced width the same formula holds.
  params, _ = _shapes(models.make_conv4_embedding(
      image_size=16, backbone="resnet12", width=0.125), 16)
  assert models.num_params(params) == wide.resnet12_num_params(
      channels=models.scaled_channels(wide.RESNET12_CHANNELS, 0.125))


def test_conv4_64_and_conv4_wide_parameter_counts_by_hand():
  params, _ = _shapes(models.make_conv4_embedding(image_size=84,
                                                  backbone="conv4_64"), 84)
  assert models.num_params(params) == models.conv4_num_params(
      num_classes=None, filters=64, channels=3, image_size=84)
  # R2-D2's conv4 without the convolutions' biases (see WideConv4).
  c = (3, 96, 192, 384, 512)
  by_hand = sum(9 * a * b + 2 * b for a, b in zip(c[:-1], c[1:]))
  params, _ = _shapes(models.make_conv4_embedding(image_size=84,
                                                  backbone="conv4_wide"), 84)
  assert models.num_params(params) == by_hand == 2_603_872


@pytest.mark.parametrize("backbone", ["conv4_64", "conv4_wide", "resnet12"])
def test_backbone_width_scales_the_fixed_width_backbones_only(backbone):
  """`width` scales the reference channels; --filters is not read; conv4
  and conv4_strided refuse a width (their --filters sets it)."""
  a = models.make_conv4_embedding(filters=4, backbone=backbone, width=0.25)
  b = models.make_conv4_embedding(filters=99, backbone=backbone, width=0.25)
  assert a == b
  assert models.embedding_dim(4, 84, backbone, 0.25) < models.embedding_dim(
      4, 84, backbone)
  for fixed in ("conv4", "conv4_strided"):
    with pytest.raises(ConfigError, match=f"backbone={fixed!r} takes its "
                       "channels from --filters"):
      models.make_conv4_embedding(backbone=fixed, width=0.5)
  with pytest.raises(ConfigError, match="finite number > 0, got 0"):
    models.make_conv4_embedding(backbone=backbone, width=0)


def test_config_accepts_every_backbone_with_every_learner_and_refuses_a_width():
  for backbone in models.backbone_names():
    for learner, extra in [("r2d2", {}), ("matchingnet", {"fce": "adml"}),
                           ("anil", {})]:
      Config.make(learner=learner, backbone=backbone, **extra).validate()
  Config.make(backbone="resnet12", backbone_width=0.5).validate()
  with pytest.raises(ConfigError, match="backbone_width=0.5 scales the "
                     "fixed-width backbones"):
    Config.make(backbone="conv4", backbone_width=0.5).validate()
  with pytest.raises(ConfigError, match="backbone_width must be a finite "
                     "number > 0"):
    Config.make(backbone="resnet12", backbone_width=-1.0).validate()


# --- the reference code, transcribed in PyTorch -------------------------------

def _torch():
  return pytest.importorskip("torch")


def _torch_resnet12(torch, channels):
  """MetaOptNet's ResNet-12 (models/ResNet12_embedding.py) in training mode
  without dropout (drop_rate 0), `channels` for its 64-160-320-640."""
  nn = torch.nn

  def conv3x3(a, b):
    return nn.Conv2d(a, b, kernel_size=3, stride=1, padding=1, bias=False)

  class BasicBlock(nn.Module):

    def __init__(self, inplanes, planes, downsample):
      super().__init__()
      self.conv1, self.bn1 = conv3x3(inplanes, planes), nn.BatchNorm2d(planes)
      self.relu = nn.LeakyReLU(0.1)
      self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
      self.conv3, self.bn3 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
      self.maxpool = nn.MaxPool2d(2)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.relu(self.bn2(self.conv2(out)))
      out = self.bn3(self.conv3(out))
      out = out + self.downsample(x)
      return self.maxpool(self.relu(out))

  layers, inplanes = [], 3
  for planes in channels:
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, bias=False),
        nn.BatchNorm2d(planes))
    layers.append(BasicBlock(inplanes, planes, downsample))
    inplanes = planes

  class ResNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.layers = nn.Sequential(*layers)

    def forward(self, x):
      x = self.layers(x)
      return x.reshape(x.shape[0], -1)

  return ResNet()


def _torch_rrfeatures(torch, channels):
  """R2-D2's `RRFeatures` (bertinetto/r2d2, fewshots/models/load_model.py)
  with `drop` 0, its convolutions with their biases."""
  nn = torch.nn

  def block(a, b, stride):
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b),
                         nn.MaxPool2d(2, stride=stride), nn.LeakyReLU(0.1))

  class RRFeatures(nn.Module):

    def __init__(self):
      super().__init__()
      c = (3,) + tuple(channels)
      self.features1 = block(c[0], c[1], 2)
      self.features2 = block(c[1], c[2], 2)
      self.features3 = block(c[2], c[3], 2)
      self.features4 = block(c[3], c[4], 1)
      self.pool3 = nn.MaxPool2d(2, stride=1)

    def forward(self, x):
      x = self.features3(self.features2(self.features1(x)))
      x4 = self.features4(x)
      # NCHW → NHWC before flattening, as the JAX model flattens.
      x3 = self.pool3(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
      x4 = x4.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
      return torch.cat((x3, x4), 1)

  return RRFeatures()


def copy_resnet12_params(torch, ref, params) -> dict:
  """Copies our ResNet-12's `params` into MetaOptNet's torch `ref`; returns
  its BatchNorm modules by our names (`block{i}/bn{j}`,
  `block{i}/shortcut_bn`)."""
  to_torch = lambda a: torch.tensor(np.asarray(a))
  bns = {}
  with torch.no_grad():
    for i, block in enumerate(ref.layers):
      p = params[f"block{i}"]
      for j in range(3):
        getattr(block, f"conv{j + 1}").weight.copy_(
            _kernel(torch, p[f"conv{j}"]["kernel"]))
        bns[f"block{i}/bn{j}"] = getattr(block, f"bn{j + 1}")
      block.downsample[0].weight.copy_(_kernel(torch, p["shortcut_kernel"]))
      bns[f"block{i}/shortcut_bn"] = block.downsample[1]
    for name, bn in bns.items():
      p = params[name.split("/")[0]][name.split("/")[1]]
      bn.weight.copy_(to_torch(p["scale"]))
      bn.bias.copy_(to_torch(p["bias"]))
  return bns


def _kernel(torch, k):
  """A JAX HWIO kernel as PyTorch's OIHW weight."""
  return torch.tensor(np.asarray(k).transpose(3, 2, 0, 1).copy())


def test_resnet12_matches_metaoptnets_code_in_torch():
  """Parameter count and output shape at MetaOptNet's sizes, and the same
  function (batch statistics, as its `train()` mode) at a reduced width."""
  torch = _torch()
  full = _torch_resnet12(torch, wide.RESNET12_CHANNELS)
  assert sum(p.numel() for p in full.parameters()) == 12_424_320
  with torch.no_grad():
    assert tuple(full(torch.zeros(1, 3, 84, 84)).shape) == (1, 16000)

  channels = (3, 5, 6, 8)
  model = wide.ResNet12(None, channels, conv_impl="xla")
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  params = models.init_params(model, jax.random.key(0), (32, 32, 3))
  params = jax.tree.map(   # non-trivial BatchNorm scales and offsets
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
      params)
  ref = _torch_resnet12(torch, channels)
  copy_resnet12_params(torch, ref, params)
  with torch.no_grad():
    ref.train()
    out = ref(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  # PyTorch flattens NCHW, the JAX model NHWC.
  got = np.asarray(jax.jit(model.apply)({"params": params}, x)).reshape(
      4, 2, 2, 8)
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2).reshape(4, -1),
                             out.numpy(), rtol=1e-4, atol=1e-4)


def test_conv4_wide_matches_r2d2s_code_in_torch():
  """R2-D2's conv4 with biased convolutions computes the same function as
  ours without biases (BatchNorm with the batch's statistics removes them);
  their parameter counts differ by exactly those biases."""
  torch = _torch()
  full = _torch_rrfeatures(torch, wide.WIDE_CONV4_CHANNELS)
  assert sum(p.numel() for p in full.parameters()) == 2_603_872 + (
      96 + 192 + 384 + 512)
  with torch.no_grad():
    assert tuple(full(torch.zeros(1, 3, 84, 84)).shape) == (1, 72576)
    assert tuple(full(torch.zeros(1, 3, 32, 32)).shape) == (1, 8064)

  channels = (4, 5, 6, 7)
  model = wide.WideConv4(None, channels, conv_impl="xla")
  x = jax.random.uniform(jax.random.key(1), (4, 20, 20, 3))
  params = models.init_params(model, jax.random.key(0), (20, 20, 3))
  params = jax.tree.map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
      params)
  ref = _torch_rrfeatures(torch, channels)
  with torch.no_grad():
    seqs = [ref.features1, ref.features2, ref.features3, ref.features4]
    for i, seq in enumerate(seqs):
      seq[0].weight.copy_(_kernel(torch, params[f"conv{i}"]["kernel"]))
      seq[0].bias.uniform_(-1.0, 1.0)         # removed by the BatchNorm
      seq[1].weight.copy_(torch.tensor(np.asarray(params[f"bn{i}"]["scale"])))
      seq[1].bias.copy_(torch.tensor(np.asarray(params[f"bn{i}"]["bias"])))
    ref.train()
    out = ref(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  got = jax.jit(model.apply)({"params": params}, x)
  assert got.shape == (4, wide._wide_conv4_dim(20, channels))  # pylint: disable=protected-access
  np.testing.assert_allclose(got, out.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow   # compile-bound: ~80 s on 2 cores
@pytest.mark.parametrize("backbone", ["conv4_wide", "resnet12"])
def test_the_convolution_formulations_compute_the_same_backbone(backbone):
  """matmul, hybrid (the CPU's `auto`) and xla: the same logits and
  parameter gradients (tests/test_models.py checks the three on conv4 in the
  unit tier; these backbones reuse its `Conv3x3`)."""
  x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 3))
  build = lambda impl: models.make_conv4(
      num_classes=3, image_size=16, backbone=backbone, width=1 / 16,
      conv_impl=impl)
  params = models.init_params(build("xla"), jax.random.key(0), (16, 16, 3))
  results = {}
  for impl in models.CONV_IMPLS:
    apply_fn = models.make_apply_fn(build(impl))
    loss = lambda p, f=apply_fn: jnp.sum(jnp.sin(f(p, x)))
    results[impl] = jax.jit(jax.value_and_grad(loss))(params)
  for impl in ("matmul", "hybrid"):
    np.testing.assert_allclose(results[impl][0], results["xla"][0],
                               rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(results[impl][1]),
                    jax.tree.leaves(results["xla"][1])):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


# --- DropBlock ------------------------------------------------------------------

def _metaoptnet_block_mask(mask, block_size):
  """MetaOptNet's `DropBlock._compute_block_mask` in numpy, NCHW, loop by
  loop: every non-zero seed (i, j) sets the padded mask's entries
  (i + di, j + dj), 0 ≤ di, dj < b, the padding (b−1)//2 left and top, b//2
  right and bottom; the keep mask is 1 − that."""
  b = block_size
  left, right = (b - 1) // 2, b // 2
  padded = np.pad(mask, ((0, 0), (0, 0), (left, right), (left, right)))
  for n, c, i, j in zip(*np.nonzero(mask)):
    padded[n, c, i:i + b, j:j + b] = 1.0
  return 1.0 - padded


@pytest.mark.parametrize("block_size,side", [(5, 10), (5, 5), (2, 4), (3, 7)])
def test_dropblock_mask_is_metaoptnets(block_size, side):
  rng = np.random.default_rng(block_size * side)
  seeds = (rng.random((2, side - block_size + 1, side - block_size + 1, 3))
           < 0.15).astype(np.float32)
  got = wide.dropblock_keep_mask(jnp.asarray(seeds), block_size)
  ref = _metaoptnet_block_mask(seeds.transpose(0, 3, 1, 2), block_size)
  np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2), ref)


def test_dropblock_schedule_and_resnet12_regularization_need_a_key():
  # The drop rate rises linearly over 40,000 forward calls, then stays.
  g = lambda step: float(wide.dropblock_gamma(0.1, 5, 10, step))
  np.testing.assert_allclose(g(20_000), 0.05 / 25 * 100 / 36, rtol=1e-6)
  np.testing.assert_allclose(g(40_000), 0.1 / 25 * 100 / 36, rtol=1e-6)
  assert g(80_000) == g(40_000)
  model = wide.ResNet12(None, (2, 3, 4, 5), conv_impl="xla", drop_rate=0.1,
                          dropblock_size=2)
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  params = models.init_params(model, jax.random.key(0), (32, 32, 3))
  plain = model.apply({"params": params}, x)
  # Without a key (the learners' apply(params, x)): no dropout, no DropBlock.
  np.testing.assert_array_equal(
      plain, wide.ResNet12(None, (2, 3, 4, 5), conv_impl="xla").apply(
          {"params": params}, x))
  dropped = model.apply({"params": params}, x, key=jax.random.key(5),
                        step=40_000)
  assert dropped.shape == plain.shape
  assert not np.allclose(dropped, plain)
  assert float(jnp.mean(dropped == 0)) > float(jnp.mean(plain == 0))


# --- every learner on every backbone ------------------------------------------

# Tiny sizes: 3-way 1-shot tasks of 16×16 digits, conv4's 4 filters, the
# fixed-width backbones at 1/16 of their channels (resnet12: 4-10-20-40).
WIDTH = {"conv4_64": 1 / 16, "conv4_wide": 1 / 16, "resnet12": 1 / 16}
LEARNERS = [("maml", "none"), ("anil", "none"), ("protonet", "none"),
            ("matchingnet", "none"), ("r2d2", "none"), ("protonet", "aq"),
            ("maml", "tafl"), ("metaoptnet", "none"), ("metaoptnet", "aq")]
TEST_PGD = attacks.make_attack("pgd", {"eps": 0.1, "step_size": 0.05,
                                       "num_steps": 2})


def _matrix_config(learner, robust, backbone):
  return tiny_config(learner=learner, robust=robust, backbone=backbone,
                     backbone_width=WIDTH.get(backbone, 1.0), filters=4,
                     n_way=3, q_query=2, train_attack_steps=1,
                     remat=backbone == "resnet12")


def _tasks(b):
  k = jax.random.split(jax.random.key(1), 2)
  return episodes.Task(jax.random.uniform(k[0], (b, 3, 16, 16, 1)),
                       jnp.tile(jnp.arange(3), (b, 1)),
                       jax.random.uniform(k[1], (b, 6, 16, 16, 1)),
                       jnp.tile(jnp.arange(6) % 3, (b, 1)))


def _train_step_and_pgd_episode(learner, robust, backbone):
  cfg = _matrix_config(learner, robust, backbone)
  exp = training.build(cfg)
  params = jax.jit(lambda k: models.init_params(exp.model, k, exp.image_shape)
                   )(jax.random.key(0))
  if learner == "anil":
    assert "head" in params
  optimizer = optax.adam(1e-3)
  step = jax.jit(training.make_train_step(exp.learner, optimizer))
  state, metrics = step(training.init_state(params, optimizer), _tasks(2),
                        jax.random.key(2))
  assert np.isfinite(float(metrics["loss"])), metrics
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params,
                       state.params)
  assert any(jax.tree_util.tree_leaves(moved))
  task = jax.tree.map(lambda a: a[0], _tasks(1))
  case = jax.jit(functools.partial(
      metatest.evaluate_case, exp.learner.adaptation,
      case=metatest.TestCase("clean", "adv"), attack=TEST_PGD,
      inner_steps=1, n_way=3))
  out = case(state.params, task, jax.random.key(3))
  for k in ("query_accuracy", "clean_query_accuracy", "query_loss"):
    assert np.all(np.isfinite(np.asarray(out[k]))), (k, out)
  assert 0 <= float(out["query_accuracy"][0]) <= 1


# The unit tier runs one pair per backbone, together covering every learner
# (~1.5 minutes on a loaded 2-core CPU, compile-bound); the slow tier runs
# the rest of the matrix (every learner × every backbone, AQ and TAFL
# on top; MAML on ResNet-12 with remat, second order).
FAST = [("maml", "none", "conv4"), ("matchingnet", "none", "conv4_strided"),
        ("anil", "none", "conv4_64"), ("r2d2", "none", "conv4_wide"),
        ("protonet", "none", "resnet12"), ("metaoptnet", "aq", "conv4")]
MATRIX = [(learner, robust, backbone) for backbone in EMBEDDING_DIMS
          for learner, robust in LEARNERS]


def _ids(cases):
  return ["-".join(c) for c in cases]


@pytest.mark.parametrize("learner,robust,backbone", FAST, ids=_ids(FAST))
def test_learner_trains_and_meta_tests_on_backbone(learner, robust, backbone):
  _train_step_and_pgd_episode(learner, robust, backbone)


SLOW = [c for c in MATRIX if c not in FAST]


@pytest.mark.slow   # 39 pairs, 5-90 s of compiling each on 2 cores
@pytest.mark.parametrize("learner,robust,backbone", SLOW, ids=_ids(SLOW))
def test_every_learner_trains_and_meta_tests_on_every_backbone(
    learner, robust, backbone):
  _train_step_and_pgd_episode(learner, robust, backbone)


def test_fce_matching_networks_run_on_a_fixed_width_backbone():
  """FCE's context LSTM sizes itself from the embedding."""
  cfg = _matrix_config("matchingnet", "none", "conv4_wide").replace(fce="adml")
  exp = training.build(cfg)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  assert set(params) == {"embedding", "context"}
  fn = training.batch_value_and_grad(exp.learner, parallel_tasks=0)
  (loss, _), _ = jax.jit(fn)(params, _tasks(2), jax.random.key(2))
  assert np.isfinite(float(loss))


# --- the docs' table ------------------------------------------------------------

def _channels(name):
  spec = models.get_backbone(name)
  model = spec.build(None, 32, 1.0, "xla", "float32")
  if isinstance(model, models.StridedConv4):
    return "-".join(str(32 * 2 ** i) for i in range(4))
  if isinstance(model, models.Conv4):
    return "-".join([str(model.filters)] * 4)
  return "-".join(map(str, model.channels))


def markdown_table() -> str:
  """docs/conventions.md's backbone table, measured from the models
  (parameters counted from their initialized shapes): every backbone at
  --filters 32 and --backbone_width 1, on RGB images."""
  rows = ["| backbone | channels | D, 84×84 | D, 32×32 | parameters "
          "(embedding) | with a 5-way head, 84×84 | reference code |",
          "|---|---|---|---|---|---|---|"]
  for name in models.backbone_names():
    emb, _ = _shapes(models.make_conv4_embedding(image_size=84,
                                                 backbone=name), 84)
    full, _ = _shapes(models.make_conv4(num_classes=5, image_size=84,
                                        backbone=name), 84)
    dims = [models.embedding_dim(32, s, name) for s in PAPER_SIZES]
    rows.append(f"| `{name}` | {_channels(name)} | {dims[0]:,} | {dims[1]:,} "
                f"| {models.num_params(emb):,} | {models.num_params(full):,} "
                f"| {models.get_backbone(name).reference} |")
  return "\n".join(rows)


def test_the_docs_backbone_table_is_measured():
  text = (pathlib.Path(__file__).resolve().parents[1] / "docs" /
          "conventions.md").read_text()
  table = text.split("<!-- backbone table -->")[1].split(
      "<!-- /backbone table -->")[0].strip()
  assert table == markdown_table(), (
      "docs/conventions.md's backbone table is stale: paste the output of "
      "`python -m tests.test_backbones` between its markers.")


if __name__ == "__main__":
  print(markdown_table())
