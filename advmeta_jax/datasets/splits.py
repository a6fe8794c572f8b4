"""The published class splits, and the checks of a split read from disk.

CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form
solvers", ICLR 2019): 64 / 16 / 20 of CIFAR-100's fine classes, in the order of
the authors' R2-D2 split files `cifar100/splits/bertinetto/{train,val,test}.txt`
(the same lists, in the same order, as torchmeta's
`torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json`).

MiniImageNet (Ravi & Larochelle, "Optimization as a model for few-shot
learning", ICLR 2017): 64 / 16 / 20 ImageNet synsets (WordNet ids), sorted;
the classes of Ravi & Larochelle's `{train,val,test}.csv`.

Every format that carries its own class list (split files, per-split files) is
checked against these tables: a difference is logged as a warning naming the
missing and unexpected classes, and the file's list is used.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from absl import logging
import numpy as np

# --- CIFAR-FS -----------------------------------------------------------------

CIFAR_FS_TRAIN_CLASSES = (
    "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower",
    "tulip", "bottle", "bowl", "can", "cup", "plate", "apple", "mushroom",
    "orange", "pear", "clock", "keyboard", "chair", "couch", "bee",
    "caterpillar", "cockroach", "bear", "lion", "tiger", "wolf", "bridge",
    "castle", "house", "road", "skyscraper", "cloud", "forest", "mountain",
    "elephant", "kangaroo", "porcupine", "possum", "raccoon", "skunk",
    "lobster", "spider", "boy", "girl", "dinosaur", "lizard", "snake",
    "turtle", "hamster", "mouse", "rabbit", "shrew", "squirrel", "oak_tree",
    "palm_tree", "pine_tree", "willow_tree", "bus", "train", "lawn_mower",
    "streetcar", "tank",
)
CIFAR_FS_VAL_CLASSES = (
    "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle",
    "butterfly", "sea", "camel", "cattle", "crab", "crocodile", "maple_tree",
    "motorcycle", "tractor",
)
CIFAR_FS_TEST_CLASSES = (
    "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table",
    "wardrobe", "leopard", "plain", "chimpanzee", "fox", "snail", "worm",
    "baby", "man", "woman", "bicycle", "pickup_truck", "rocket",
)
CIFAR_FS_SPLITS = {"train": CIFAR_FS_TRAIN_CLASSES,
                   "val": CIFAR_FS_VAL_CLASSES,
                   "test": CIFAR_FS_TEST_CLASSES}

# CIFAR-100's fine label names in label-id order (the dataset's
# `fine_label_names.txt`: the names sorted alphabetically).
CIFAR100_FINE_LABELS = tuple(sorted(
    CIFAR_FS_TRAIN_CLASSES + CIFAR_FS_VAL_CLASSES + CIFAR_FS_TEST_CLASSES))

# CIFAR-100's 20 superclasses (coarse labels, id order = sorted) and their
# fine classes; torchmeta's `data.hdf5` groups the fine classes by these.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear",
                             "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone",
                                     "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road",
                                      "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain",
                                     "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee",
                                       "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree",
              "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE_LABELS = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_COARSE_OF = {fine: coarse
                      for coarse, fines in CIFAR100_SUPERCLASSES.items()
                      for fine in fines}
CIFAR_FS_IMAGES_PER_CLASS = 600

# --- MiniImageNet ---------------------------------------------------------------

MINI_IMAGENET_TRAIN_CLASSES = (
    "n01532829", "n01558993", "n01704323", "n01749939", "n01770081",
    "n01843383", "n01910747", "n02074367", "n02089867", "n02091831",
    "n02101006", "n02105505", "n02108089", "n02108551", "n02108915",
    "n02111277", "n02113712", "n02120079", "n02165456", "n02457408",
    "n02606052", "n02687172", "n02747177", "n02795169", "n02823428",
    "n02966193", "n03017168", "n03047690", "n03062245", "n03207743",
    "n03220513", "n03337140", "n03347037", "n03400231", "n03476684",
    "n03527444", "n03676483", "n03838899", "n03854065", "n03888605",
    "n03908618", "n03924679", "n03998194", "n04067472", "n04243546",
    "n04251144", "n04258138", "n04275548", "n04296562", "n04389033",
    "n04435653", "n04443257", "n04509417", "n04515003", "n04596742",
    "n04604644", "n04612504", "n06794110", "n07584110", "n07697537",
    "n07747607", "n09246464", "n13054560", "n13133613",
)
MINI_IMAGENET_VAL_CLASSES = (
    "n01855672", "n02091244", "n02114548", "n02138441", "n02174001",
    "n02950826", "n02971356", "n02981792", "n03075370", "n03417042",
    "n03535780", "n03584254", "n03770439", "n03773504", "n03980874",
    "n09256479",
)
MINI_IMAGENET_TEST_CLASSES = (
    "n01930112", "n01981276", "n02099601", "n02110063", "n02110341",
    "n02116738", "n02129165", "n02219486", "n02443484", "n02871525",
    "n03127925", "n03146219", "n03272010", "n03544143", "n03775546",
    "n04146614", "n04149813", "n04418357", "n04522168", "n07613480",
)
MINI_IMAGENET_SPLITS = {"train": MINI_IMAGENET_TRAIN_CLASSES,
                        "val": MINI_IMAGENET_VAL_CLASSES,
                        "test": MINI_IMAGENET_TEST_CLASSES}
MINI_IMAGENET_IMAGES_PER_CLASS = 600

# --- Omniglot -------------------------------------------------------------------

OMNIGLOT_NUM_VAL_CLASSES = 100
# Characters of the real archives: images_background (30 alphabets) and
# images_evaluation (20 alphabets), 20 drawings each.
OMNIGLOT_SPLIT_SIZES = {"train": 864, "val": 100, "test": 659}
OMNIGLOT_IMAGES_PER_CLASS = 20


# --- checks -------------------------------------------------------------------


def class_differences(found: Sequence[str],
                      expected: Sequence[str]) -> Tuple[list, list]:
  """`(missing, unexpected)`: expected classes not found, found not expected."""
  found_set, expected_set = set(found), set(expected)
  return (sorted(expected_set - found_set), sorted(found_set - expected_set))


def ordered_classes(found: Sequence[str], expected: Sequence[str],
                    what: str) -> Tuple[str, ...]:
  """The class order of a split read from disk.

  Args:
    found: the classes the files hold for this split.
    expected: the published split's classes, in their order.
    what: the split and file, for the warning.

  Returns:
    `expected` if `found` holds exactly those classes (so that every format
    numbers the classes alike); otherwise `found`, sorted, after a warning
    that lists the differences.
  """
  missing, unexpected = class_differences(found, expected)
  if not missing and not unexpected:
    return tuple(expected)
  logging.warning(
      "%s: the class list differs from the published split (%d classes "
      "expected, %d found): missing %s; unexpected %s. Using the classes "
      "found.", what, len(expected), len(set(found)), _head(missing),
      _head(unexpected))
  return tuple(sorted(set(found)))


def check_counts(counts: np.ndarray, class_names: Sequence[str],
                 expected: int, what: str) -> None:
  """Warns when classes do not hold the published number of images.

  Smaller data (a subset, or test fixtures) is accepted; the warning says how
  it differs so that a truncated copy of the real dataset is noticed.
  """
  off = [(c, int(n)) for c, n in zip(class_names, counts) if n != expected]
  if off:
    logging.warning(
        "%s: %d of %d classes do not hold the published %d images (e.g. %s); "
        "%d images in all.", what, len(off), len(class_names), expected,
        ", ".join(f"{c!r}: {n}" for c, n in off[:3]), int(np.sum(counts)))


def _head(items: Sequence[str], n: int = 8) -> str:
  shown = ", ".join(repr(i) for i in items[:n])
  more = f" and {len(items) - n} more" if len(items) > n else ""
  return f"[{shown}{more}]"


def expected_tables() -> Dict[str, Dict[str, Tuple[str, ...]]]:
  """The published class lists by dataset and split."""
  return {"cifar_fs": dict(CIFAR_FS_SPLITS),
          "mini_imagenet": dict(MINI_IMAGENET_SPLITS)}
