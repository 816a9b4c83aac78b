"""One writer per workdir (cnnlab/workdir_lock.py): a second process is refused at once with
one line naming the live holder; the lock dies with its holder (SIGKILL included), so a killed
run resumes; a multi-host run takes it once, through process 0. With real processes: a holder
process, and real training runs."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, xla_flags

HOLDER = ("import sys, time; sys.path.insert(0, sys.argv[2]); "
          "from cnnlab.workdir_lock import WorkdirLock; WorkdirLock(sys.argv[1]).acquire(); "
          "print('held', flush=True); time.sleep(600)")


def _start_holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), ROOT],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_process_is_refused_naming_the_holder_until_it_is_killed(tmp_path):
  from cnnlab.config import ConfigError
  from cnnlab.workdir_lock import LOCK_FILE, WorkdirBusyError, WorkdirLock
  holder = _start_holder(tmp_path)
  try:
    # Refused at once: a lock that waited for the live holder would never return (the holder
    # runs until killed), so the attempt runs in a thread that must finish on its own.
    outcome = []

    def attempt():
      try:
        WorkdirLock(str(tmp_path)).acquire()
        outcome.append(None)
      except WorkdirBusyError as e:
        outcome.append(e)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "acquire waited for the live holder instead of refusing"
    refused = outcome[0]
    assert isinstance(refused, WorkdirBusyError)
    message = str(refused)
    assert "\n" not in message and isinstance(refused, ConfigError)
    assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message
    assert f"{tmp_path} is in use" in message and "UTC" in message
  finally:
    holder.send_signal(signal.SIGKILL)      # no clean-up of any kind: the kernel drops it
    holder.wait()
  with WorkdirLock(str(tmp_path)) as lock:                      # the dead holder blocks nothing
    assert lock.held
    assert json.load(open(tmp_path / LOCK_FILE))["pid"] == os.getpid()
  assert (tmp_path / LOCK_FILE).read_text() == ""              # released: no holder named


def test_two_locks_of_one_process_exclude_each_other_until_released(tmp_path):
  from cnnlab.workdir_lock import WorkdirBusyError, WorkdirLock
  first = WorkdirLock(str(tmp_path / "new" / "wd")).acquire()  # creates the workdir
  with pytest.raises(WorkdirBusyError, match=f"pid {os.getpid()} "):
    WorkdirLock(str(tmp_path / "new" / "wd")).acquire()
  first.release()
  WorkdirLock(str(tmp_path / "new" / "wd")).acquire().release()


def test_a_multi_host_run_takes_the_lock_once_through_process_0(tmp_path):
  """Only process 0 locks; every process learns its outcome through ``share`` and a refused
  run stops in all processes."""
  from cnnlab.workdir_lock import LOCK_FILE, WorkdirBusyError, WorkdirLock, hold_for_run
  shared = []

  def share(ok):
    shared.append(ok)
    return ok

  with hold_for_run(str(tmp_path / "a"), process_index=1, share=lambda ok: True) as lock:
    assert lock is None and not (tmp_path / "a").exists()      # process 1 takes nothing
  with hold_for_run(str(tmp_path / "b"), process_index=0, share=share) as lock:
    assert lock.held and shared == [True]
    with pytest.raises(WorkdirBusyError, match="pid"):         # process 0 of a second run
      with hold_for_run(str(tmp_path / "b"), process_index=0, share=share):
        pass
    assert shared == [True, False]                             # ... told the others first
    with pytest.raises(WorkdirBusyError, match="process 0 of this run was refused"):
      with hold_for_run(str(tmp_path / "b"), process_index=1, share=lambda ok: False):
        pass
  assert (tmp_path / "b" / LOCK_FILE).read_text() == ""
  WorkdirLock(str(tmp_path / "b")).acquire().release()


def _train_command(workdir, data_dir, steps):
  return [sys.executable, "-m", "experiments.train",
          "--config=experiments/configs/lenet5_mnist.py", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}", f"--config.num_train_steps={steps}",
          "--config.batch_size=32", "--config.eval_every_steps=0",
          "--config.checkpoint_every_steps=10", "--config.log_every_steps=10",
          "--config.compilation_cache_dir="]


def _checkpoint_steps(workdir) -> list[int]:
  folder = workdir / "checkpoints"
  return [int(s) for s in os.listdir(folder) if s.isdigit()] if folder.is_dir() else []


@pytest.mark.slow
def test_training_twice_in_one_workdir_is_refused_and_a_killed_run_resumes(mnist_data_dir,
                                                                          tmp_path):
  """Two `experiments.train` processes on one workdir: the second exits 2 at once with one
  line naming the first (pid, host), which goes on training; after the first is SIGKILLed
  the same command takes the lock and resumes from its last checkpoint."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONPATH=ROOT)
  first = subprocess.Popen(_train_command(tmp_path, mnist_data_dir, 100_000), cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while not _checkpoint_steps(tmp_path):                     # training, with a checkpoint
      assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
      time.sleep(0.5)
    second = subprocess.run(_train_command(tmp_path, mnist_data_dir, 100_000), cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert first.poll() is None                                # the first still trains
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: workdir {tmp_path} is in use"), lines
    assert f"pid {first.pid} on host {socket.gethostname()}" in lines[0]
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  total = max(_checkpoint_steps(tmp_path)) + 5
  resumed = subprocess.run(_train_command(tmp_path, mnist_data_dir, total), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from checkpoint step" in resumed.stdout
  assert json.load(open(tmp_path / "final_metrics.json"))["step"] == total
