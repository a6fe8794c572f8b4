"""The published class splits, and the checks of a split read from disk.

CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form
solvers", ICLR 2019): 64 / 16 / 20 of CIFAR-100's fine classes, in the order of
the authors' R2-D2 split files `cifar100/splits/bertinetto/{train,val,test}.txt`
(the same lists, in the same order, as torchmeta's
`torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json`).

MiniImageNet (Ravi & Larochelle, "Optimization as a model for few-shot
learning", ICLR 2017): 64 / 16 / 20 ImageNet synsets (WordNet ids), sorted;
the classes of Ravi & Larochelle's `{train,val,test}.csv`.

FC100 (Oreshkin et al., "TADAM: Task dependent adaptive metric for improved
few-shot learning", NeurIPS 2018): CIFAR-100 split by superclass, 12 / 4 / 4
superclasses (60 / 20 / 20 fine classes). The superclasses are those of
TADAM's `datasets/create_dataset_cifar100.py` (ServiceNow/TADAM: `class_split`,
coarse ids train {1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19}, val {8, 11, 13,
16}, test {0, 7, 12, 14}), the same lists as torchmeta's
`torchmeta/datasets/assets/cifar100/fc100/{train,val,test}.json`. A split's
classes are its superclasses' fine classes, superclass by superclass in the
JSON order, fine classes sorted within each (torchmeta's order).

tieredImageNet (Ren et al., "Meta-learning for semi-supervised few-shot
classification", ICLR 2018): 351 / 97 / 160 ImageNet classes in 20 / 6 / 8
categories (the rows of `fewshot/data/tiered_imagenet_split/{train,val,test}
.csv` in renmengye/few-shot-ssl-public). The files carry the split (one file
per split) with their own class names, so only the counts are checked.

CUB (Wah et al., CUB-200-2011) with the split of Chen et al. ("A Closer Look
at Few-shot Classification", ICLR 2019): the 200 class folders sorted by name,
index i (from 0) goes to train if i % 2 == 0, val if i % 4 == 1, test if
i % 4 == 3 (wyharveychen/CloserLookFewShot, `filelists/CUB/
write_CUB_filelist.py`); 100 / 50 / 50 classes, the same lists as torchmeta's
`torchmeta/datasets/assets/cub/{train,val,test}.json`.

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

# --- FC100 ----------------------------------------------------------------------

FC100_SUPERCLASSES = {
    "train": ("fish", "flowers", "food_containers", "fruit_and_vegetables",
              "household_electrical_devices", "household_furniture",
              "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
              "reptiles", "trees", "vehicles_1", "vehicles_2"),
    "val": ("large_carnivores", "large_omnivores_and_herbivores",
            "non-insect_invertebrates", "small_mammals"),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}
FC100_SPLITS = {
    split: tuple(fine for coarse in coarses
                 for fine in CIFAR100_SUPERCLASSES[coarse])
    for split, coarses in FC100_SUPERCLASSES.items()}

# --- tieredImageNet -----------------------------------------------------------

TIERED_IMAGENET_NUM_CLASSES = {"train": 351, "val": 97, "test": 160}
TIERED_IMAGENET_NUM_CATEGORIES = {"train": 20, "val": 6, "test": 8}
TIERED_IMAGENET_NUM_IMAGES = {"train": 448695, "val": 124261, "test": 206209}

# --- CUB-200-2011 -----------------------------------------------------------------

CUB_CLASSES = (
    "001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
    "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet",
    "007.Parakeet_Auklet", "008.Rhinoceros_Auklet", "009.Brewer_Blackbird",
    "010.Red_winged_Blackbird", "011.Rusty_Blackbird",
    "012.Yellow_headed_Blackbird", "013.Bobolink", "014.Indigo_Bunting",
    "015.Lazuli_Bunting", "016.Painted_Bunting", "017.Cardinal",
    "018.Spotted_Catbird", "019.Gray_Catbird", "020.Yellow_breasted_Chat",
    "021.Eastern_Towhee", "022.Chuck_will_Widow", "023.Brandt_Cormorant",
    "024.Red_faced_Cormorant", "025.Pelagic_Cormorant", "026.Bronzed_Cowbird",
    "027.Shiny_Cowbird", "028.Brown_Creeper", "029.American_Crow",
    "030.Fish_Crow", "031.Black_billed_Cuckoo", "032.Mangrove_Cuckoo",
    "033.Yellow_billed_Cuckoo", "034.Gray_crowned_Rosy_Finch",
    "035.Purple_Finch", "036.Northern_Flicker", "037.Acadian_Flycatcher",
    "038.Great_Crested_Flycatcher", "039.Least_Flycatcher",
    "040.Olive_sided_Flycatcher", "041.Scissor_tailed_Flycatcher",
    "042.Vermilion_Flycatcher", "043.Yellow_bellied_Flycatcher",
    "044.Frigatebird", "045.Northern_Fulmar", "046.Gadwall",
    "047.American_Goldfinch", "048.European_Goldfinch",
    "049.Boat_tailed_Grackle", "050.Eared_Grebe", "051.Horned_Grebe",
    "052.Pied_billed_Grebe", "053.Western_Grebe", "054.Blue_Grosbeak",
    "055.Evening_Grosbeak", "056.Pine_Grosbeak", "057.Rose_breasted_Grosbeak",
    "058.Pigeon_Guillemot", "059.California_Gull", "060.Glaucous_winged_Gull",
    "061.Heermann_Gull", "062.Herring_Gull", "063.Ivory_Gull",
    "064.Ring_billed_Gull", "065.Slaty_backed_Gull", "066.Western_Gull",
    "067.Anna_Hummingbird", "068.Ruby_throated_Hummingbird",
    "069.Rufous_Hummingbird", "070.Green_Violetear", "071.Long_tailed_Jaeger",
    "072.Pomarine_Jaeger", "073.Blue_Jay", "074.Florida_Jay", "075.Green_Jay",
    "076.Dark_eyed_Junco", "077.Tropical_Kingbird", "078.Gray_Kingbird",
    "079.Belted_Kingfisher", "080.Green_Kingfisher", "081.Pied_Kingfisher",
    "082.Ringed_Kingfisher", "083.White_breasted_Kingfisher",
    "084.Red_legged_Kittiwake", "085.Horned_Lark", "086.Pacific_Loon",
    "087.Mallard", "088.Western_Meadowlark", "089.Hooded_Merganser",
    "090.Red_breasted_Merganser", "091.Mockingbird", "092.Nighthawk",
    "093.Clark_Nutcracker", "094.White_breasted_Nuthatch",
    "095.Baltimore_Oriole", "096.Hooded_Oriole", "097.Orchard_Oriole",
    "098.Scott_Oriole", "099.Ovenbird", "100.Brown_Pelican",
    "101.White_Pelican", "102.Western_Wood_Pewee", "103.Sayornis",
    "104.American_Pipit", "105.Whip_poor_Will", "106.Horned_Puffin",
    "107.Common_Raven", "108.White_necked_Raven", "109.American_Redstart",
    "110.Geococcyx", "111.Loggerhead_Shrike", "112.Great_Grey_Shrike",
    "113.Baird_Sparrow", "114.Black_throated_Sparrow", "115.Brewer_Sparrow",
    "116.Chipping_Sparrow", "117.Clay_colored_Sparrow", "118.House_Sparrow",
    "119.Field_Sparrow", "120.Fox_Sparrow", "121.Grasshopper_Sparrow",
    "122.Harris_Sparrow", "123.Henslow_Sparrow", "124.Le_Conte_Sparrow",
    "125.Lincoln_Sparrow", "126.Nelson_Sharp_tailed_Sparrow",
    "127.Savannah_Sparrow", "128.Seaside_Sparrow", "129.Song_Sparrow",
    "130.Tree_Sparrow", "131.Vesper_Sparrow", "132.White_crowned_Sparrow",
    "133.White_throated_Sparrow", "134.Cape_Glossy_Starling",
    "135.Bank_Swallow", "136.Barn_Swallow", "137.Cliff_Swallow",
    "138.Tree_Swallow", "139.Scarlet_Tanager", "140.Summer_Tanager",
    "141.Artic_Tern", "142.Black_Tern", "143.Caspian_Tern", "144.Common_Tern",
    "145.Elegant_Tern", "146.Forsters_Tern", "147.Least_Tern",
    "148.Green_tailed_Towhee", "149.Brown_Thrasher", "150.Sage_Thrasher",
    "151.Black_capped_Vireo", "152.Blue_headed_Vireo", "153.Philadelphia_Vireo",
    "154.Red_eyed_Vireo", "155.Warbling_Vireo", "156.White_eyed_Vireo",
    "157.Yellow_throated_Vireo", "158.Bay_breasted_Warbler",
    "159.Black_and_white_Warbler", "160.Black_throated_Blue_Warbler",
    "161.Blue_winged_Warbler", "162.Canada_Warbler", "163.Cape_May_Warbler",
    "164.Cerulean_Warbler", "165.Chestnut_sided_Warbler",
    "166.Golden_winged_Warbler", "167.Hooded_Warbler", "168.Kentucky_Warbler",
    "169.Magnolia_Warbler", "170.Mourning_Warbler", "171.Myrtle_Warbler",
    "172.Nashville_Warbler", "173.Orange_crowned_Warbler", "174.Palm_Warbler",
    "175.Pine_Warbler", "176.Prairie_Warbler", "177.Prothonotary_Warbler",
    "178.Swainson_Warbler", "179.Tennessee_Warbler", "180.Wilson_Warbler",
    "181.Worm_eating_Warbler", "182.Yellow_Warbler", "183.Northern_Waterthrush",
    "184.Louisiana_Waterthrush", "185.Bohemian_Waxwing", "186.Cedar_Waxwing",
    "187.American_Three_toed_Woodpecker", "188.Pileated_Woodpecker",
    "189.Red_bellied_Woodpecker", "190.Red_cockaded_Woodpecker",
    "191.Red_headed_Woodpecker", "192.Downy_Woodpecker", "193.Bewick_Wren",
    "194.Cactus_Wren", "195.Carolina_Wren", "196.House_Wren", "197.Marsh_Wren",
    "198.Rock_Wren", "199.Winter_Wren", "200.Common_Yellowthroat",
)
CUB_NUM_IMAGES = 11788


def cub_split(classes: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
  """Chen et al.'s rule on a list of class folders: index i of the sorted list
  to train if i % 2 == 0, val if i % 4 == 1, test if i % 4 == 3."""
  ordered = sorted(classes)
  return {"train": tuple(c for i, c in enumerate(ordered) if i % 2 == 0),
          "val": tuple(c for i, c in enumerate(ordered) if i % 4 == 1),
          "test": tuple(c for i, c in enumerate(ordered) if i % 4 == 3)}


CUB_SPLITS = cub_split(CUB_CLASSES)

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


def check_total(found: int, expected: int, what: str, noun: str) -> None:
  """Warns when a split holds `found` classes (images, categories), not the
  published `expected`; as `check_counts`, smaller data loads."""
  if found != expected:
    logging.warning("%s: %d %s, not the published %d.", what, found, noun,
                    expected)


def _head(items: Sequence[str], n: int = 8) -> str:
  shown = ", ".join(repr(i) for i in items[:n])
  more = f" and {len(items) - n} more" if len(items) > n else ""
  return f"[{shown}{more}]"


def expected_tables() -> Dict[str, Dict[str, Tuple[str, ...]]]:
  """The published class lists by dataset and split."""
  return {"cifar_fs": dict(CIFAR_FS_SPLITS),
          "mini_imagenet": dict(MINI_IMAGENET_SPLITS),
          "fc100": dict(FC100_SPLITS), "cub": dict(CUB_SPLITS)}
