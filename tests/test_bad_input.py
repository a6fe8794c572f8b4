"""Bad input gets one line that says what was wrong and what is allowed.

`BAD_INPUT` is the list: every row is a command and the one line it must
print; docs/reliability.md shows it as a table. The rows run through the launchers' own flag parser
and `main`, one process per launcher (tests/bad_input_driver.py), so the
table costs a few processes, not one per row; one row runs as the user types
it (`python -m ...`) to prove the exit itself.
"""

import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from advmeta_jax import attacks
from advmeta_jax import datasets
from advmeta_jax import experiments
from advmeta_jax import learners

REPO = pathlib.Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "bad_input_driver.py"
TIMEOUT_S = 300


# (command, the one line it prints). `$TMP` is a scratch directory (`_prepare`);
# in a message, " … " separates the parts the test checks (paths differ from
# machine to machine). docs/reliability.md shows this list as its bad-input
# table (`markdown_table`, checked below; `python -m tests.test_bad_input`
# prints it).
BAD_INPUT = [
    ('python -m launch.train --workdir=$TMP/a --k_shot=0',
     'error: k_shot must be a positive integer, got 0.'),
    ('python -m launch.train --workdir=$TMP/b --learner=reptile',
     'FATAL Flags parsing error: flag --learner=reptile: value should be one of <adml|anil|aq|maml|maml_ad|matchingnet|metaoptnet|protonet|r2d2|tafl>'),
    ('python -m launch.train --workdir=$TMP/c --train_eps=300/255',
     "error: train_eps must be at most 1 (images are in [0, 1]), got '300/255'"),
    ('python -m launch.train --workdir=$TMP/d --image_size=12',
     'error: image_size must be at least 16 (conv4 pools four times by 2), got 12.'),
    ('python -m launch.train --workdir=$TMP/e --parallel_tasks=3',
     'error: parallel_tasks must be 0 (the whole batch) or a divisor of task_batch_size=4, got 3.'),
    ('python -m launch.train --workdir=$TMP/f --num_devices=4',
     'error: num_devices=4, but only 1 cpu device(s) are visible; use 0 (all) or at most 1.'),
    ('python -m launch.train --workdir=$TMP/g --learner=adml --robust=aq',
     "error: robust='aq' does not apply to learner 'adml', which has its own adversarial loss; robust applies to: anil, maml, matchingnet, metaoptnet, protonet, r2d2"),
    ('python -m launch.train --workdir=$TMP/h --train_attack=cw_l2',
     'FATAL Flags parsing error: flag --train_attack=cw_l2: value should be one of <apgd|fgsm|mi_fgsm|pgd>'),
    ('python -m launch.train --workdir=$TMP/i --tafl_delta=0',
     'error: tafl_delta must be a finite number > 0, got 0.0.'),
    ('python -m launch.train --k_shot=1',
     'FATAL Flags parsing error: flag --workdir=None: Flag --workdir must have a value other than None.'),
    ('python -m launch.train --workdir=$TMP/j --eval_episodes=-1',
     'error: eval_episodes must be >= 0 (an integer), got -1.'),
    ('python -m launch.train --workdir=$TMP/l --train_step_size=0',
     "error: train_step_size must be > 0, got '0'."),
    ('python -m launch.train --workdir=$TMP/m --meta_lr=nan',
     'error: meta_lr must be a finite number > 0, got nan.'),
    ('python -m launch.train --workdir=$TMP/o --num_steps=0',
     'error: num_steps must be a positive integer, got 0.'),
    ('python -m launch.train --workdir=$TMP/p --adv_fraction=1.5',
     'error: adv_fraction must be in (0, 1], got 1.5.'),
    ('python -m launch.train --workdir=$TMP/q --n_way=6',
     'error: … n_way=6 … 5 classes … digits/train'),
    ('python -m launch.train --workdir=$TMP/r --dataset=mini_imagenet --data_dir=$TMP/notarun',
     'error: mini_imagenet/train'),
    ('python -m launch.train --workdir=$TMP/s --dataset=foo',
     'FATAL Flags parsing error: flag --dataset=foo: value should be one of <cifar_fs|cub|digits|fc100|image_folder|mini_imagenet|omniglot|tiered_imagenet>'),
    ('python -m launch.train --workdir=$TMP/t --inner_lr=-1',
     'error: inner_lr must be a finite number > 0, got -1.0.'),
    ('python -m launch.train --workdir=$TMP/u --dataset=mini_imagenet',
     "error: dataset 'mini_imagenet' is read from a local directory: pass --data_dir."),
    ('python -m launch.train --workdir=$TMP/v --q_query=500',
     "error: digits/train: class '0' has 178 images, fewer than k_shot + q_query = 501 … Lower k_shot or q_query to at most 177 images in all."),
    ('python -m launch.train --workdir=$TMP/w --train_attack=pgd',
     "error: learner 'maml' trains on clean tasks and uses no training attack, so --train_attack would be ignored: drop them, or choose a robust learner (aq, tafl, adml, maml_ad) or --robust=aq|tafl|trades."),
    ('python -m launch.train --workdir=$TMP/x --image_size=1024',
     "error: image_size must be at most 512 (the split and a step's episodes are held in memory at that size), got 1024."),
    ('python -m launch.train --workdir=$TMP/afile',
     "error: --workdir=' … afile' is a file, not a directory: give a directory (it is created if missing)."),
    ('python -m launch.evaluate --workdir=$TMP/notarun',
     "error: no config.json in workdir … notarun': is it the --workdir of a training run?"),
    ('python -m launch.evaluate --workdir=$TMP/badjson',
     'error: … badjson/config.json is not valid JSON … and no checkpoint in … holds a copy of the config'),
    ('python -m launch.evaluate --workdir=$TMP/notarun --attacks=deepfool',
     "error: unknown attack 'deepfool'; choose one of: apgd, apgd_t, autoattack, cw_l2, fab, fgsm, mi_fgsm, pgd, square."),
    ('python -m launch.evaluate --workdir=$TMP/notarun --attacks=autoattack --square_queries=0',
     'error: square_queries must be a positive integer, got 0.'),
    ('python -m launch.evaluate --workdir=$TMP/notarun --attacks=pgd --eps=2',
     "error: eps must be at most 1 (images are in [0, 1]), got '2'; for 2 grey levels write 2/255."),
    ('python -m launch.evaluate --workdir=$TMP/notarun --kde_threshold=nan',
     'error: --kde_threshold must be a finite number, got nan.'),
    ('python -m launch.evaluate --workdir=$TMP/notarun --data_dir=$TMP/afile',
     "error: --data_dir=' … afile' is a file: give the directory that holds the dataset's files."),
    ('python -m launch.evaluate --workdir=$TMP/notarun --attacks=pgd --attack_steps=0',
     'error: attack_steps must be a positive integer, got 0.'),
    ('python -m launch.evaluate --workdir=$TMP/notarun --cases=nope',
     "error: bad test case 'nope': write support/query, e.g. clean/adv, with support in ('clean', 'adv', 'mixed') and query in ('clean', 'adv'); or 'all' or 'robust'."),
    ('python -m launch.reproduce --experiment=nope --workdir=$TMP/k',
     'FATAL Flags parsing error: flag --experiment=nope: value should be one of <adml_table1|adml_table2|adml_table3|adml_table4|aq_mini_imagenet_1shot|aq_mini_imagenet_5shot|aq_cifar_fs_1shot|aq_cifar_fs_5shot|digits_robust|digits_beyond|tafl_table1|tafl_table1_aq_attacks>'),
    ('python -m launch.reproduce --experiment=adml_table1 --workdir=$TMP/k2',
     "error: dataset 'mini_imagenet' is read from a local directory: pass --data_dir."),
    ('python -m launch.sweep --workdir=$TMP/z --learner=maml',
     'error: the sweep trains TAFL (γ and k are its hyperparameters), not --learner=maml: drop --learner.'),
    ('python -m launch.sweep --workdir=$TMP/z2 --gammas=a,b',
     "error: --gammas must be numbers, got ['a', 'b']."),
    ('python -m launch.prepare_data --dataset=mini_imagenet',
     'error: give --data_dir, the directory that holds the mini_imagenet files to prepare.'),
    ('python -m launch.prepare_data --dataset=mini_imagenet --data_dir=$TMP/notarun --image_size=8',
     'error: image_size must be at least 16 (conv4 pools four times by 2), got 8.'),
    ('python -m launch.prepare_data --dataset=digits',
     'error: --dataset=digits has no files to prepare; choose one of: cifar_fs, cub, fc100, mini_imagenet, omniglot, tiered_imagenet.'),
    ('python -m launch.reproduce --experiment=digits_robust --shrink --workdir=$TMP/r3 --data_dir=$TMP/afile',
     "error: --data_dir=' … afile' is a file: give the directory that holds the dataset's files."),
    ('python -m launch.reproduce --experiment=digits_robust --workdir=$TMP/r4 --test_episodes=0',
     'error: test_episodes must be a positive integer, got 0.'),
    ('python -m launch.evaluate --workdir=$TMP/notarun --attacks=apgd --apgd_steps=0',
     'error: apgd_steps must be a positive integer, got 0.'),
    ('python -m launch.train --workdir=$TMP/m1 --train_attack=pgd --train_eps=8/255',
     "error: learner 'maml' trains on clean tasks and uses no training attack, so --train_attack and --train_eps would be ignored"),
    ('python -m launch.prepare_data --dataset=mini_imagenet --data_dir=$TMP/notarun --image_size=0',
     'error: image_size must be at least 16 (conv4 pools four times by 2), got 0.'),
    ('python -m launch.train --workdir=$TMP/m2 --inner_grad_clip=-1',
     'error: inner_grad_clip must be a finite number >= 0, got -1.0.'),
    ('python -m launch.train --workdir=$TMP/m3 --backbone=conv4 --backbone_width=0.5',
     "error: backbone_width=0.5 scales the fixed-width backbones (conv4_64, conv4_wide, resnet12); backbone='conv4' takes its channels from --filters: drop --backbone_width."),
    ('python -m launch.train --workdir=$TMP/m4 --batchnorm=running',
     "error: batchnorm='running' applies to the learners whose body stays fixed while adapting (anil, matchingnet, metaoptnet, protonet, r2d2), not 'maml', whose inner loop moves it: use batchnorm='batch'."),
    ('python -m launch.reproduce --experiment=digits_robust --workdir=$TMP/r5 --test_q_query=0',
     'error: test_q_query must be a positive integer, got 0.'),
    ('python -m launch.train --workdir=$TMP/r2 --r2d2_head=ridge',
     'FATAL Flags parsing error: flag --r2d2_head=ridge: value should be one of <metaoptnet|bertinetto>'),
    ('python -m launch.train --workdir=$TMP/t2 --robust=trades --trades_kl_on=all',
     'FATAL Flags parsing error: flag --trades_kl_on=all: value should be one of <support_query|query>'),
    ('python -m launch.train --workdir=$TMP/t3 --robust=trades --train_attack_steps=0',
     'error: train_attack_steps must be a positive integer, got 0.'),
    ('python -m launch.train --workdir=$TMP/d1 --dataset=fc100',
     "error: dataset 'fc100' is read from a local directory: pass --data_dir."),
    ('python -m launch.prepare_data --dataset=tiered_imagenet --data_dir=$TMP/notarun',
     'error: tiered_imagenet/train: no known layout in … notarun … Looked for (1) npz: train_images.npz with train_labels.pkl; (2) png_pkl: train_images_png.pkl with train_labels.pkl; (3) torchmeta: tieredimagenet/train_data.hdf5 with train_labels.json.'),
    ('python -m launch.prepare_data --dataset=tiered_imagenet --data_dir=$TMP/badtiered',
     'error: tiered_imagenet/train: cannot unpickle … train_labels.pkl … the file is truncated, corrupt or not a pickle: download it again.'),
    ('python -m launch.prepare_data --dataset=cub --data_dir=$TMP/badcub',
     'error: cub: 1 of the 1 image files listed in … images.txt … do not exist, e.g. … 001.Black_footed_Albatross/a.jpg'),
    ('python -m launch.reproduce --experiment=digits_robust --workdir=$TMP/r5 --seeds=0',
     'error: --seeds must be a positive integer (training seeds per row; 1 trains each row once), got 0.'),
    ('python -m launch.reproduce --experiment=digits_robust --workdir=$TMP/r6 --pairs=tafl:nope',
     "error: --pairs names rows ['nope'] that this run does not have; rows: maml, maml_ad, adml, aq, tafl, protonet, protonet+tafl, matchingnet."),
    ('python -m launch.train --workdir=$TMP/g1 --robust=gaussian --gaussian_sigma=-1',
     'error: gaussian_sigma must be a finite number >= 0, got -1.0.'),
    ('python -m launch.certify --sigma=0.25',
     'error: give the runs to certify: --workdirs=DIR[,DIR...] (or --workdir=DIR).'),
    ('python -m launch.certify --workdir=$TMP/notarun --sigma=0',
     'error: sigma must be a finite number > 0, got 0.0.'),
    ('python -m launch.certify --workdir=$TMP/notarun --alpha=0.5',
     'error: alpha must be in (0, 0.5) (the probability that a certificate is wrong), got 0.5.'),
    ('python -m launch.certify --workdir=$TMP/notarun --n=0',
     'error: n must be a positive integer, got 0.'),
    ('python -m launch.certify --workdir=$TMP/notarun --radii=0.25,big',
     "error: radii must be numbers, got 'big'."),
    ('python -m launch.certify --workdir=$TMP/notarun --radii=-0.5',
     'error: radii must be finite numbers >= 0, got -0.5.'),
    ('python -m launch.certify --workdir=$TMP/notarun',
     "error: no config.json in workdir … notarun': is it the --workdir of a training run?"),
]


def bad_input_rows():
  return list(BAD_INPUT)


def markdown_table() -> str:
  """The bad-input table of docs/reliability.md."""
  cell = lambda text: "`" + text.replace("|", "\\|") + "`"
  return "\n".join(["| command | the one line it prints |", "|---|---|"] + [
      f"| {cell(c)} | {cell(m)} |" for c, m in BAD_INPUT])


def _words(command, tmp):
  words = command.replace("$TMP", str(tmp)).split()
  assert words[:2] == ["python", "-m"], command
  return words[2], words[3:]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _prepare(tmp):
  (tmp / "notarun").mkdir()
  (tmp / "badjson").mkdir()
  (tmp / "badjson" / "config.json").write_text("{")
  (tmp / "afile").write_text("")
  (tmp / "badtiered").mkdir()   # tieredImageNet's file names, not pickles
  (tmp / "badtiered" / "train_labels.pkl").write_text("not a pickle")
  (tmp / "badtiered" / "train_images_png.pkl").write_text("not a pickle")
  cub = tmp / "badcub" / "CUB_200_2011"   # images.txt names a missing file
  (cub / "images").mkdir(parents=True)
  (cub / "classes.txt").write_text("1 001.Black_footed_Albatross\n")
  (cub / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n")


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
  """Runs every row, one driver process per launcher, all at once;
  `{command: (exit code, stderr)}`."""
  tmp = tmp_path_factory.mktemp("bad_input")
  _prepare(tmp)
  by_module = collections.defaultdict(list)
  for command, _ in bad_input_rows():
    module, args = _words(command, tmp)
    by_module[module].append((command, args))
  started = {
      module: subprocess.Popen(
          [sys.executable, str(DRIVER), module], cwd=REPO, env=_env(),
          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True)
      for module in by_module}
  results = {}
  for module, process in started.items():
    rows = by_module[module]
    stdout, stderr = process.communicate(
        json.dumps([args for _, args in rows]), timeout=TIMEOUT_S)
    assert process.returncode == 0, stderr[-3000:]
    for (command, _), out in zip(rows, json.loads(stdout)):
      results[command] = (out["code"], out["stderr"])
  return results


def _one_line(stderr):
  return [l for l in stderr.splitlines()
          if l.startswith(("error: ", "FATAL Flags parsing error"))]


def test_the_docs_table_is_this_list():
  text = (REPO / "docs" / "reliability.md").read_text()
  table = text.split("<!-- bad-input table -->")[1].strip()
  assert table == markdown_table(), (
      "docs/reliability.md's bad-input table differs from BAD_INPUT: paste "
      "the output of `python -m tests.test_bad_input` after its marker.")


def test_the_table_has_rows_for_every_launcher():
  modules = {_words(c, "")[0] for c, _ in bad_input_rows()}
  assert len(bad_input_rows()) >= 25
  assert {"launch.train", "launch.evaluate", "launch.reproduce",
          "launch.sweep", "launch.prepare_data", "launch.certify"} <= modules, (
              modules)


@pytest.mark.parametrize("command,message", bad_input_rows())
def test_bad_input_gets_one_line_and_no_traceback(bad_input_results, command,
                                                  message):
  code, stderr = bad_input_results[command]
  assert code not in (0, None), stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = _one_line(stderr)
  assert len(lines) == 1, stderr[-3000:]
  expected = message.replace("$TMP", "")
  for fragment in expected.split(" … "):
    assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("flag,names", [
    ("learner", lambda: learners.names()),
    ("dataset", lambda: datasets.names()),
    ("experiment", lambda: experiments.names()),
    ("train_attack", lambda: attacks.train_attacks()),
])
def test_the_rows_of_unknown_choices_list_the_registrys(flag, names):
  """A row refusing an unknown --learner/--dataset/--experiment/
  --train_attack lists exactly the registered choices, in their order."""
  messages = [m for c, m in bad_input_rows() if f" --{flag}=" in c
              and "value should be one of" in m]
  assert messages, flag
  for message in messages:
    listed = re.search(r"value should be one of <([^>]*)>", message)[1]
    assert listed.split("|") == list(names()), message


def test_a_command_as_the_user_types_it_exits_with_the_one_line(tmp_path):
  command, message = bad_input_rows()[0]
  module, args = _words(command, tmp_path)
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert _one_line(result.stderr) == [message], result.stderr[-2000:]
  assert result.stdout == ""


def test_the_driver_reports_a_traceback_as_one(tmp_path):
  """The driver does not swallow a crash: a launcher that raises something
  other than a user error comes back as a traceback and exit 1."""
  sys.path.insert(0, str(REPO / "tests"))
  import bad_input_driver  # pylint: disable=g-import-not-at-top

  class _Launcher:
    __name__ = "broken"

    @staticmethod
    def main(argv):
      del argv
      raise RuntimeError("boom")

  code, stderr = bad_input_driver.run_one(_Launcher, [])
  assert code == 1 and "Traceback" in stderr and "boom" in stderr


if __name__ == "__main__":
  print(markdown_table())
