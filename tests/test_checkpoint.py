"""Orbax checkpointing: round trip, keep-N + best, damaged-step fallback, model mismatch."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import checkpoint, integrity


def _state(v=1.0, shape=(3, 4)):
  return {"params": {"w": jnp.full(shape, v), "b": jnp.zeros((4,))}, "step": jnp.int32(0)}


def test_round_trip_and_keep(tmp_path):
  ck = checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric="acc")
  for step, acc in ((1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3)):
    ck.save(step, _state(step), metrics={"acc": acc})
  ck.wait()
  # Latest two kept, plus the best (step 1).
  assert ck.all_steps() == [1, 3, 4]
  assert ck.best_step() == 1
  # Every kept step has an integrity record that still matches after the later saves and
  # the keep/best clean-up.
  assert [(v.step, v.status) for v in integrity.verify_workdir(str(tmp_path))] == \
      [(1, "verified"), (3, "verified"), (4, "verified")]
  assert ck.latest_verified_step() == 4
  abstract = jax.eval_shape(lambda: _state())
  restored, step = ck.restore_latest(abstract)
  assert step == 4
  np.testing.assert_array_equal(restored["params"]["w"], np.full((3, 4), 4.0))
  ck.close()


def _damage(step_dir):
  """Truncates every data file of a finished step (a half-written or damaged checkpoint)."""
  files = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
           if os.path.isfile(f) and os.path.getsize(f) > 0 and "ocdbt" in f or
           (os.path.isfile(f) and "/d/" in f)]
  assert files, "no data files found to damage"
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(max(0, os.path.getsize(f) // 3))
  return files


def test_damaged_latest_falls_back_and_is_kept(tmp_path, capsys):
  ck = checkpoint.Checkpointer(str(tmp_path), keep=3)
  ck.save(1, _state(1.0))
  ck.save(2, _state(2.0))
  ck.wait()
  _damage(os.path.join(ck.directory, "2"))
  ck2 = checkpoint.Checkpointer(str(tmp_path), keep=3)
  restored, step = ck2.restore_latest(jax.eval_shape(lambda: _state()))
  assert step == 1
  np.testing.assert_array_equal(restored["params"]["w"], np.full((3, 4), 1.0))
  out = capsys.readouterr().out
  # Caught by the integrity record before Orbax reads anything (test_integrity.py has the rest).
  assert "checkpoint step 2 is damaged" in out and "truncated" in out
  assert len(out.strip().splitlines()) == 1
  # The damaged step was moved aside, not deleted.
  assert os.listdir(os.path.join(str(tmp_path), "checkpoints_corrupt"))
  assert ck2.all_steps() == [1]
  ck2.close()


def test_mismatched_model_names_parameters(tmp_path):
  ck = checkpoint.Checkpointer(str(tmp_path))
  ck.save(5, _state())
  ck.wait()
  other = jax.eval_shape(lambda: {"params": {"w": jnp.zeros((3, 5)), "kernel": jnp.zeros(2)},
                                  "step": jnp.int32(0)})
  with pytest.raises(checkpoint.CheckpointMismatchError) as e:
    ck.restore_latest(other)
  msg = str(e.value)
  assert "params/kernel" in msg and "params/b" in msg and "params/w (3, 4)->(3, 5)" in msg
  assert "\n" not in msg
  assert ck.all_steps() == [5]  # nothing moved or deleted
