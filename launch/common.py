"""Flags shared by the launch scripts, and the error handling they all use.

Every field of `advmeta_jax.training.TrainConfig` is a flag of the same name;
choices (datasets, learners, conv formulations) are enum flags, so `--helpfull`
lists them and absl rejects an unknown value with the allowed ones.
"""

import dataclasses
import functools
import logging as py_logging
import sys

from absl import app
from absl import flags
from absl import logging

from advmeta_jax import datasets
from advmeta_jax import learners
from advmeta_jax import models
from advmeta_jax import training
from advmeta_jax.errors import AdvMetaError
from advmeta_jax.training import TrainConfig

_HELP = {
    "dataset": "Few-shot dataset: " + "; ".join(
        f"{n}: {datasets.info(n).description}" for n in datasets.names()),
    "data_dir": "Directory of the data (mini_imagenet, image_folder) or the "
                "tensorflow-datasets data_dir (cifar_fs, omniglot).",
    "image_size": "Resize images to this side (default: the dataset's own).",
    "learner": "Meta-learner (outer loss); protonet and matchingnet are "
               "metric learners on conv4's embedding (no head, no inner "
               "loop: --inner_steps is not used).",
    "robust": "Robust loss around the learner's adaptation, for maml, "
              "protonet, matchingnet: aq (adversarial querying) or tafl "
              "(aq weighted per task; --tafl_* flags); maml with aq/tafl is "
              "the aq/tafl learner. none: the learner's own loss.",
    "n_way": "N: classes per task.",
    "k_shot": "K: support images per class.",
    "q_query": "Q: query images per class.",
    "task_batch_size": "B: tasks per meta-update.",
    "inner_lr": "alpha: inner-loop SGD step size.",
    "inner_steps": "Inner steps in meta-training.",
    "first_order": "First-order MAML (no gradient through inner gradients).",
    "remat": "Rematerialize the inner steps in the meta-gradient (same "
             "result, less memory, ~1/3 more compute).",
    "compute_dtype": "Convolution input dtype (float32 accumulation and "
                     "parameters either way): bfloat16 halves activation "
                     "memory and is faster where the hardware has bf16 "
                     "matmuls.",
    "parallel_tasks": "Tasks adapted at once (0: the whole task batch); "
                      "fewer run in sequential rounds, rematerialized: same "
                      "result, memory of parallel_tasks tasks.",
    "meta_lr": "beta: Adam step size of the meta-update.",
    "filters": "F: filters per conv4 convolution (32 MiniImageNet/CIFAR-FS, "
               "64 Omniglot).",
    "conv_impl": "Convolution formulation (same function): matmul is fastest "
                 "on CPU; xla is lax.conv.",
    "num_devices": "Devices the task batch is sharded over (0: all devices "
                   "of all hosts); task_batch_size must be a multiple.",
    "num_steps": "Meta-training steps (meta-updates).",
    "seed": "Seed of initialisation and episodes.",
    "log_every": "Write metrics every this many steps.",
    "checkpoint_every": "Save a checkpoint every this many steps.",
    "eval_episodes": "Meta-test episodes (0: no meta-test after training).",
    "eval_inner_steps": "Inner steps at meta-test time.",
    "eval_batch_size": "Meta-test tasks adapted in parallel (memory knob).",
    "train_attack": "Training attack of the robust learners (default: fgsm "
                    "for adml/maml_ad, pgd for aq/tafl and --robust=aq/tafl; "
                    "maml, protonet, matchingnet use none).",
    "train_eps": "L-inf budget of the training attack, e.g. 8/255 (default: "
                 "2/255 for adml/maml_ad, 8/255 for aq/tafl and "
                 "--robust=aq/tafl).",
    "train_attack_steps": "Steps of an iterative training attack (PGD).",
    "train_step_size": "Step size of a PGD training attack, e.g. 2/255.",
    "adv_fraction": "maml_ad: fraction of support and query that gets an "
                    "adversarial copy appended (1: full copies).",
    "adml_inner_lr_adv": "adml: alpha1, inner step size on the adversarial "
                         "support (alpha2 is --inner_lr).",
    "adml_beta_clean": "adml: beta1, weight of L(theta'_adv, clean query).",
    "adml_beta_adv": "adml: beta2, weight of L(theta'_clean, adversarial "
                     "query).",
    "adml_sequential": "adml: two sequential meta-updates per step (Algorithm "
                       "1, line 11 as written) instead of one on the "
                       "weighted sum.",
    "tafl_gamma": "tafl: gamma, exponent of the modulating factor (0: aq).",
    "tafl_k": "tafl: k, scale of L_AR in the modulating factor.",
    "tafl_delta": "tafl: delta > 0, floor of L_AR.",
    "tafl_reduction": "tafl: per-task cross-entropy over the queries, mean or "
                      "sum (the paper's).",
}
_ENUMS = {"dataset": datasets.names, "learner": learners.names,
          "robust": lambda: learners.ROBUST_LOSSES,
          "conv_impl": lambda: models.CONV_IMPLS,
          "compute_dtype": lambda: models.COMPUTE_DTYPES,
          "train_attack": lambda: training.TRAIN_ATTACKS,
          "tafl_reduction": lambda: learners.TAFL_REDUCTIONS}


def define_config_flags(only=None, flag_values=flags.FLAGS):
  """Defines one flag per `TrainConfig` field (or the fields in `only`) in
  `flag_values` (default: the global absl flags)."""
  defaults = TrainConfig()
  for field in dataclasses.fields(TrainConfig):
    name = field.name
    if only is not None and name not in only:
      continue
    default = getattr(defaults, name)
    help_ = _HELP[name]
    kw = dict(flag_values=flag_values)
    if name in _ENUMS:
      flags.DEFINE_enum(name, default, list(_ENUMS[name]()), help_, **kw)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_, **kw)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_, **kw)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_, **kw)
    elif name == "image_size":
      flags.DEFINE_integer(name, None, help_, **kw)
    else:
      flags.DEFINE_string(name, default, help_, **kw)


def define_distributed_flags():
  """Flags of a multi-host (multi-process) run, for `initialize_distributed`."""
  flags.DEFINE_bool("distributed", False,
                    "Multi-host run: call jax.distributed.initialize before "
                    "anything else (on TPU pods and SLURM/Open MPI clusters "
                    "the three flags below are auto-detected).")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 (implies --distributed).")
  flags.DEFINE_integer("num_processes", None,
                       "Number of processes (hosts) in the run (implies "
                       "--distributed).")
  flags.DEFINE_integer("process_id", None,
                       "This process's index in [0, num_processes) (implies "
                       "--distributed).")


def initialize_distributed() -> None:
  """Joins the multi-host run the distributed flags describe, if any.

  Must run before any JAX computation. Afterwards `jax.devices()` lists the
  devices of every host and `training.train` shards the task batch over all
  of them.
  """
  values = {name: flags.FLAGS[name].value
            for name in ("coordinator_address", "num_processes", "process_id")}
  if not (flags.FLAGS.distributed or any(v is not None
                                         for v in values.values())):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(**values)
  logging.info("process %d of %d; %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def config_from_flags(flag_values=flags.FLAGS) -> TrainConfig:
  values = {f.name: flag_values[f.name].value
            for f in dataclasses.fields(TrainConfig)}
  return TrainConfig(**values).validate()


def quiet_library_logs():
  """Drops orbax's per-save INFO chatter from the absl log; keeps its warnings."""
  class _Filter(py_logging.Filter):

    def filter(self, record):
      return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname

  logging.get_absl_handler().addFilter(_Filter())


def user_errors_exit(main):
  """Runs `main`, turning a user error into one line on stderr and exit 2."""
  @functools.wraps(main)
  def wrapped(argv):
    quiet_library_logs()
    try:
      return main(argv)
    except AdvMetaError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  return wrapped


def run(main):
  app.run(user_errors_exit(main))


# --- meta-test protocol flags (evaluate, sweep) -------------------------------

def define_protocol_flags(*, cases="robust", attacks="pgd", eps="8/255",
                          run_flags: bool = True):
  """Flags of the meta-test protocol: cases, attacks, ε, episodes, steps, seed.

  `cases=None` leaves out --cases, for a launcher whose cases are fixed. With
  `run_flags=False` the episodes, test-time inner steps and seed are left
  out, for a launcher that also defines the training flags (whose
  `--eval_episodes`, `--eval_inner_steps` and `--seed` serve instead).
  """
  if cases is not None:
    flags.DEFINE_string(
        "cases", cases, "Test cases: 'all' (the six of ADML), 'robust' "
        "(clean/clean, clean/adv) or a comma-separated list of support/query "
        "with support in clean, adv, mixed (40% adversarial, K >= 2) and "
        "query in clean, adv.")
  flags.DEFINE_list("attacks", attacks, "Test-time attacks (comma-separated): "
                    "fgsm, pgd, mi_fgsm, apgd, cw_l2.")
  flags.DEFINE_list("eps", eps, "L-inf budgets (comma-separated, e.g. "
                    "8/255,2/255); each eps attack runs at each. cw_l2 "
                    "ignores them.")
  flags.DEFINE_integer("attack_steps", 20, "Iterations of PGD, MI-FGSM and "
                       "APGD at test time.")
  if not run_flags:
    return
  flags.DEFINE_integer("episodes", None, "Episodes per cell (default: the "
                       "run's eval_episodes).")
  flags.DEFINE_integer("inner_steps", None, "Test-time inner steps (default: "
                       "the run's eval_inner_steps).")
  flags.DEFINE_integer("seed", 0, "Seed of the test episodes and attack "
                       "random starts (the same for every learner).")


def attack_specs_from_flags():
  """The `AttackSpec`s of --attacks × --eps (cw_l2 once, with no ε)."""
  from advmeta_jax import attacks as attacks_lib  # pylint: disable=g-import-not-at-top
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  specs = []
  for name in flags.FLAGS.attacks:
    attacks_lib.get(name)
    if "eps" not in attacks_lib.hyperparameters(name):
      specs.append(evaluation.default_test_attack(name, None))
      continue
    for eps in flags.FLAGS.eps:
      attacks_lib.parse_eps(eps, "--eps")
      specs.append(evaluation.default_test_attack(
          name, eps, num_steps=flags.FLAGS.attack_steps))
  return tuple(dict.fromkeys(specs))
