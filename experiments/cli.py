"""What every entry point shares: distributed flags, one-line usage errors (exit 2), and the
mapping from cnnlab's exceptions to exit statuses."""
from __future__ import annotations

import contextlib
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

# Environment an entry point sets for itself before anything loads the libraries that read it
# (``run`` applies them; a value the user exported wins):
# - TF_CPP_MIN_LOG_LEVEL: TensorFlow feeds the input pipeline only; its C++ start-up lines
#   (oneDNN notices, absl pre-init warnings) are silenced before TensorFlow loads.
# (OpenMP's wait policy for the oneDNN extension is the library's own business since issue 29:
# cnnlab.models.onednn_library loads libgomp passive without touching os.environ.)
PROCESS_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def set_process_env() -> None:
  for key, value in PROCESS_ENV.items():
    os.environ.setdefault(key, value)


def _import_tensorflow_quietly() -> None:
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      try:
        import tensorflow  # noqa: F401
        import jax  # noqa: F401
        # Not jax.devices(): the backend must start after the entry point's flags are read
        # (jax.distributed.initialize and host-device settings have to come first).
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)


EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_IO = 74          # EX_IOERR: a checkpoint could not be written (earlier ones intact)
EXIT_PREEMPTED = 75   # EX_TEMPFAIL: a checkpoint was written; run the same command again

FLAGS = flags.FLAGS
# --- issue 28 item 8: flags defined through the helpers below belong to the entry point that
# calls them, so its --help lists them. absl shows the main module's key flags only; without
# this they were this module's (or ml_collections'), and --help omitted them.
flags.disclaim_key_flags()


def _key_flag_of_caller(holder):
  flags.declare_key_flag(holder.name)   # the disclaimed cli is skipped: the caller's module
  return holder
# --- end issue 28 item 8


def shared_string_flag(name: str, default, help_text: str):
  """DEFINE_string, or the existing holder when another entry point already defined ``name``
  in this process (tests import several entry points; the flags mean the same in each)."""
  if name in FLAGS:
    return _key_flag_of_caller(flags.FlagHolder(FLAGS, FLAGS[name]))
  return flags.DEFINE_string(name, default, help_text)


def shared_flag(define, name: str, *args, **kwargs):
  """``define(name, ...)`` (an absl DEFINE_*), or the existing holder when another entry point
  already defined ``name`` in this process (the flags mean the same in each)."""
  if name in FLAGS:
    return _key_flag_of_caller(flags.FlagHolder(FLAGS, FLAGS[name]))
  return define(name, *args, **kwargs)


def shared_config_flag(help_text: str):
  """``--config`` (an ml_collections recipe file), or the existing holder when another entry
  point already defined it in this process (tests import train and evaluate together)."""
  if "config" in FLAGS:
    return _key_flag_of_caller(flags.FlagHolder(FLAGS, FLAGS["config"]))
  from ml_collections import config_flags
  return _key_flag_of_caller(config_flags.DEFINE_config_file("config", None, help_text))


def define_distributed_flags() -> None:
  if "coordinator_address" in FLAGS:
    for name in ("coordinator_address", "num_processes", "process_id"):
      flags.declare_key_flag(name)
    return
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 for multi-host runs (default: auto-detect "
                      "SLURM / TPU / cluster environments).")
  flags.DEFINE_integer("num_processes", None, "Total number of processes (with "
                       "--coordinator_address).")
  flags.DEFINE_integer("process_id", None, "This process's id (with --coordinator_address).")


def init_distributed() -> None:
  from cnnlab import parallel
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)


def load_config(holder, required: bool = True):
  """The --config flag's value; a file that fails to load is a usage error, not a crash."""
  try:
    config = holder.value
    if config is not None:
      config.keys()  # ml_collections hands back a stand-in that raises for a failed load
  except Exception as e:  # the recipe file is missing or raised while building its config
    usage_error(flag_error_line(e, sys.argv))
  if config is None and required:
    usage_error("--config is required (a recipe in experiments/configs/)")
  return config


def usage_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


def resolve(config, *, prepare: bool = True):
  """The RunSpec of ``config`` (``cnnlab.training.resolve_run``) — with first-use preparation:
  when the dataset is not prepared and $CNNLAB_RAW_DATA_DIR holds its original files, it is
  built from them (one progress line) and the config resolved again."""
  from cnnlab.data import datasets
  from cnnlab.training import resolve_run
  try:
    return resolve_run(config)
  except datasets.DatasetUnavailableError:
    if not prepare:
      raise
    from cnnlab.datasets import prepare as prepare_lib
    if prepare_lib.prepare_if_needed(config.dataset) is None:
      raise
    return resolve_run(config)


def setup_compilation_cache(spec, workdir: str) -> None:
  """JAX's persistent compilation cache (a process-wide setting), so restarts do not
  recompile: ``compilation_cache_dir`` None -> <workdir>/../.jax_cache, "" -> off."""
  cache_dir = spec.loop.compilation_cache_dir
  if cache_dir == "":
    return
  if cache_dir is None:
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
  import jax
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class StopFlag:
  """Set by SIGTERM (what SLURM and cloud schedulers send before killing a job); the training
  loop polls it and checkpoints. Installed by the entry point, restored on exit."""

  def __init__(self):
    self.raised = False
    self._old = None

  def __enter__(self):
    import signal
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (called from a test's worker thread)
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.raised = True

  def __call__(self) -> bool:
    return self.raised

  def __exit__(self, *exc):
    import signal
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


@contextlib.contextmanager
def errors_to_exit_codes():
  """Known failures become one line on stderr and a documented exit status."""
  from cnnlab import checkpoint, training
  from cnnlab.data import datasets
  from cnnlab.datasets import prepare
  try:
    yield
  except (training.ConfigError, checkpoint.CheckpointMismatchError,
          checkpoint.DamagedCheckpointError, datasets.DatasetUnavailableError,
          prepare.PrepareError) as e:
    usage_error(_one_line(e))
  except training.NonFiniteError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_NONFINITE)
  except (checkpoint.CheckpointWriteError, OSError) as e:
    # Disk full / unwritable: one line, then leave without interpreter teardown, where
    # Orbax's abandoned background writers would print more. Pending writes were already
    # waited for by the loop.
    print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_IO)
  except training.Preempted as e:
    print(_one_line(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except Exception as e:  # flags.Error, and ml_collections' KeyError for unknown --config.x
    usage_error(flag_error_line(e, argv))


def _causes(e: BaseException) -> list[BaseException]:
  out = [e]
  while (e.__cause__ or e.__context__) is not None and len(out) < 10:
    e = e.__cause__ or e.__context__
    out.append(e)
  return out


def _config_arg(argv) -> str:
  """The --config value absl uses: the last one given."""
  return next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith("--config=")), "?")


def flag_error_line(e: BaseException, argv) -> str:
  """One clean line for a command line that absl / ml_collections refused: a recipe file
  that is missing or raised (its own error, not ml_collections' wrapper), an unknown
  ``--config.key`` (with the near miss ml_collections suggests) or a value of the wrong type."""
  causes = _causes(e)
  deepest = causes[-1]
  if isinstance(deepest, OSError) and "No such file" in str(deepest):
    return f"--config={_config_arg(argv)}: no such file"
  keys = [c for c in causes if isinstance(c, KeyError)]
  if keys:
    return _unknown_key(keys, argv)
  if deepest is not e and "Error whilst parsing config file" in str(e):
    return f"--config={_config_arg(argv)}: {type(deepest).__name__}: {_one_line(deepest)}"
  return _one_line(e)


def _unknown_key(errors: list[KeyError], argv) -> str:
  """'--config.optimizer.momentun: no such config key; did you mean momentum?'"""
  texts = [str(k.args[0]) if k.args else "" for k in errors]
  key = texts[-1].splitlines()[0].strip("'")
  hint = next((t.split("Did you mean ", 1)[1].split(" instead")[0].strip('"') for t in texts
               if "Did you mean " in t), None)
  path = next((a[2:].split("=", 1)[0] for a in argv
               if a.startswith("--config.") and a.split("=", 1)[0].endswith("." + key)),
              f"config.{key}")
  return f"--{path}: no such config key" + (f"; did you mean {hint}?" if hint else "")


class _DropNoise(logging.Filter):
  """Drops library log records that cnnlab reports itself, chosen by the module that logs
  them, not by their text: everything Orbax logs below CRITICAL (a warning on every save
  without metrics — ours rank only eval-step saves — and a traceback for a failed background
  write that cnnlab then reports in one line), and TFDS's file_utils warnings while it probes a
  data dir where the dataset is not built (cnnlab then names the prepare command)."""

  QUIET = ("/orbax/", "/tensorflow_datasets/core/utils/file_utils.py",
           "/tensorflow_datasets/core/features/feature.py")

  def filter(self, record):
    path = record.pathname or ""
    return record.levelno >= logging.CRITICAL or not any(q in path for q in self.QUIET)


def _quiet_logs() -> None:
  """Progress goes to stdout; library INFO chatter (Orbax logs every save) only on request."""
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  absl_logging.get_absl_handler().addFilter(_DropNoise())


def _is_orbax_teardown_noise(exc) -> bool:
  """After a failed async write, TensorStore completes its remaining futures on Orbax's
  already-closed event loop; Python then reports each as 'Event loop is closed'."""
  return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


def _install_hooks() -> None:
  import threading
  default_unraisable, default_thread = sys.unraisablehook, threading.excepthook

  def unraisable(info):
    if not _is_orbax_teardown_noise(info.exc_value):
      default_unraisable(info)

  def thread_hook(args):
    if not _is_orbax_teardown_noise(args.exc_value):
      default_thread(args)

  sys.unraisablehook, threading.excepthook = unraisable, thread_hook


def run(main, *, uses_tensorflow: bool = True) -> None:
  """absl's app.run with cnnlab's flag-error handling, quiet logs and hooks. Entry points
  whose flags load configs (which import the input pipeline) import TF quietly first."""
  set_process_env()
  if uses_tensorflow:
    _import_tensorflow_quietly()

  def wrapped(argv):
    _quiet_logs()
    _install_hooks()
    return main(argv)
  app.run(wrapped, flags_parser=_parse_flags)
