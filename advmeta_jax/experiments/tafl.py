r"""TAFL, "Task-based Focal Loss for Adversarially Robust Meta-Learning" (Hou,
Zou, Liu; ICPR 2020), Table 1: MiniImageNet 5-way 1-shot robust accuracy
(clean support, attacked query) of MAML, ADML, AQ and TAFL under PGD, MI-FGSM
and C&W-L2, and the KDE of L_AR over tasks.

  python -m launch.reproduce --experiment=tafl_table1 --data_dir=DATA \
      --workdir=/ckpt/tafl_table1
  python -m launch.reproduce --experiment=tafl_table1_aq_attacks \
      --data_dir=DATA --workdir=/ckpt/tafl_aq   # the AQ literature's attacks
  python -m launch.reproduce --experiment=tafl_table1 --shrink \
      --workdir=/tmp/tafl_shrunk        # the whole pipeline, offline, minutes

The paper gives neither the attacks' budgets nor the training setup.
`tafl_table1` runs what the authors' code (evan69/MAML-Def-Repo, a fork of
MMAML) runs with its flag defaults: one advertorch adversary built from
`--attack-name PGD --attack-eps 0.05 --attack-step 10` attacks every query
set, in training (for every defense) and at test; PGD without random start
in steps of 0.01 (advertorch's default), MI-FGSM in steps of 0.01 with decay
1, C&W-L2 with c0 = 0.05 and 10 iterations; the strided conv net (`--use-
max-pool` False; `--maml-model True`, the vanilla MAML model), inner step
0.05 with gradients clipped at ±20, 5 inner steps in training and at test,
10 tasks per batch, Adam 1e-3, 192,000 meta-iterations (`--num-batches`
1,920,000 tasks over batches of 10). `tafl_table1_aq_attacks` is the same
table with the settings of the adversarial-querying literature (conv4, PGD
8/255 in 7 steps of 2/255 from a random start in training, PGD-20 and
MI-FGSM at 8/255 at test).
"""

from __future__ import annotations

from typing import Tuple

from advmeta_jax.attacks.builtin import CW_STRONG
from advmeta_jax.attacks.builtin import CW_TAFL_REFERENCE
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.experiments.adml import PAPER_TRAIN
from advmeta_jax.experiments.base import ExperimentConfig
from advmeta_jax.experiments.base import PaperResult
from advmeta_jax.experiments.base import register


# TAFL (Hou et al.), Table 1: MiniImageNet 5-way 1-shot, robust accuracy
# (clean support, attacked query). The paper does not state ε; a table puts
# these cells beside its own attacks at `eps`.
_CELLS = (("maml", ((0.42, 0.06), (0.01, 0.01), (14.38, 0.36))),
          ("adml", ((28.53, 0.48), (28.19, 0.56), (26.77, 0.41))),
          ("aq", ((28.20, 0.48), (27.94, 0.54), (26.82, 0.42))),
          ("tafl", ((29.53, 0.60), (28.94, 0.61), (27.75, 0.44))))


def _results(eps: str) -> Tuple[PaperResult, ...]:
  return tuple(
      PaperResult("TAFL Table 1", "mini_imagenet", 1, learner, attack, e,
                  "clean", "adv", acc, ci)
      for learner, cells in _CELLS
      for (attack, e), (acc, ci) in zip(
          (("pgd", eps), ("mi_fgsm", eps), ("cw_l2", None)), cells))


TAFL_RESULTS: Tuple[PaperResult, ...] = _results("0.05")


# The TAFL authors' code with its flag defaults (see the module docstring).
_CODE_ATTACK = dict(train_attack="pgd", train_eps="0.05",
                    train_attack_steps=10, train_step_size="0.01",
                    train_random_start=False)
_CODE_TRAIN = dict(PAPER_TRAIN, dataset="mini_imagenet", k_shot=1,
                   backbone="conv4_strided", filters=32, inner_lr=0.05,
                   inner_grad_clip=20.0, inner_steps=5, task_batch_size=10,
                   meta_lr=1e-3, num_steps=192000, train_eps="")

register(ExperimentConfig(
    name="tafl_table1",
    description=("TAFL Table 1 as the authors' code runs it: MiniImageNet "
                 "5-way 1-shot robust accuracy (clean support, attacked "
                 "query) of MAML, ADML, AQ and TAFL under PGD, MI-FGSM and "
                 "C&W-L2 (ε 0.05, 10 iterations, the code's flag defaults; "
                 "the paper states neither), every defense trained against "
                 "that PGD; the strided conv net, 5 inner steps of 0.05 "
                 "(gradients clipped at ±20) in training and at test; plus "
                 "the KDE of L_AR over tasks."),
    train=_CODE_TRAIN,
    # The code's ADML reuses AQ's predictions, so the paper's ADML row is
    # close to its AQ row; ours is ADML's Algorithm 1, its support attack
    # (against θ) and query attack (against θ'_c) that PGD.
    rows=(("maml", dict(learner="maml")),
          ("adml", dict(learner="adml", **_CODE_ATTACK)),
          ("aq", dict(learner="aq", **_CODE_ATTACK)),
          ("tafl", dict(learner="tafl", **_CODE_ATTACK))),
    cases="clean/clean,clean/adv",
    attacks=(AttackSpec.of("pgd", eps="0.05", step_size=0.01, num_steps=10,
                           random_start=False),
             AttackSpec.of("mi_fgsm", eps="0.05", step_size=0.01,
                           num_steps=10, decay=1.0),
             AttackSpec.of("cw_l2", **CW_TAFL_REFERENCE),
             AttackSpec.of("cw_l2", tag="cw_l2_strong", **CW_STRONG)),
    episodes=2000, inner_steps=5, paper=_results("0.05"), curves=False,
    kde=True, masking_check=True))


_AQ_TRAIN = dict(PAPER_TRAIN, dataset="mini_imagenet", k_shot=1,
                 task_batch_size=4, train_eps="")

register(ExperimentConfig(
    name="tafl_table1_aq_attacks",
    description=("TAFL Table 1 with the adversarial-querying literature's "
                 "settings: MiniImageNet 5-way 1-shot, conv4, every defense "
                 "trained against PGD ε 8/255 (7 steps of 2/255 from a "
                 "random start), tested with PGD-20 and MI-FGSM at 8/255 "
                 "and advertorch's C&W-L2 (c0 = 1e-3), 10 test inner steps; "
                 "plus the KDE of L_AR over tasks."),
    train=_AQ_TRAIN,
    rows=(("maml", dict(learner="maml")),
          ("adml", dict(learner="adml", train_attack="pgd",
                        train_eps="8/255")),
          ("aq", dict(learner="aq", train_attack="pgd",
                      train_eps="8/255")),
          ("tafl", dict(learner="tafl", train_attack="pgd",
                        train_eps="8/255"))),
    cases="clean/clean,clean/adv",
    attacks=(("pgd", "8/255"), ("mi_fgsm", "8/255"),
             # advertorch's default c0 = 1e-3
             AttackSpec.of("cw_l2", **dict(CW_TAFL_REFERENCE, c=1e-3)),
             AttackSpec.of("cw_l2", tag="cw_l2_strong", **CW_STRONG)),
    episodes=2000, inner_steps=10, paper=_results("8/255"), curves=False,
    kde=True, masking_check=True))
