r"""Finds a dataset's layout in --data_dir, prepares its cache, prints what it found.

  advmeta-prepare-data --dataset=cifar_fs --data_dir=/data/cifar
  advmeta-prepare-data --dataset=omniglot --data_dir=/data/omniglot \
      --cache_dir=/scratch/advmeta_cache

Slow formats (image folders, pickles, zip and tar.gz archives) are read once
into a cache of uint8 .npy files with a manifest; training then memory-maps
them. This does that ahead of time (training would do it on its first run),
or checks an existing cache. --rebuild deletes the cache first. --measure then
loads each split twice in fresh processes (the first may build the cache, the
second reads it) and prints the load time and peak resident memory.
"""

from absl import flags

from advmeta_jax import config
from advmeta_jax import datasets
from advmeta_jax.datasets import preparation
from advmeta_jax.errors import ConfigError
from advmeta_jax.cli import common

common.define_config_flags(only=("dataset", "data_dir", "cache_dir",
                                 "image_size"))
flags.DEFINE_bool("rebuild", False, "Delete the existing cache and build it "
                  "again.")
flags.DEFINE_bool("measure", False, "Then load each split in fresh processes "
                  "and print load time and peak RSS.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.dataset not in preparation.LAYOUTS:
    raise ConfigError(f"--dataset={FLAGS.dataset} has no files to prepare; "
                      f"choose one of: {', '.join(sorted(preparation.LAYOUTS))}.")
  if not FLAGS.data_dir:
    raise ConfigError(f"give --data_dir, the directory that holds the "
                      f"{FLAGS.dataset} files to prepare.")
  config.image_size_check(FLAGS.image_size, "image_size")
  reports = datasets.prepare(FLAGS.dataset, data_dir=FLAGS.data_dir,
                             cache_dir=FLAGS.cache_dir,
                             image_size=FLAGS.image_size,
                             rebuild=FLAGS.rebuild)
  print(preparation.format_report(FLAGS.dataset, reports))
  if FLAGS.measure:
    print(preparation.measure_table(FLAGS.dataset, data_dir=FLAGS.data_dir,
                                    cache_dir=FLAGS.cache_dir,
                                    image_size=FLAGS.image_size,
                                    rebuild=True))


def run():
  """The `advmeta-prepare-data` command."""
  common.run(main)


if __name__ == "__main__":
  run()
