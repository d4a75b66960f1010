"""A group of runs in one process (``train.run_members``) ends with every
workdir as its run alone leaves it: same numbers, C_A trained once.

Real digits on one device; five members differing in eps, layer preset and
methods: two distilling eps-KD members of preset ``all`` (vmapped together),
one with eps 0 (no teacher), one of ``head``, and one finetune-only run.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cil_jax.classifier import checkpoint
from cil_jax import overrides
from cil_jax import train
from tests.helpers import small_config

MEMBERS = {
    "eps=0": {"eps_kd.eps": "0.0"},  # no teacher: not in the vmapped batch
    "eps=0.2": {"eps_kd.eps": "0.2"},
    "eps=0.8": {"eps_kd.eps": "0.8", "eps_kd.kd_temperature": 4.0},
    "head": {"eps_kd.eps": "0.5", "eps_kd.layers": "head"},
    "finetune": {"methods": "finetune"},
}


def _config():
  return small_config(**{"methods": "eps_kd", "model.hidden_sizes": (32,),
                         "train.epochs": 3})


def _group(root, mode, capsys):
  member_dirs = {str(root / name): o for name, o in MEMBERS.items()}
  results = train.run_members(_config(), member_dirs, vmap=mode == "vmap")
  return results, capsys.readouterr().out


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
  """Each member as its own run."""
  root = tmp_path_factory.mktemp("alone")
  out = {}
  for name, member in MEMBERS.items():
    out[name] = train.run(overrides.apply(_config(), member),
                          str(root / name))
  return root, out


def _params(run_dir, method):
  return ocp.StandardCheckpointer().restore(os.path.join(
      run_dir, method, "step_1", "classifier", checkpoint.VARIABLES_DIR))


def _strip_times(results):
  results = json.loads(json.dumps(results))
  for method in results["methods"].values():
    for step in method["steps"]:
      step.pop("train_seconds")
  return results


@pytest.mark.parametrize("mode", ["serial", "vmap"])
def test_group_matches_runs_alone_and_trains_the_base_once(
    alone, tmp_path, capsys, mode):
  alone_root, alone_results = alone
  results, log = _group(tmp_path, mode, capsys)
  assert log.count("base step 0 epoch   1/3") == 1
  for name in MEMBERS:
    run_dir = str(tmp_path / name)
    group = _strip_times(results[run_dir])
    single = _strip_times(alone_results[name])
    with open(os.path.join(run_dir, "results.json")) as f:
      assert _strip_times(json.load(f)) == group
    method = next(iter(group["methods"]))
    # C_A is the same model in every workdir.
    assert group["methods"][method]["steps"][0] == (
        single["methods"][method]["steps"][0])
    got = _params(run_dir, method)
    want = _params(str(alone_root / name), method)
    if mode == "serial":  # the same compiled program, the same numbers
      assert group == single
      jax.tree.map(np.testing.assert_array_equal, got, want)
    else:  # vmapped: equal up to float rounding
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-4, atol=1e-5), got, want)
      for key in ("final_acc_all", "final_acc_old", "final_acc_new"):
        assert abs(group["methods"][method][key] -
                   single["methods"][method][key]) <= 1 / 450
  # The members are different runs.
  finals = [results[str(tmp_path / n)]["methods"]["eps_kd"]["final_acc_old"]
            for n in ("eps=0", "eps=0.2", "eps=0.8", "head")]
  assert len(set(finals)) == 4
  if mode == "vmap":
    assert "2 members (eps_kd step 1 [eps=0.2], ...)" in log


def test_finished_group_is_reused_and_each_member_resumes_alone(
    tmp_path, capsys):
  first, _ = _group(tmp_path, "serial", capsys)
  again, log = _group(tmp_path, "serial", capsys)
  # Finished runs only report their results.json.
  assert " epoch " not in log
  assert log.count("finished earlier; reporting") == len(MEMBERS)
  assert again == first
  # A member's workdir is an ordinary run's: run alone without its
  # results.json, it reuses every finished step and rebuilds the file.
  member_dir = tmp_path / "eps=0.2"
  os.remove(member_dir / "results.json")
  config = _config()
  config.eps_kd.eps = "0.2"
  single = train.run(config, str(member_dir))
  log = capsys.readouterr().out
  assert " epoch " not in log and log.count("finished earlier, reusing") == 2
  assert _strip_times(single) == _strip_times(first[str(member_dir)])


def test_members_must_share_everything_but_eps_kd_and_methods(tmp_path):
  with pytest.raises(ValueError, match=r"differ in \['seed'\]"):
    train.run_members(_config(), {str(tmp_path / "a"): {"seed": 1},
                                  str(tmp_path / "b"): {"seed": 2}})
  with pytest.raises(ValueError, match="no key 'eps_kd.epsilon'"):
    train.run_members(_config(), {str(tmp_path / "a"): {
        "eps_kd.epsilon": 0.1}})
  with pytest.raises(ValueError, match="No members"):
    train.run_members(_config(), {})
  assert not os.listdir(tmp_path)  # nothing claimed


def test_vmapped_members_with_their_own_teachers_match_runs_alone(tmp_path):
  # Three steps: at step 2 each member distils its own step-1 model, so the
  # teachers are stacked, one per member.
  overrides = {"classes.groups": ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9)),
               "train.epochs": 2}
  members = {str(tmp_path / "group" / f"eps={e}"): {"eps_kd.eps": e}
             for e in ("0.3", "0.7")}
  config = small_config(**{"methods": "eps_kd", "model.hidden_sizes": (32,),
                           **overrides})
  group = train.run_members(config, members, vmap=True)
  for workdir, member in members.items():
    alone_config = small_config(**{
        "methods": "eps_kd", "model.hidden_sizes": (32,), **overrides,
        "eps_kd.eps": member["eps_kd.eps"]})
    alone_dir = str(tmp_path / "alone" / os.path.basename(workdir))
    alone = train.run(alone_config, alone_dir)
    for t in (1, 2):
      got = ocp.StandardCheckpointer().restore(os.path.join(
          workdir, "eps_kd", f"step_{t}", "classifier",
          checkpoint.VARIABLES_DIR))
      want = ocp.StandardCheckpointer().restore(os.path.join(
          alone_dir, "eps_kd", f"step_{t}", "classifier",
          checkpoint.VARIABLES_DIR))
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-4, atol=1e-5), got, want)
    steps = group[workdir]["methods"]["eps_kd"]["steps"]
    eps = float(member["eps_kd.eps"])
    assert [s["eps"] for s in steps] == [0.0, eps, eps]
    assert abs(steps[2]["acc_all"] - alone["methods"]["eps_kd"]["steps"][2][
        "acc_all"]) <= 2 / 450
