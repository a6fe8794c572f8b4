r"""Certifies trained runs by randomized smoothing: certified accuracy at L2
radii of the adapt-then-predict classifier (adapt to the clean support set,
classify the query image), per learner, on the same episodes and noise:

  advmeta-certify --workdirs=/tmp/runs/maml,/tmp/runs/aq --sigma=0.25 \
      --radii=0,0.25,0.5 --test_episodes=50 --out=/tmp/certify

Cohen, Rosenfeld, Kolter 2019 ("Certified Adversarial Robustness via
Randomized Smoothing", arXiv:1902.02918): n0 = 100 selection and n = 100,000
estimation samples per query image at α = 0.001 by default; --shrink takes
n0 = 32, n = 1,000 (and 10 episodes) unless given. Writes
certification.md, certification.json and certified_accuracy.png to --out
(default: the first workdir's certify/). See docs/certification.md.
"""

import dataclasses

from absl import flags

from advmeta_jax import config as config_lib
from advmeta_jax.config import certification
from advmeta_jax.evaluation import certify
from advmeta_jax.cli import common

common.define_run_flags("certify", "certify")
flags.DEFINE_bool("shrink", False, "A smoke run: n0 = 32, n = 1,000 and 10 "
                  "episodes where --n0, --n and --test_episodes are not "
                  "given.")
certification.define_certify_flags()
config_lib.define_protocol_flags(only=common.RUN_PROTOCOL_FLAGS)
for _name in (tuple(f.name for f in dataclasses.fields(
    certification.CertifyConfig))
              + common.RUN_PROTOCOL_FLAGS):
  flags.declare_key_flag(_name)   # listed by --help
FLAGS = flags.FLAGS

SHRUNK_EPISODES = 10


def main(argv):
  del argv
  workdirs = common.workdirs_from_flags("certify")
  settings = certification.certify_from_flags(shrink=FLAGS.shrink)
  protocol = common.protocol_from_flags()
  episodes = protocol.test_episodes
  if FLAGS.shrink and episodes is None:
    episodes = SHRUNK_EPISODES
  out = certify.certify_workdirs(
      workdirs, settings=settings, names=FLAGS.names,
      checkpoint_step=FLAGS.checkpoint_step, split=FLAGS.split,
      data_dir=FLAGS.data_dir, out=FLAGS.out, num_episodes=episodes,
      inner_steps=protocol.test_inner_steps, seed=protocol.test_seed,
      q_query=protocol.test_q_query, log=print)
  print(out.report.markdown)
  print("written: " + ", ".join(sorted(out.report.files.values())))


def run():
  """The `advmeta-certify` command."""
  common.run(main)


if __name__ == "__main__":
  run()
