"""Seeds as a vmapped axis (cnnlab/training/seeds.py, issue 29 item 4): a seed trained with
others in one vmapped step equals the same seed trained alone, its workdir holds what a lone
run writes, and resume works — on real data (the mnist_data_dir fixture; ItalyPowerDemand from
the UCR archive when its files are present)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, lenet_config, spec_of, xla_flags

# Short runs whose plateau schedule does reduce the learning rate within them, with the UCR
# protocol's checkpoint policy: saved only when the train loss improves, final metrics from the
# checkpoint with the lowest train loss.
PROTOCOL = {"num_train_steps": 12, "checkpoint_every_steps": 2, "eval_every_steps": 6,
            "checkpoint_best_only": True, "best_metric": "train_loss", "best_mode": "min",
            "report_best": True, "schedule.name": "plateau", "schedule.plateau_every_steps": 2,
            "schedule.plateau_patience": 1, "schedule.plateau_rtol": 0.5,
            "schedule.plateau_factor": 0.5, "optimizer.learning_rate": 1e-2}
RAW = os.environ.get("CNNLAB_RAW_DATA_DIR", os.path.join(ROOT, "..", "shared", "datasets"))
ITALY = os.path.join(RAW, "ucr", "ItalyPowerDemand")


def _config(data_dir, seed=0, **overrides):
  return lenet_config(data_dir, seed=seed, **{**PROTOCOL, **overrides})


def _rows(workdir, key):
  return {r["step"]: r[key] for r in _read_rows(workdir) if key in r}


def _read_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _assert_same_run(together, alone, wd_together, wd_alone, *, loss_rtol,
                     same_checkpoints=True):
  """What a seed trained with others must share with its lone run."""
  count = alone["eval_count"]
  assert together["eval_count"] == count
  for key in ("eval_accuracy", "last_eval_accuracy"):
    assert abs(together[key] - alone[key]) * count <= 1 + 1e-9, (key, together, alone)
  assert together["selected_step"] == alone["selected_step"]
  assert together["step"] == alone["step"]
  losses_t, losses_a = _rows(wd_together, "train_loss"), _rows(wd_alone, "train_loss")
  assert sorted(losses_t) == sorted(losses_a)
  np.testing.assert_allclose([losses_t[s] for s in sorted(losses_a)],
                             [losses_a[s] for s in sorted(losses_a)], rtol=loss_rtol)
  rates_t, rates_a = _rows(wd_together, "learning_rate"), _rows(wd_alone, "learning_rate")
  assert rates_t == rates_a                      # the same plateau decisions, step by step
  if same_checkpoints:      # (a resumed run also keeps its stop-request checkpoint)
    assert _steps(wd_together) == _steps(wd_alone)
  assert _json(wd_together, "config.json") == _json(wd_alone, "config.json")
  made_by_reproduce = ("run_info.json", "train.log")
  files = lambda wd: sorted(f for f in os.listdir(wd)
                            if not f.startswith("events.") and f not in made_by_reproduce)
  assert files(wd_together) == files(wd_alone)


def _verified(workdir):
  from cnnlab import integrity
  return [(v.step, v.status) for v in integrity.verify_workdir(workdir)]


def _without_time(final):
  return {k: v for k, v in final.items() if k != "wall_time_sec"}


@pytest.mark.slow
@pytest.mark.parametrize("seed_map", ["unroll", "vmap"])
def test_seeds_together_equal_seeds_alone_and_resume(mnist_data_dir, tmp_path, seed_map):
  """Seeds 0 and 1 in one step vs each alone. 'unroll': the same parameters to the bit and
  the same final metrics. 'vmap': accuracy within one test example, train losses per logged
  step within float rounding. Both: the same plateau learning rates, checkpoints, selected
  checkpoint and config.json; every checkpoint verifies. Then (unroll) a run stopped after 6
  steps (a checkpoint window's end: the train loss that ranks checkpoints is the mean over the
  window, of which a restart mid-window sees only the steps it ran) and rerun ends
  bit-identical to the uninterrupted one."""
  from cnnlab import training
  seeds = [0, 1]
  together = [str(tmp_path / f"together{s}") for s in seeds]
  finals = training.train_seeds(training.resolve_run(_config(mnist_data_dir)), seeds, together,
                                seed_map=seed_map)
  for s, wd, final in zip(seeds, together, finals):
    alone = str(tmp_path / f"alone{s}")
    single = training.train_and_evaluate(_config(mnist_data_dir, seed=s), alone)
    _assert_same_run(final, single, wd, alone, loss_rtol=1e-3)
    if seed_map == "unroll":
      assert _without_time(final) == _without_time(single)
      assert _rows(wd, "train_loss") == _rows(alone, "train_loss")
    assert _verified(wd) == [(step, "verified") for step in _steps(wd)]
    assert final == _json(wd, "final_metrics.json")
  rates = _rows(together[0], "learning_rate")
  assert min(rates.values()) < max(rates.values())            # the plateau did reduce
  assert finals[0]["params_fingerprint"] != finals[1]["params_fingerprint"]
  if seed_map == "vmap":
    return

  # Interrupted after 6 steps (a stop request: every seed checkpointed), then the same call.
  resumed = [str(tmp_path / f"resumed{s}") for s in seeds]
  calls = iter(range(100))
  with pytest.raises(training.Preempted):
    training.train_seeds(_config(mnist_data_dir), seeds, resumed,
                         stop_requested=lambda: next(calls) >= 5, seed_map=seed_map)
  assert [_steps(wd)[-1] for wd in resumed] == [6, 6]
  again = training.train_seeds(_config(mnist_data_dir), seeds, resumed, seed_map=seed_map)
  assert [_without_time(f) for f in again] == [_without_time(f) for f in finals]
  # A finished group is left as it is.
  assert training.train_seeds(_config(mnist_data_dir), seeds, resumed) == again


@pytest.mark.slow
def test_seeds_at_different_steps_are_brought_to_a_common_step(mnist_data_dir, tmp_path):
  """Seed 0 stopped alone at step 8, seed 1 fresh, seed 2 stopped alone at step 4 (window
  ends, see above): seed 1 trains to step 4 alone, with seed 2 to step 8, then all three
  together ('unroll', this machine's default); each ends with its lone run's parameters to
  the bit, its metrics.jsonl one row per logged step."""
  from cnnlab import training
  seeds, dirs = [0, 1, 2], [str(tmp_path / f"seed{s}") for s in range(3)]
  for seed, stop_after in ((0, 8), (2, 4)):
    calls = iter(range(100))
    with pytest.raises(training.Preempted):
      training.train_and_evaluate(_config(mnist_data_dir, seed=seed), dirs[seed],
                                  stop_requested=lambda: next(calls) >= stop_after - 1)
  finals = training.train_seeds(_config(mnist_data_dir), seeds, dirs, seed_map="unroll")
  for seed in seeds:
    alone = str(tmp_path / f"alone{seed}")
    single = training.train_and_evaluate(_config(mnist_data_dir, seed=seed), alone)
    _assert_same_run(finals[seed], single, dirs[seed], alone, loss_rtol=1e-3,
                     same_checkpoints=False)
    assert _without_time(finals[seed]) == _without_time(single)
    steps = [r["step"] for r in _read_rows(dirs[seed]) if "train_loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 13))


def test_train_batches_of_seeds_stack_each_seeds_own_batches(mnist_data_dir):
  """The batch of seed s at step t is what seed s's run alone gets at step t (its data order
  and augmentation), from any start step."""
  from cnnlab.training import builders
  spec = spec_of(lenet_config(mnist_data_dir), data_dir_prepared=True)
  feed, mesh = builders.feed(spec), builders.mesh()
  together = builders.train_batches(spec, feed, mesh, 3, seeds=(4, 0, 2))
  alone = {s: builders.train_batches(spec_of(lenet_config(mnist_data_dir, seed=s),
                                             data_dir_prepared=True), feed, mesh, 3)
           for s in (4, 0, 2)}
  for _ in range(2):
    got = next(together)
    for i, s in enumerate((4, 0, 2)):
      want = next(alone[s])
      for key in ("image", "label"):
        np.testing.assert_array_equal(np.asarray(got[key][i]), np.asarray(want[key]))
  assert not np.array_equal(np.asarray(got["label"][0]), np.asarray(got["label"][1]))


def test_refusals_are_one_line(mnist_data_dir, tmp_path):
  from cnnlab import training
  from cnnlab.training import seeds as seeds_lib
  spec = spec_of(lenet_config(mnist_data_dir), data_dir_prepared=True)
  cases = [([0, 1], [str(tmp_path / "a")], "one workdir per seed"),
           ([1, 1], [str(tmp_path / "a"), str(tmp_path / "b")], "distinct non-negative"),
           ([0, 1], [str(tmp_path / "a"), str(tmp_path / "a")], "must be distinct"),
           ([], [], "at least one")]
  for seeds, dirs, words in cases:
    with pytest.raises(training.ConfigError, match=words) as e:
      seeds_lib.train_seeds(spec, seeds, dirs)
    assert "\n" not in str(e.value)
  import dataclasses
  online = dataclasses.replace(spec, train=dataclasses.replace(spec.train, step="online"))
  with pytest.raises(training.ConfigError, match=r"train.step='online' cannot be vmapped"):
    seeds_lib.train_seeds(online, [0, 1], [str(tmp_path / "a"), str(tmp_path / "b")])
  assert not os.path.exists(tmp_path / "a")      # refused before any workdir is touched


def test_seed_maps_step_each_seed_as_alone():
  """Both seed maps give each seed its own step's result: 'unroll' to the bit, 'vmap' up to
  float rounding; 'auto' is unroll on a CPU, vmap on a GPU; others are refused in one line."""
  import jax
  import jax.numpy as jnp
  from cnnlab.config import ConfigError
  from cnnlab.training import seeds as seeds_lib, steps

  def step(state, batch):      # a tiny nonlinear "train step" with a reduction
    w = state["w"] - 0.1 * batch["x"].T @ jnp.tanh(batch["x"] @ state["w"]) / len(batch["x"])
    return {"w": w}, {"loss": jnp.mean(jnp.square(batch["x"] @ w))}

  rng = np.random.default_rng(0)
  state = {"w": jnp.asarray(rng.standard_normal((3, 8, 4)), jnp.float32)}
  batch = {"x": jnp.asarray(rng.standard_normal((3, 5, 8)), jnp.float32)}
  alone = [jax.jit(step)({"w": state["w"][i]}, {"x": batch["x"][i]}) for i in range(3)]
  stacked = jax.jit(steps.over_seeds(step, "vmap"))(state, batch)
  states = [{"w": state["w"][i]} for i in range(3)]
  listed = jax.jit(steps.over_seeds(step, "unroll"))(states, batch)
  for i, (want_state, want_metrics) in enumerate(alone):
    got = jax.tree.map(lambda x: x[i], stacked)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves((want_state, want_metrics))):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    got = (listed[0][i], jax.tree.map(lambda x: x[i], listed[1]))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves((want_state, want_metrics))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert seeds_lib.choose_seed_map("auto", "cpu")[0] == "unroll"
  assert seeds_lib.choose_seed_map("auto", "gpu")[0] == "vmap"
  assert seeds_lib.choose_seed_map("vmap", "cpu")[0] == "vmap"
  with pytest.raises(ConfigError, match="seed_map='pmap' is not one of auto, vmap, unroll"):
    seeds_lib.choose_seed_map("pmap")


def test_with_seed_is_what_resolving_that_seed_gives(mnist_data_dir):
  from cnnlab.training.seeds import with_seed
  base = spec_of(lenet_config(mnist_data_dir), data_dir_prepared=True)
  other = spec_of(lenet_config(mnist_data_dir, seed=3), data_dir_prepared=True)
  assert with_seed(base, 3).record() == other.record()
  assert with_seed(base, 3) == other


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(ITALY), reason=f"UCR ItalyPowerDemand files not at {ITALY}")
def test_reproduce_vmap_on_ucr_equals_lone_runs_and_reports(tmp_path):
  """The command: ``reproduce --vmap`` on the real ItalyPowerDemand (fcn1d, its protocol, 3
  epochs) writes each seed's workdir with run_info.json and train.log; seed 1's results equal
  its lone run's (``experiments.train``); the report reads the group; a rerun skips it."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(), CNNLAB_RAW_DATA_DIR=RAW,
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  data = str(tmp_path / "data")
  overrides = ["dataset.name=ucr/ItalyPowerDemand", "num_epochs=3", f"dataset.data_dir={data}",
               "compilation_cache_dir="]
  runs = str(tmp_path / "runs")
  cmd = [sys.executable, "-m", "experiments.reproduce", "--recipe=fcn1d_ucr", "--seeds=2",
         "--vmap", f"--runs={runs}", *[f"--override={o}" for o in overrides]]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  group = os.path.join(runs, "fcn1d_ucr")
  for seed in (0, 1):
    wd = os.path.join(group, f"seed{seed}")
    info = _json(wd, "run_info.json")
    assert info["seed"] == seed and info["vmap_seeds"] == [0, 1]
    assert info["attempts"][0]["exit_code"] == 0 and "--vmap" in info["command"]
    assert f"--config.seed={seed}" in info["alone_command"]
    with open(os.path.join(wd, "train.log")) as f:
      assert f"seed {seed}: eval step 33" in f.read()
  alone = str(tmp_path / "alone1")
  single = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/fcn1d_ucr.py",
       f"--workdir={alone}", "--config.seed=1", *[f"--config.{o}" for o in overrides]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-2000:]
  wd1 = os.path.join(group, "seed1")
  _assert_same_run(_json(wd1, "final_metrics.json"), _json(alone, "final_metrics.json"),
                   wd1, alone, loss_rtol=1e-3)
  # 'auto' on a CPU unrolls: the seed's parameters are its lone run's to the bit.
  assert _json(wd1, "final_metrics.json")["params_fingerprint"] == \
      _json(alone, "final_metrics.json")["params_fingerprint"]
  report = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs={runs}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert report.returncode == 0, report.stderr[-2000:]
  with open(os.path.join(runs, "RESULTS.md")) as f:
    assert "fcn1d_ucr" in f.read()
  rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0 and rerun.stdout.count("already finished; skipped") == 2
