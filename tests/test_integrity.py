"""Checkpoint integrity: corruption injected the way storage does it — a flipped bit in each
kind of file of a step, a truncated file, a deleted file, a file swapped in from another
checkpoint — is detected before anything is restored; resume falls back to the previous step;
an explicit restore refuses with one line; only damage moves a step aside."""
import json
import os
import random
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnnlab import checkpoint, integrity
from conftest import ROOT, xla_flags


def _state(v):
  # Distinct values per step (so files differ between steps), a few dtypes and sizes.
  return {"params": {"w": jnp.arange(64 * 48, dtype=jnp.float32).reshape(64, 48) * v,
                     "b": jnp.full((48,), v, jnp.float32)},
          "opt": {"mu": jnp.full((64, 48), -v, jnp.bfloat16)}, "step": jnp.int32(v)}


ABSTRACT = jax.eval_shape(lambda: _state(1.0))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
  """A workdir with steps 1 and 2 written by the Checkpointer (async, sealed)."""
  wd = str(tmp_path_factory.mktemp("template"))
  ck = checkpoint.Checkpointer(wd, keep=5)
  ck.save(1, _state(1.0))
  ck.save(2, _state(2.0))
  ck.close()
  return wd


@pytest.fixture
def workdir(template, tmp_path):
  wd = str(tmp_path / "wd")
  shutil.copytree(template, wd)
  return wd


def _files(step_dir):
  return sorted(os.path.relpath(os.path.join(r, n), step_dir)
                for r, _, ns in os.walk(step_dir) for n in ns)


def _kinds(step_dir):
  """One file per kind: every distinct name, with content-addressed data files (d/<hash>)
  represented by their largest and smallest member."""
  files = _files(step_dir)
  data = sorted((f for f in files if "/d/" in f), key=lambda f: os.path.getsize(
      os.path.join(step_dir, f)))
  return sorted({f for f in files if "/d/" not in f} | {data[0], data[-1]})


def _flip(path, rng):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    f.seek(0)
    f.write(data)


def test_records_cover_every_file_and_verify(template):
  step_dir = os.path.join(template, "checkpoints", "2")
  assert integrity.RECORD in _files(step_dir)
  kinds = {f.split("/")[-1] if "/d/" not in f else "d/*" for f in _files(step_dir)}
  # The kinds of file the corruption tests below reach (orbax 0.12 OCDBT layout).
  assert {"_CHECKPOINT_METADATA", "_METADATA", "_sharding", "manifest.ocdbt", "d/*",
          "commit_success.txt", integrity.RECORD} <= kinds
  assert [v.status for v in integrity.verify_workdir(template)] == ["verified"] * 2


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "swap"])
def test_every_kind_of_file_is_checked(workdir, how):
  ckdir = os.path.join(workdir, "checkpoints")
  rng = random.Random(how)
  hit = 0
  for n, rel in enumerate(_kinds(os.path.join(ckdir, "2"))):
    case = os.path.join(workdir, f"case{n}")
    shutil.copytree(ckdir, case)
    path, other = os.path.join(case, "2", rel), os.path.join(case, "1", rel)
    if how == "flip":
      _flip(path, rng)
    elif how == "truncate":
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1)          # one byte short is enough
    elif how == "delete":
      os.remove(path)
    else:
      if "/d/" in rel:   # data files are named by content: put step 1's bytes under this name
        other = os.path.join(case, "1", next(f for f in _files(os.path.join(case, "1"))
                                             if os.path.dirname(f) == os.path.dirname(rel)))
      if not os.path.exists(other) or open(other, "rb").read() == open(path, "rb").read():
        continue                                       # identical in both steps: no swap
      shutil.copyfile(other, path)
    verdict = integrity.verify(os.path.join(case, "2"), 2)
    assert verdict.status == "damaged", (how, rel, verdict)
    assert rel in verdict.detail or integrity.RECORD in verdict.detail, (rel, verdict.detail)
    assert integrity.verify(os.path.join(case, "1"), 1).status == "verified"
    hit += 1
  assert hit >= (5 if how == "swap" else 9), hit


def test_damaged_latest_falls_back_moves_aside_and_refuses_explicitly(workdir, capsys):
  ckdir = os.path.join(workdir, "checkpoints")
  big = max(_files(os.path.join(ckdir, "2")), key=lambda f: os.path.getsize(
      os.path.join(ckdir, "2", f)))
  _flip(os.path.join(ckdir, "2", big), random.Random(0))
  ck = checkpoint.Checkpointer(workdir)
  assert ck.latest_verified_step() == 1
  with pytest.raises(checkpoint.DamagedCheckpointError) as e:
    ck.restore(2, ABSTRACT)
  msg = str(e.value)
  assert "\n" not in msg and "step 2" in msg and big in msg and "steps that verify: [1]" in msg
  with pytest.raises(checkpoint.DamagedCheckpointError):
    ck.check_compatible(2, ABSTRACT)        # before the tree comparison could mislead
  state, step = ck.restore_latest(ABSTRACT)
  assert step == 1
  np.testing.assert_array_equal(state["params"]["w"], _state(1.0)["params"]["w"])
  warnings = [l for l in capsys.readouterr().out.splitlines() if l.startswith("WARNING")]
  assert len(warnings) == 1 and "checkpoint step 2 is damaged" in warnings[0] and big in warnings[0]
  assert ck.all_steps() == [1]
  moved = os.listdir(os.path.join(workdir, "checkpoints_corrupt"))
  assert len(moved) == 1 and moved[0].startswith("2.")
  ck.close()


def test_missing_record_after_commit_is_damage_not_legacy(workdir):
  os.remove(os.path.join(workdir, "checkpoints", "2", integrity.RECORD))
  verdict = integrity.verify_workdir(workdir)[-1]
  assert verdict.status == "damaged" and "missing" in verdict.detail
  ck = checkpoint.Checkpointer(workdir)
  assert ck.restore_latest(ABSTRACT)[1] == 1
  ck.close()


@pytest.fixture
def legacy(tmp_path):
  """Steps written by plain Orbax, as cnnlab did before integrity records."""
  wd = str(tmp_path / "legacy")
  mgr = ocp.CheckpointManager(os.path.join(wd, "checkpoints"),
                              item_handlers=ocp.StandardCheckpointHandler())
  for s in (1, 2):
    mgr.save(s, args=ocp.args.StandardSave(_state(float(s))))
  mgr.wait_until_finished()
  mgr.close()
  return wd


def test_legacy_steps_load_unverified_and_unreadable_ones_fall_back(legacy, capsys):
  assert [v.status for v in integrity.verify_workdir(legacy)] == ["unverified"] * 2
  ck = checkpoint.Checkpointer(legacy)
  assert ck.latest_verified_step() is None
  state, step = ck.restore_latest(ABSTRACT)
  assert step == 2 and "checkpoint step 2 has no integrity record" in capsys.readouterr().out
  meta = os.path.join(legacy, "checkpoints", "2", "default", "_METADATA")
  with open(meta, "r+b") as f:
    f.truncate(10)
  ck2 = checkpoint.Checkpointer(legacy)
  with pytest.raises(checkpoint.DamagedCheckpointError, match="step 2 .* is unreadable"):
    ck2.restore(2, ABSTRACT)
  assert ck2.restore_latest(ABSTRACT)[1] == 1
  assert "checkpoint step 2 is unreadable (JSONDecodeError" in capsys.readouterr().out
  # New saves in a legacy workdir get records; the older legacy step stays loadable.
  ck2.save(3, _state(3.0), wait=True)
  assert [v.status for v in integrity.verify_workdir(legacy)] == ["unverified", "verified"]
  ck2.close()


class _Boom(Exception):
  pass


@pytest.mark.parametrize("error", [MemoryError("host allocation failed"),
                                   _Boom("RESOURCE_EXHAUSTED: Out of memory allocating 4GiB"),
                                   PermissionError(13, "Permission denied"),
                                   KeyboardInterrupt()])
@pytest.mark.parametrize("kind", ["verified", "legacy"])
def test_machine_errors_during_restore_never_move_a_step(workdir, legacy, error, kind,
                                                          monkeypatch):
  wd = workdir if kind == "verified" else legacy
  ck = checkpoint.Checkpointer(wd)

  def fail(*a, **k):
    raise error
  monkeypatch.setattr(ck._manager, "restore", fail)
  with pytest.raises(type(error)):
    ck.restore_latest(ABSTRACT)
  assert ck.all_steps() == [1, 2]
  assert not os.path.exists(os.path.join(wd, "checkpoints_corrupt"))


def test_means_damage_classification():
  assert checkpoint.means_damage(ValueError("DATA_LOSS: Error reading"))
  assert checkpoint.means_damage(FileNotFoundError(2, "gone"))
  assert checkpoint.means_damage(Exception("Encountered error while reading array index"))
  assert not checkpoint.means_damage(MemoryError())
  assert not checkpoint.means_damage(ValueError("RESOURCE_EXHAUSTED: while reading"))
  assert not checkpoint.means_damage(OSError(12, "Cannot allocate memory"))
  assert not checkpoint.means_damage(RuntimeError("something else"))


def test_checkpoints_command(workdir):
  _flip(os.path.join(workdir, "checkpoints", "2", "default", "_METADATA"), random.Random(3))
  cmd = [sys.executable, "-m", "experiments.checkpoints", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  lines = proc.stdout.strip().splitlines()
  assert proc.returncode == 1, proc.stderr[-1000:]
  assert lines[0].startswith("step 1: verified")
  assert lines[1].startswith("step 2: damaged — default/_METADATA")
  assert "2 step(s): 1 verified, 1 damaged, 0 unverified" in lines[2] and "s/GB" in lines[2]
  assert os.listdir(os.path.join(workdir, "checkpoints")) != []     # nothing moved
  assert integrity.verify_workdir(workdir)[1].status == "damaged"
  from absl.testing import flagsaver
  from experiments import checkpoints
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as e:
    checkpoints.flags.FLAGS(["checkpoints", f"--workdir={workdir}/nope"])
    checkpoints.main(["checkpoints"])
  assert e.value.code == 2


_WORKER = r'''
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[3]))
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from cnnlab import checkpoint
repl = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), PartitionSpec())
shapes = {"params": {"w": ((64, 48), "float32"), "b": ((48,), "float32")},
          "opt": {"mu": ((64, 48), "bfloat16")}, "step": ((), "int32")}
abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s[0], s[1], sharding=repl), shapes,
                        is_leaf=lambda s: isinstance(s, tuple))
ck = checkpoint.Checkpointer(sys.argv[1])
try:
  ck.restore(2, abstract)
  explicit = "restored"
except checkpoint.DamagedCheckpointError:
  explicit = "refused"
state, step = ck.restore_latest(abstract)
w = np.asarray(state["params"]["w"].addressable_data(0), np.float32)
ck.save(3, state)             # async; process 0 alone writes the record after the commit
ck.close()
print("RESULT " + json.dumps({"step": step, "explicit": explicit, "w": float(w[0, 1]),
                              "steps": checkpoint.Checkpointer(sys.argv[1]).all_steps()}),
      flush=True)
'''


def test_two_processes_agree_on_a_damaged_step(workdir):
  """Process 0 verifies and moves the damaged step; process 1 takes its verdict, waits for the
  move, and both resume from the same step. A step both then save gets one record."""
  import socket
  big = max(_files(os.path.join(workdir, "checkpoints", "2")), key=lambda f: os.path.getsize(
      os.path.join(workdir, "checkpoints", "2", f)))
  _flip(os.path.join(workdir, "checkpoints", "2", big), random.Random(7))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, workdir, f"127.0.0.1:{port}", str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT) for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append((out, json.loads(out.split("RESULT ")[1])))
  for _, r in outs:
    assert r == {"step": 1, "explicit": "refused", "w": 1.0, "steps": [1, 3]}, r
  warnings = [l for out, _ in outs for l in out.splitlines() if l.startswith("WARNING")]
  assert len(warnings) == 1 and "checkpoint step 2 is damaged" in warnings[0]   # process 0
  assert len(os.listdir(os.path.join(workdir, "checkpoints_corrupt"))) == 1
  assert [(v.step, v.status) for v in integrity.verify_workdir(workdir)] == \
      [(1, "verified"), (3, "verified")]
  assert [(v.step, v.status) for v in integrity.verify_workdir(workdir)] == \
      [(1, "verified"), (3, "verified")]


@pytest.mark.parametrize("code", [5, 13, 116])      # EIO, EACCES, ESTALE
def test_read_errors_while_verifying(workdir, monkeypatch, code):
  """EIO means the storage lost the bytes: damage. Permission or a stale network handle says
  nothing about the checkpoint: raised, nothing moved."""
  real = integrity._hash_file

  def failing(path):
    if "/2/" in path:
      raise OSError(code, os.strerror(code), path)
    return real(path)
  monkeypatch.setattr(integrity, "_hash_file", failing)
  ck = checkpoint.Checkpointer(workdir)
  if code == 5:
    assert ck.restore_latest(ABSTRACT)[1] == 1
    assert len(os.listdir(os.path.join(workdir, "checkpoints_corrupt"))) == 1
  else:
    with pytest.raises(OSError):
      ck.restore_latest(ABSTRACT)
    assert ck.all_steps() == [1, 2]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_corrupt"))
  ck.close()
