r"""ADML, "Adversarial Meta-Learning" (Yin, Tang, Xu, Wang; arXiv:1806.03316),
Tables 1-4: MAML, MAML-AD, ADML and Matching Networks (FCE), 5-way 1/5-shot
on MiniImageNet and CIFAR-100 (CIFAR-FS split), FGSM at test with ε 2 and 0.2
on the 0-255 scale (2/255 and 0.2/255 here), all support × query cases.

  python -m launch.reproduce --experiment=adml_table1 --data_dir=DATA \
      --workdir=/ckpt/adml_table1     # MiniImageNet 1-shot
  python -m launch.reproduce --experiment=adml_table2 --data_dir=DATA \
      --workdir=/ckpt/adml_table2     # MiniImageNet 5-shot
  python -m launch.reproduce --experiment=adml_table3 --workdir=/ckpt/adml3
                                      # CIFAR-FS 1-shot (tfds or local files)
  python -m launch.reproduce --experiment=adml_table4 --workdir=/ckpt/adml4
                                      # CIFAR-FS 5-shot
  python -m launch.reproduce --experiment=adml_table1 --shrink \
      --workdir=/tmp/adml_shrunk        # the whole pipeline, offline, seconds

The published cells were transcribed from the paper's text by a script that
parsed the tables; a test checks their count and a few values.
"""

from __future__ import annotations

from typing import Tuple

from advmeta_jax.experiments.base import ExperimentConfig
from advmeta_jax.experiments.base import PaperResult
from advmeta_jax.experiments.base import register


# ADML (Yin et al. 2018), Tables 1-4: 5-way, FGSM at test, meta-trained with
# FGSM ε = 2/255. support "adv" = "Adversarial", "mixed" = "40%"; the
# learner "matchingnet" is the paper's Matching Nets (FCE variant).
def _adml_table(number: int, dataset: str, k_shot: int, rows
                ) -> Tuple[PaperResult, ...]:
  """Rows `(learner, support, cells)`, cells in the paper's column order:
  ε=2 clean query, ε=2 adversarial query, ε=0.2 clean, ε=0.2 adversarial."""
  columns = (("2/255", "clean"), ("2/255", "adv"), ("0.2/255", "clean"),
             ("0.2/255", "adv"))
  return tuple(
      PaperResult(f"ADML Table {number}", dataset, k_shot, learner, "fgsm",
                  eps, support, query, acc, ci)
      for learner, support, cells in rows
      for (eps, query), (acc, ci) in zip(columns, cells))


ADML_RESULTS: Tuple[PaperResult, ...] = (
    _adml_table(1, "mini_imagenet", 1, (
        ("maml", "clean", ((48.47, 1.78), (28.63, 1.54), (48.47, 1.78), (42.13, 1.75))),
        ("maml", "adv", ((28.93, 1.62), (30.73, 1.66), (42.23, 1.85), (40.17, 1.76))),
        ("maml_ad", "clean", ((43.13, 1.88), (32.33, 1.74), (43.13, 1.88), (36.8, 1.76))),
        ("maml_ad", "adv", ((32.47, 1.6), (37.87, 1.74), (37.63, 1.64), (37.13, 1.75))),
        ("adml", "clean", ((48.0, 1.87), (43.0, 1.88), (48.0, 1.87), (43.2, 1.7))),
        ("adml", "adv", ((40.1, 1.73), (40.7, 1.74), (44.0, 1.83), (41.2, 1.75))),
        ("matchingnet", "clean", ((43.87, 0.41), (30.02, 0.39), (43.88, 0.48), (36.14, 0.4))),
        ("matchingnet", "adv", ((30.45, 0.44), (30.8, 0.43), (36.58, 0.49), (35.03, 0.39))),
    )) +
    _adml_table(2, "mini_imagenet", 5, (
        ("maml", "clean", ((61.45, 0.91), (36.65, 0.88), (61.47, 0.91), (53.05, 0.86))),
        ("maml", "mixed", ((56.74, 0.93), (43.05, 0.86), (61.98, 0.89), (54.67, 0.91))),
        ("maml", "adv", ((41.49, 0.95), (45.46, 0.97), (55.19, 0.95), (53.33, 0.92))),
        ("maml_ad", "clean", ((57.13, 0.96), (41.65, 0.92), (57.09, 0.96), (49.71, 0.88))),
        ("maml_ad", "mixed", ((54.07, 0.91), (48.74, 0.91), (56.52, 0.9), (52.08, 0.9))),
        ("maml_ad", "adv", ((43.21, 0.91), (52.07, 0.96), (51.23, 0.9), (51.36, 0.94))),
        ("adml", "clean", ((59.38, 0.99), (57.03, 0.98), (59.4, 0.99), (56.07, 0.96))),
        ("adml", "mixed", ((58.12, 0.9), (55.22, 0.98), (59.67, 0.89), (56.49, 0.92))),
        ("adml", "adv", ((58.06, 0.96), (55.27, 0.92), (57.44, 0.88), (54.47, 0.93))),
        ("matchingnet", "clean", ((55.99, 0.47), (33.73, 0.39), (55.55, 0.44), (44.91, 0.4))),
        ("matchingnet", "mixed", ((49.88, 0.45), (35.67, 0.44), (52.72, 0.45), (45.65, 0.42))),
        ("matchingnet", "adv", ((36.24, 0.45), (37.91, 0.4), (47.77, 0.45), (46.19, 0.44))),
    )) +
    _adml_table(3, "cifar_fs", 1, (
        ("maml", "clean", ((57.67, 1.76), (26.4, 1.55), (57.67, 1.76), (43.3, 1.68))),
        ("maml", "adv", ((28.13, 1.56), (28.23, 1.64), (43.03, 1.76), (39.0, 1.7))),
        ("maml_ad", "clean", ((52.7, 1.89), (36.2, 1.65), (52.7, 1.89), (39.17, 1.82))),
        ("maml_ad", "adv", ((37.27, 1.72), (41.67, 1.86), (37.8, 1.7), (37.6, 1.78))),
        ("adml", "clean", ((55.7, 2.0), (50.9, 1.84), (55.7, 2.0), (49.3, 1.76))),
        ("adml", "adv", ((54.5, 1.69), (50.6, 1.83), (52.9, 1.92), (45.0, 1.79))),
        ("matchingnet", "clean", ((47.94, 0.56), (25.06, 0.36), (47.68, 0.52), (39.03, 0.51))),
        ("matchingnet", "adv", ((24.82, 0.46), (27.72, 0.43), (40.08, 0.57), (37.79, 0.44))),
    )) +
    _adml_table(4, "cifar_fs", 5, (
        ("maml", "clean", ((74.03, 0.89), (31.29, 0.78), (74.03, 0.89), (54.15, 1.0))),
        ("maml", "mixed", ((65.69, 0.92), (36.14, 0.84), (68.99, 0.94), (55.79, 0.98))),
        ("maml", "adv", ((33.34, 0.9), (43.66, 0.86), (59.08, 1.0), (53.93, 0.96))),
        ("maml_ad", "clean", ((67.71, 0.96), (44.61, 0.9), (67.73, 0.96), (56.07, 0.95))),
        ("maml_ad", "mixed", ((64.85, 0.9), (53.59, 0.88), (65.93, 0.93), (57.96, 0.93))),
        ("maml_ad", "adv", ((48.37, 0.99), (58.92, 0.97), (59.45, 1.0), (56.33, 0.98))),
        ("adml", "clean", ((69.9, 0.88), (65.68, 0.87), (69.9, 0.88), (59.15, 0.9))),
        ("adml", "mixed", ((67.61, 0.93), (62.83, 0.88), (68.24, 0.89), (60.44, 0.93))),
        ("adml", "adv", ((65.26, 0.96), (64.18, 0.86), (61.93, 0.95), (59.8, 0.84))),
        ("matchingnet", "clean", ((62.95, 0.46), (28.14, 0.37), (62.58, 0.49), (47.14, 0.45))),
        ("matchingnet", "mixed", ((54.39, 0.48), (28.64, 0.36), (57.86, 0.48), (47.01, 0.48))),
        ("matchingnet", "adv", ((29.4, 0.44), (32.77, 0.42), (53.34, 0.52), (46.5, 0.46))),
    ))
)

# ADML's Matching Nets are the FCE version of the implementation it cites
# (gitabcworld/MatchingNetworks; fce.py, --fce=adml), trained as that code
# trains on MiniImageNet: 10 tasks per batch, 500 epochs of 100 batches
# (50,000 meta-steps), Adam 1e-3 with weight decay 1e-4, the step size
# halved every 2,000 iterations, a 64-filter embedding.
_MATCHING_TRAIN = dict(learner="matchingnet", fce="adml", filters=64,
                       task_batch_size=10, num_steps=50000, meta_lr=1e-3,
                       meta_lr_halve_every=2000, meta_weight_decay=1e-4)
_ADML_LEARNERS = (("maml", dict(learner="maml")),
                  ("maml_ad", dict(learner="maml_ad", train_eps="2/255")),
                  ("adml", dict(learner="adml", train_eps="2/255")),
                  ("matchingnet", _MATCHING_TRAIN))
# MAML's MiniImageNet/CIFAR-FS setup, which ADML follows: 60k meta-iterations,
# 4 tasks per batch for 1-shot and 2 for 5-shot, 5 inner steps (10 at test),
# α = 0.01, β = 1e-3, 15 queries per class in training (k at test, as
# Finn's code); FGSM ε = 2/255 in meta-training (the rows that train against
# an attack).
PAPER_TRAIN = dict(n_way=5, q_query=15, inner_lr=0.01, inner_steps=5,
                   meta_lr=1e-3, filters=32, num_steps=60000,
                   checkpoint_every=1000, log_every=100)


def _adml_experiment(table: int, dataset: str, k_shot: int
                     ) -> ExperimentConfig:
  return ExperimentConfig(
      name=f"adml_table{table}",
      description=(f"ADML Table {table}: {dataset}, 5-way {k_shot}-shot; "
                   "MAML, MAML-AD, ADML, Matching Nets; FGSM ε 2/255 and "
                   "0.2/255; all support × query cases."),
      train=dict(PAPER_TRAIN, dataset=dataset, k_shot=k_shot,
                 task_batch_size=4 if k_shot == 1 else 2),
      rows=_ADML_LEARNERS,
      cases="all",
      attacks=(("fgsm", "2/255"), ("fgsm", "0.2/255")),
      # Finn's MAML code, which ADML ran, tests on k support and k query
      # images per class (its data generator draws 2k per class), 600
      # episodes: the paper's CIs fit 5 queries per 1-shot task.
      episodes=600, inner_steps=10, test_q_query=k_shot,
      paper=tuple(r for r in ADML_RESULTS
                  if r.table == f"ADML Table {table}"),
      curves=True, adversarial_curves=True, kde=False, masking_check=True)


for _table, _dataset, _k_shot in ((1, "mini_imagenet", 1), (2, "mini_imagenet", 5),
                                  (3, "cifar_fs", 1), (4, "cifar_fs", 5)):
  register(_adml_experiment(_table, _dataset, _k_shot))
