"""The episode sampler: shapes, disjoint support/query, labels, keys, errors.

Most properties are checked on synthetic `ClassSplit`s whose every image is
constant and encodes its own index (`_indexed_split`), so the index of each
drawn image can be read back from the task's pixels; the rest on the real
`digits` splits.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from advmeta_jax.core import episodes
from advmeta_jax.datasets import base
from advmeta_jax.datasets import digits as digits_lib
from advmeta_jax.errors import ConfigError, DataError


def _indexed_split(counts, *, class_names=None, name="synthetic/train",
                   first_image_class=None, seed=0):
  """A split with `counts[c]` images of class c, each image encoding its index.

  Every pixel of image i is (i // 256, i % 256) over two channels. Labels are
  shuffled so that a class's images are not contiguous. With
  `first_image_class`, image 0 (the index `make_source` pads with) belongs to
  that class, so a padded position drawn for any other class shows up as an
  image of the wrong class.
  """
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  labels = np.random.default_rng(seed).permutation(labels)
  if first_image_class is not None:
    j = int(np.flatnonzero(labels == first_image_class)[0])
    labels[[0, j]] = labels[[j, 0]]
  index = np.arange(labels.size)
  pixels = np.stack([index // 256, index % 256], axis=-1).astype(np.uint8)
  images = np.broadcast_to(pixels[:, None, None, :],
                           (labels.size, 2, 3, 2)).copy()
  if class_names is None:
    class_names = tuple(f"class{c}" for c in range(len(counts)))
  return base.ClassSplit(images=images, labels=labels,
                         class_names=tuple(class_names), name=name)


def _image_index(images):
  """Inverts `_indexed_split`: float images `[..., H, W, 2]` -> indices."""
  values = np.rint(np.asarray(images) * 255.0).astype(np.int64)
  # Every pixel of an image carries the same value.
  assert (values == values[..., :1, :1, :]).all()
  return values[..., 0, 0, 0] * 256 + values[..., 0, 0, 1]


def _many_indices(source, num_tasks, seed=0, **shape):
  """`EpisodeIndices` of `num_tasks` tasks (leading task axis), as NumPy."""
  keys = jax.random.split(jax.random.key(seed), num_tasks)
  idx = jax.jit(jax.vmap(lambda k, s: episodes.sample_indices(k, s, **shape),
                         in_axes=(0, None)))(keys, source)
  return jax.tree.map(np.asarray, idx)


def _check_tasks(split, idx):
  """Properties that hold for every task, whatever the split."""
  num_tasks, n_way, _ = idx.support.shape
  drawn = np.concatenate([idx.support, idx.query], axis=2)   # [T, N, K+Q]
  assert drawn.min() >= 0 and drawn.max() < split.images.shape[0]
  for t in range(num_tasks):
    # N distinct classes of the split.
    assert len(set(idx.classes[t].tolist())) == n_way
    assert set(idx.classes[t].tolist()) <= set(range(split.num_classes))
    # Support and query never share an image; K+Q distinct images per class.
    assert not set(idx.support[t].ravel()) & set(idx.query[t].ravel())
    for i in range(n_way):
      assert len(set(drawn[t, i].tolist())) == drawn.shape[2]
  # Every image drawn for label i is an image of the class `classes[i]`.
  np.testing.assert_array_equal(split.labels[drawn],
                                np.broadcast_to(idx.classes[..., None],
                                                drawn.shape))


# One episode shape for the eager calls on digits: eager ops compile once per
# shape, and the tests share the compiled ops.
DIGITS_SHAPE = dict(batch_size=3, n_way=5, k_shot=2, q_query=4)


def test_sample_tasks_shapes_dtypes_and_labels(digits_train):
  source = episodes.make_source(digits_train)
  tasks = episodes.sample_tasks(jax.random.key(0), source, **DIGITS_SHAPE)
  assert tasks.support_images.shape == (3, 10, 16, 16, 1)
  assert tasks.query_images.shape == (3, 20, 16, 16, 1)
  for x in (tasks.support_images, tasks.query_images):
    assert x.dtype == jnp.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > 0.9        # scaled from 0..255 to 0..1
  assert tasks.support_labels.dtype == jnp.int32
  assert tasks.query_labels.dtype == jnp.int32
  np.testing.assert_array_equal(
      tasks.support_labels, np.tile([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], (3, 1)))
  np.testing.assert_array_equal(tasks.query_labels,
                                np.tile(np.repeat(np.arange(5), 4), (3, 1)))
  # The tasks of a batch are independent draws, not one task repeated.
  assert not np.array_equal(tasks.support_images[0], tasks.support_images[1])


def test_task_images_are_the_sampled_indices_in_class_major_order():
  split = _indexed_split([5, 6, 7, 8, 9, 10])
  source = episodes.make_source(split)
  shape = dict(n_way=4, k_shot=2, q_query=3)
  sample_indices = jax.jit(
      lambda k, s: episodes.sample_indices(k, s, **shape))
  sample_task = jax.jit(lambda k, s: episodes.sample_task(k, s, **shape))
  for seed in range(3):
    key = jax.random.key(seed)
    idx = sample_indices(key, source)
    task = sample_task(key, source)
    np.testing.assert_array_equal(_image_index(task.support_images),
                                  np.asarray(idx.support).reshape(-1))
    np.testing.assert_array_equal(_image_index(task.query_images),
                                  np.asarray(idx.query).reshape(-1))
    # Each image's label names the class it was drawn from.
    classes = np.asarray(idx.classes)
    np.testing.assert_array_equal(
        split.labels[_image_index(task.support_images)],
        classes[np.asarray(task.support_labels)])
    np.testing.assert_array_equal(
        split.labels[_image_index(task.query_images)],
        classes[np.asarray(task.query_labels)])


@pytest.mark.parametrize("counts,n_way,k_shot,q_query", [
    ([5, 6, 7, 8, 9, 10], 4, 2, 3),
    ([4, 4, 4], 3, 1, 3),                # K+Q = every class's whole count
    ([12, 30, 9, 15, 11], 2, 5, 4),
])
def test_support_query_disjoint_and_images_of_the_labelled_class(
    counts, n_way, k_shot, q_query):
  split = _indexed_split(counts)
  idx = _many_indices(episodes.make_source(split), 200, n_way=n_way,
                      k_shot=k_shot, q_query=q_query)
  assert idx.classes.shape == (200, n_way)
  assert idx.support.shape == (200, n_way, k_shot)
  assert idx.query.shape == (200, n_way, q_query)
  _check_tasks(split, idx)


def test_digits_tasks_hold_distinct_images_of_the_labelled_class(digits_train):
  idx = _many_indices(episodes.make_source(digits_train), 100, n_way=5,
                      k_shot=5, q_query=15)
  _check_tasks(digits_train, idx)


def test_labels_are_permuted_and_every_class_appears():
  split = _indexed_split([6] * 7)
  idx = _many_indices(episodes.make_source(split), 300, n_way=3, k_shot=1,
                      q_query=2)
  _check_tasks(split, idx)
  # Every class of the split appears, under every label.
  assert set(idx.classes.ravel().tolist()) == set(range(7))
  for label in range(3):
    assert set(idx.classes[:, label].tolist()) == set(range(7))
  # Loose uniformity: each class is in about 3/7 of the tasks (~129 of 300).
  appearances = np.bincount(idx.classes.ravel(), minlength=7)
  assert appearances.min() > 60 and appearances.max() < 200


def test_digits_labels_are_permuted_per_task(digits_train):
  idx = _many_indices(episodes.make_source(digits_train), 100, n_way=5,
                      k_shot=1, q_query=1)
  # 5-way on the 5 train digits: every task holds all of them, in random order.
  for t in range(100):
    assert sorted(idx.classes[t].tolist()) == [0, 1, 2, 3, 4]
  assert set(idx.classes[:, 0].tolist()) == {0, 1, 2, 3, 4}
  assert len({tuple(c) for c in idx.classes.tolist()}) > 20


def _digit_of_image():
  """Maps the bytes of each (resized) sklearn digit image to its digit."""
  raw = sk_datasets.load_digits()
  images = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  images = base.resize_uint8(images, 16)
  table = {im.tobytes(): int(t) for im, t in zip(images, raw.target)}
  assert len(table) == len(images)       # no two digit images are identical
  return table


def test_digits_are_read_as_scikit_learn_loads_them():
  """The digits' file is read without importing scikit-learn (a second of a
  launch's start), into the arrays `sklearn.datasets.load_digits` gives."""
  images, target = digits_lib._sklearn_digits()  # pylint: disable=protected-access
  raw = sk_datasets.load_digits()
  assert images.dtype == raw.images.dtype and target.dtype == raw.target.dtype
  np.testing.assert_array_equal(images, raw.images)
  np.testing.assert_array_equal(target, raw.target)


def test_digits_splits_never_mix(digits_train, digits_test):
  assert digits_train.class_names == ("0", "1", "2", "3", "4")
  assert digits_test.class_names == ("5", "6", "7", "8", "9")
  digit_of = _digit_of_image()
  for split, digits in ((digits_train, {0, 1, 2, 3, 4}),
                        (digits_test, {5, 6, 7, 8, 9})):
    source = episodes.make_source(split)
    idx = _many_indices(source, 40, seed=1, n_way=5, k_shot=1, q_query=5)
    assert {int(split.class_names[c]) for c in idx.classes.ravel()} == digits
    tasks = jax.vmap(episodes.gather_task, in_axes=(None, 0))(
        source, jax.tree.map(jnp.asarray, idx))
    # Pixel by pixel: every drawn image is a sklearn image of the digit that
    # its label stands for, hence a digit of this split.
    for images, labels in ((tasks.support_images, tasks.support_labels),
                           (tasks.query_images, tasks.query_labels)):
      as_uint8 = np.rint(np.asarray(images) * 255.0).astype(np.uint8)
      labels = np.asarray(labels)
      for t in range(as_uint8.shape[0]):
        truth = [digit_of[im.tobytes()] for im in as_uint8[t]]
        named = [int(split.class_names[idx.classes[t, l]]) for l in labels[t]]
        assert truth == named
        assert set(truth) <= digits


def test_deterministic_for_a_key_and_different_for_another(digits_train):
  source = episodes.make_source(digits_train)
  a = episodes.sample_tasks(jax.random.key(7), source, **DIGITS_SHAPE)
  b = episodes.sample_tasks(jax.random.key(7), source, **DIGITS_SHAPE)
  c = episodes.sample_tasks(jax.random.key(8), source, **DIGITS_SHAPE)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.support_images, c.support_images)
  assert not np.array_equal(a.query_images, c.query_images)


def test_jitted_sampler_equals_sample_tasks(digits_train):
  source = episodes.make_source(digits_train)
  sampler = episodes.make_sampler(source, **DIGITS_SHAPE)
  for seed in (0, 1):
    key = jax.random.key(seed)
    for x, y in zip(sampler(key),
                    episodes.sample_tasks(key, source, **DIGITS_SHAPE)):
      np.testing.assert_array_equal(x, y)


def test_unequal_class_counts_draw_only_real_images_uniformly():
  counts = [3, 7, 20]
  # Image 0 (the padding index of the small classes' rows) is of class 2, so a
  # padded position drawn for class 0 or 1 is an image of the wrong class.
  split = _indexed_split(counts, first_image_class=2, seed=3)
  source = episodes.make_source(split)
  assert source.class_index.shape == (3, 20)
  num_tasks = 600
  idx = _many_indices(source, num_tasks, seed=5, n_way=3, k_shot=1, q_query=2)
  _check_tasks(split, idx)
  drawn = np.concatenate([idx.support, idx.query], axis=2)   # [T, 3, 3]
  per_image = np.bincount(drawn.ravel(), minlength=split.images.shape[0])
  # K+Q = 3 = the smallest class's count: all of its images, every time.
  small = np.flatnonzero(split.labels == 0)
  np.testing.assert_array_equal(per_image[small], num_tasks)
  # Every image of the other classes is used, about equally: each class is in
  # every task with 3 draws, so an image of class c is drawn ~3T/count times.
  for c in (1, 2):
    members = np.flatnonzero(split.labels == c)
    expected = 3 * num_tasks / counts[c]
    assert per_image[members].min() > 0.5 * expected, (c, per_image[members])
    assert per_image[members].max() < 1.5 * expected, (c, per_image[members])
  # The support image alone is uniform over the class too.
  for c in (1, 2):
    members = np.flatnonzero(split.labels == c)
    rows = np.flatnonzero(idx.classes == c)          # positions in [T*N]
    support = idx.support.reshape(-1, 1)[rows, 0]
    used = np.bincount(support, minlength=split.images.shape[0])[members]
    assert used.min() > 0.4 * num_tasks / counts[c], (c, used)


def test_unequal_class_counts_subset_of_classes():
  split = _indexed_split([3, 7, 20], first_image_class=2, seed=4)
  idx = _many_indices(episodes.make_source(split), 300, seed=2, n_way=2,
                      k_shot=2, q_query=1)
  _check_tasks(split, idx)
  assert set(idx.classes.ravel().tolist()) == {0, 1, 2}
  used = set(np.concatenate([idx.support, idx.query], axis=2).ravel().tolist())
  assert used == set(range(30))


def test_check_episode_shape_accepts_what_the_split_can_give(digits_train):
  episodes.check_episode_shape(digits_train, n_way=5, k_shot=5, q_query=15)
  split = _indexed_split([3, 7, 20])
  episodes.check_episode_shape(split, n_way=3, k_shot=1, q_query=2)
  episodes.check_episode_shape(split, n_way=2, k_shot=2, q_query=1)


def test_check_episode_shape_n_way_larger_than_the_split(digits_train):
  with pytest.raises(DataError, match=re.escape(
      "n_way=6 is larger than the 5 classes of digits/train")):
    episodes.check_episode_shape(digits_train, n_way=6, k_shot=1, q_query=1)
  split = _indexed_split([4, 4, 4], name="toy/test")
  with pytest.raises(DataError,
                     match=r"n_way=4 .* 3 classes of toy/test.*n_way <= 3"):
    episodes.check_episode_shape(split, n_way=4, k_shot=1, q_query=1)


def test_check_episode_shape_too_few_images_names_the_short_class():
  split = _indexed_split([20, 3, 7], class_names=("ant", "bee", "cat"),
                         name="toy/train")
  with pytest.raises(DataError, match=(
      r"toy/train: class 'bee' has 3 images, fewer than "
      r"k_shot \+ q_query = 4")):
    episodes.check_episode_shape(split, n_way=3, k_shot=1, q_query=3)
  # Too few for K+Q even when n_way leaves the short class out of a task: a
  # task may draw any class.
  with pytest.raises(DataError, match=r"class 'bee' has 3 images.* = 5"):
    episodes.check_episode_shape(split, n_way=2, k_shot=2, q_query=3)


def test_check_episode_shape_too_few_images_on_digits(digits_train):
  counts = digits_train.class_counts()
  first = int(np.flatnonzero(counts < 200)[0])
  with pytest.raises(DataError, match=re.escape(
      f"class {digits_train.class_names[first]!r} has {counts[first]} images, "
      "fewer than k_shot + q_query = 200")):
    episodes.check_episode_shape(digits_train, n_way=5, k_shot=1, q_query=199)


@pytest.mark.parametrize("shape,message", [
    (dict(n_way=5, k_shot=0, q_query=3),
     "k_shot must be an integer >= 1, got 0"),
    (dict(n_way=1, k_shot=1, q_query=3),
     "n_way must be an integer >= 2, got 1"),
    (dict(n_way=5, k_shot=1, q_query=0),
     "q_query must be an integer >= 1, got 0"),
    (dict(n_way=5, k_shot=1.5, q_query=3),
     "k_shot must be an integer >= 1, got 1.5"),
])
def test_check_episode_shape_bad_values(digits_train, shape, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    episodes.check_episode_shape(digits_train, **shape)
