"""cnnlab.bench: measuring the engine's real train / eval steps.

Modules (import the one you need; importing this package imports nothing else):
  jax_side      the compiled train / eval steps of one model on a synthetic device batch,
                with XLA's FLOP and memory figures (no TensorFlow)
  runner        the protocol for one model: rounds, medians, the PyTorch interleave, the table
  torch_client  the driver's end of the PyTorch worker (torch_worker, run with python -m;
                torch_models: its PyTorch models)
  pipeline      the input pipeline's throughput (the only part that needs TensorFlow)
  suite         a fixed list of cases with a wall-clock budget and one JSON report
                (experiments/gpu_check.sh runs it on a GPU)

The entry point is experiments/benchmark.py.
"""
