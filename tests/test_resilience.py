"""Never lose work: SIGKILL at random steps, SIGTERM preemption, damaged checkpoints, NaN/Inf,
and a disk that fills up during a checkpoint — each with real processes, signals and files."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, xla_flags

STEPS = 24
CKPT_EVERY = 4


def _cmd(workdir, data_dir, cache_dir, *extra):
  return [sys.executable, "-m", "experiments.train", "--config=experiments/configs/lenet5_mnist.py",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          f"--config.num_train_steps={STEPS}", f"--config.checkpoint_every_steps={CKPT_EVERY}",
          "--config.eval_every_steps=12", "--config.log_every_steps=1", "--config.batch_size=32",
          "--config.keep_checkpoints=2", f"--config.compilation_cache_dir={cache_dir}", *extra]


def _env():
  return dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONUNBUFFERED="1")


def _final(workdir):
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def reference(mnist_data_dir, tmp_path_factory):
  """An uninterrupted run of the same command."""
  wd = str(tmp_path_factory.mktemp("reference"))
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  proc = subprocess.run(_cmd(wd, mnist_data_dir, cache), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return {"fingerprint": _final(wd)["params_fingerprint"], "cache": cache,
          "accuracy": _final(wd)["eval_accuracy"]}


def _run_until(cmd, step, sig, wait_for_path=None):
  """Starts ``cmd``, waits for the log line of ``step`` (and ``wait_for_path`` to exist),
  then sends ``sig``."""
  p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  seen = []
  for line in p.stdout:
    seen.append(line)
    if line.startswith(f"step {step}/"):
      deadline = time.time() + 60
      while wait_for_path and not os.path.exists(wait_for_path) and time.time() < deadline:
        time.sleep(0.01)
      p.send_signal(sig)
      break
  out, err = p.communicate(timeout=120)
  return p.returncode, "".join(seen) + out, err


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_identical(mnist_data_dir, reference, tmp_path):
  rng = random.Random(1234)
  # Random steps, plus one right at a checkpoint step (the async write is then in flight).
  kill_at = sorted({rng.randint(2, 7), CKPT_EVERY * 3, rng.randint(15, 22)})
  wd = str(tmp_path)
  cmd = _cmd(wd, mnist_data_dir, reference["cache"])
  for k in kill_at:
    code, out, _ = _run_until(cmd, k, signal.SIGKILL)
    assert code == -signal.SIGKILL, out[-1000:]
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resumed from checkpoint step" in proc.stdout
  assert _final(wd)["params_fingerprint"] == reference["fingerprint"]


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_resumes(mnist_data_dir, reference, tmp_path):
  wd = str(tmp_path)
  cmd = _cmd(wd, mnist_data_dir, reference["cache"])
  code, out, err = _run_until(cmd, 6, signal.SIGTERM)
  assert code == 75, err[-2000:]
  assert "preempted: checkpoint written at step" in err
  step = int(err.split("checkpoint written at step ")[1].split(";")[0])
  assert step >= 6 and str(step) in os.listdir(os.path.join(wd, "checkpoints"))
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"resumed from checkpoint step {step}" in proc.stdout
  assert _final(wd)["params_fingerprint"] == reference["fingerprint"]


def _data_files(step_dir):
  return sorted((os.path.join(root, name) for root, _, names in os.walk(step_dir)
                 for name in names if "/d/" in os.path.join(root, name)),
                key=os.path.getsize)


def _truncate(ckdir):
  for path in _data_files(os.path.join(ckdir, "8")):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _flip64(ckdir):
  """The report in issue 18: 64 bytes flipped inside the largest data file — Orbax alone
  restores that without a word."""
  path = _data_files(os.path.join(ckdir, "8"))[-1]
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    f.seek(0)
    f.write(data)


def _swap(ckdir):
  """A partial copy between clusters: step 4's largest data file under step 8's name."""
  import shutil
  shutil.copyfile(_data_files(os.path.join(ckdir, "4"))[-1],
                  _data_files(os.path.join(ckdir, "8"))[-1])


@pytest.fixture(scope="module")
def killed_after_8(mnist_data_dir, reference, tmp_path_factory):
  """A run SIGKILLed at step 9, once step 8's integrity record is on disk: steps 4 and 8."""
  wd = str(tmp_path_factory.mktemp("killed"))
  ckdir = os.path.join(wd, "checkpoints")
  _run_until(_cmd(wd, mnist_data_dir, reference["cache"]), 9, signal.SIGKILL,
             wait_for_path=os.path.join(ckdir, "8", "cnnlab_integrity.json"))
  from cnnlab import integrity
  assert [(v.step, v.status) for v in integrity.verify_workdir(wd)] == \
      [(4, "verified"), (8, "verified")]
  return wd


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _flip64, _swap], ids=["truncate", "flip64", "swap"])
def test_damaged_latest_checkpoint_falls_back(mnist_data_dir, reference, killed_after_8,
                                              tmp_path, damage):
  import shutil
  wd = str(tmp_path / "wd")
  shutil.copytree(killed_after_8, wd)
  damage(os.path.join(wd, "checkpoints"))
  cmd = _cmd(wd, mnist_data_dir, reference["cache"])
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  warnings = [l for l in proc.stdout.splitlines() if l.startswith("WARNING: checkpoint step 8")]
  assert len(warnings) == 1 and "is damaged (default/" in warnings[0], warnings
  assert "resumed from checkpoint step 4" in proc.stdout
  assert os.listdir(os.path.join(wd, "checkpoints_corrupt"))   # kept, not deleted
  assert _final(wd)["params_fingerprint"] == reference["fingerprint"]


def test_nonfinite_loss_stops_and_never_saves_bad_state(mnist_data_dir, tmp_path):
  wd = str(tmp_path)
  cmd = _cmd(wd, mnist_data_dir, "", "--config.optimizer.name=sgd",
             "--config.optimizer.learning_rate=1e30", "--config.checkpoint_every_steps=1",
             "--config.schedule.name=constant")
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 3, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: non-finite loss or gradient norm at step")
  bad = int(lines[0].split("at step ")[1].split(";")[0])
  steps = sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())
  assert steps and steps[-1] == bad - 1        # everything before the bad step, nothing after
  # The message names the newest step that verifies (issue 18: not merely the newest one).
  assert f"last good checkpoint: step {steps[-1]})" in lines[0], lines[0]
  from cnnlab import integrity
  newest = integrity.verify_workdir(wd)[-1]
  assert (newest.step, newest.status) == (steps[-1], "verified"), newest
  import jax
  import numpy as np
  from cnnlab import checkpoint
  ck = checkpoint.Checkpointer(wd)
  meta = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                      ck._manager.item_metadata(steps[-1]))
  restored = ck.restore(steps[-1], meta)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(restored["params"]))


def _limited_fsize(limit):
  def pre():
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return pre


@pytest.mark.slow
def test_checkpoint_write_failure_is_clear_and_keeps_previous(mnist_data_dir, tmp_path):
  """A tmpfs that fills up after two checkpoints (a real ENOSPC)."""
  wd = str(tmp_path / "small_disk")
  os.makedirs(wd)
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2200k", "tmpfs", wd],
                         capture_output=True, text=True)
  if mount.returncode != 0:   # runs as root with CAP_SYS_ADMIN (CI, this container); not elsewhere
    pytest.skip("disk-full test UNTESTED here: cannot mount a tmpfs (needs root / "
                f"CAP_SYS_ADMIN): {mount.stderr.strip()[:120]}")
  try:
    cmd = _cmd(wd, mnist_data_dir, "", "--config.keep_checkpoints=10")
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 74, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    # The disk fills during a checkpoint write or, just as often, during the next metrics
    # write: either way one line that says what could not be written and why.
    assert len(lines) == 1, lines
    assert "could not write a checkpoint" in lines[0] or "cannot write metrics" in lines[0]
    assert any(w in lines[0] for w in ("No space left on device", "RESOURCE_EXHAUSTED"))
    # The last checkpoint whose files match their integrity record restores. A step that
    # Orbax committed just before the disk filled, but whose record could not be written, is
    # reported damaged (unverifiable), never used: resume would move it aside.
    import jax
    from cnnlab import checkpoint, integrity
    ck = checkpoint.Checkpointer(wd)
    good = ck.latest_verified_step()
    assert good is not None and good >= CKPT_EVERY
    if "(step " in lines[0]:
      assert int(lines[0].split("(step ")[1].split(")")[0]) == good
    for v in integrity.verify_workdir(wd):
      assert (v.status == "verified") if v.step <= good else ("missing" in v.detail), v
    meta = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                        ck._manager.item_metadata(good))
    ck.restore(good, meta)
  finally:
    subprocess.run(["umount", wd])


@pytest.mark.slow
def test_evaluate_refuses_a_damaged_step_in_one_line(killed_after_8, tmp_path):
  import shutil
  wd = str(tmp_path / "wd")
  shutil.copytree(killed_after_8, wd)
  _flip64(os.path.join(wd, "checkpoints"))
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={wd}",
                         "--checkpoint=8"], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=300)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and "checkpoint step 8" in lines[0] and "is damaged" in lines[0], lines
  assert "steps that verify: [4]" in lines[0]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["4", "8"]   # nothing moved
