"""Runs one (small) training in its own process for the multi-device / multi-process tests.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/workers/train_worker.py \
        --workdir W --data_dir D --overrides '{"num_train_steps": 5}' [--coordinator H:P
        --num_processes N --process_id I]

Prints ``RESULT {json}`` with the final metrics (incl. params_fingerprint) and, per step, the
train losses this process computed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data_dir", required=True)
  ap.add_argument("--overrides", default="{}")
  ap.add_argument("--coordinator", default=None)
  ap.add_argument("--num_processes", type=int, default=None)
  ap.add_argument("--process_id", type=int, default=None)
  args = ap.parse_args()
  from cnnlab import parallel
  parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  import jax
  from cnnlab import metrics
  from cnnlab.training import train_and_evaluate
  from conftest import lenet_config
  config = lenet_config(args.data_dir, **json.loads(args.overrides))
  final = train_and_evaluate(config, args.workdir)
  rows = metrics.read_jsonl(args.workdir)
  final["losses"] = [r["train_loss"] for r in rows if "train_loss" in r]
  final["devices"] = jax.device_count()
  final["process_index"] = jax.process_index()
  print("RESULT " + json.dumps(final), flush=True)


if __name__ == "__main__":
  main()
