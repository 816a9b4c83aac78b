"""What every entry point shares: distributed flags, one-line usage errors (exit 2), and the
mapping from cnnlab's exceptions to exit statuses."""
from __future__ import annotations

import contextlib
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

# TensorFlow (it only feeds the input pipeline) prints C++ start-up lines on stderr that no
# setting silences in 2.21; entry points import it with stderr muted, so a usage error stays
# one line. Anything Python raises during the import is still shown.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      try:
        import tensorflow  # noqa: F401
        import jax  # noqa: F401  (jaxlib logs the same way on first use)
        jax.devices()
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)


_import_tensorflow_quietly()

EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75   # EX_TEMPFAIL: a checkpoint was written; run the same command again

FLAGS = flags.FLAGS


def define_distributed_flags() -> None:
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


def usage_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else type(e).__name__


@contextlib.contextmanager
def errors_to_exit_codes():
  """Known failures become one line on stderr and a documented exit status."""
  from cnnlab import checkpoint, training
  from cnnlab.data import datasets
  try:
    yield
  except (training.ConfigError, checkpoint.CheckpointMismatchError,
          datasets.DatasetUnavailableError) as e:
    usage_error(_one_line(e))
  except training.NonFiniteError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_NONFINITE)
  except training.Preempted as e:
    print(_one_line(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except Exception as e:  # flags.Error, and ml_collections' KeyError for unknown --config.x
    msg = _one_line(e).strip("'\"")
    usage_error(msg)


class _DropNoise(logging.Filter):
  """Orbax warns on every save without metrics; ours rank only eval-step saves."""

  def filter(self, record):
    return "did not provide metrics" not in record.getMessage()


def _quiet_logs() -> None:
  """Progress goes to stdout; library INFO chatter (Orbax logs every save) only on request."""
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  absl_logging.get_absl_handler().addFilter(_DropNoise())


def run(main) -> None:
  def wrapped(argv):
    _quiet_logs()
    return main(argv)
  app.run(wrapped, flags_parser=_parse_flags)
