"""The benchmark protocol for one model: compile the engine's train step (``JaxBench``), size a
round, time rounds — alternating with the PyTorch worker's rounds when one is given — and
gather every figure in one result dict (keys: ``RESULT_KEYS``).

Rates are medians over rounds; a comparison is the median of per-round ratios of rounds run
back to back, so both sides see the same machine load. "img/s" means examples per second for
every input rank (images, 1-D signals, volumes, clips).
"""
from __future__ import annotations

import dataclasses
import statistics
import sys

from cnnlab.bench import jax_side, pipeline
from cnnlab.bench.torch_client import TorchUnavailable

RESULT_KEYS = ("model", "batch_size", "image_size", "input_shape", "dtype", "kernels", "threads",
               "devices",
               "steps_per_round", "lower_s", "compile_s", "train_img_s", "train_ms_step",
               "train_img_s_rounds", "train_img_per_cpu_s", "finite", "eval_img_s",
               "flops_per_step", "flops_per_step_hlo", "achieved_gflops", "mfu", "peak_rss_mb",
               "device_peak_mb", "step_memory_mb",
               "pipeline_dataset", "pipeline_source", "pipeline_img_s", "pipeline_vs_train",
               "torch", "ratio_train", "ratio_train_cpu", "ratio_eval")


@dataclasses.dataclass(frozen=True)
class Options:
  """How to benchmark one model (the absl flags of experiments/benchmark.py, minus I/O)."""
  batch_size: int = 0            # 0: default_batch(input)
  image_size: int = 0            # 0: ModelInfo.input_shape (see jax_side.input_shape)
  input_shape: tuple = ()        # full per-example shape, channels last; overrides image_size
  dtype: str = "float32"         # compute dtype; params stay float32
  kernels: str = "auto"          # auto (a training run's choice), plain, cpu or cpu+onednn
  rounds: int = 7
  warmup: int = 2
  steps_per_round: int = 0       # 0: about round_seconds
  round_seconds: float = 1.0
  eval: bool = True
  pipeline: bool = True
  pipeline_batches: int = 30
  data_dir: str | None = None
  peak_gflops: float = 0.0       # for MFU; 0: none
  threads: int = 1               # recorded; the entry point applies it
  channels_last: str = "auto"    # PyTorch memory format
  torch_device: str = "cpu"      # where the PyTorch worker runs ("cuda" next to a GPU)


def default_batch(shape) -> int:
  """128 for small inputs (<= 32 px images, signals), 16 otherwise."""
  spatial = shape[:-1]
  return 128 if len(spatial) == 1 or max(spatial) <= 32 else 16


def median_rate(rounds, clock: str = "seconds") -> float:
  return statistics.median(r["images"] / r[clock] for r in rounds)


def paired_ratio(mine, theirs, clock: str = "seconds") -> float:
  """Median over rounds of (JAX img/s) / (PyTorch img/s), each pair measured back to back."""
  return statistics.median((a["images"] / a[clock]) / (b["images"] / b[clock])
                           for a, b in zip(mine, theirs))


def interleaved(kind: str, jax_side, torch, steps: int, rounds: int, warmup: int):
  """Alternates JAX and PyTorch rounds (which side goes first alternates too)."""
  mine, theirs = [], []
  for r in range(warmup + rounds):
    order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
    for side in order:
      if side == "jax":
        out = getattr(jax_side, kind)(steps)
        (mine if r >= warmup else []).append(out)
      elif torch is not None:
        out = torch.call(cmd=kind, steps=steps)
        (theirs if r >= warmup else []).append(out)
  return mine, theirs


def _round_steps(jb, opts: Options) -> int:
  jb.train(1)
  if opts.steps_per_round > 0:
    return opts.steps_per_round
  one = min(jb.train(1)["seconds"] for _ in range(2))
  return max(1, int(round(opts.round_seconds / max(one, 1e-6))))


def torch_setup(torch, name: str, jb, shape, batch: int, opts: Options):
  """(worker or None, its set-up reply, error text): a model with no PyTorch equivalent
  (lenet5_1998, say) is benchmarked on the JAX side only."""
  if torch is None:
    return None, None, None
  try:
    reply = torch.call(cmd="setup", model=name, batch_size=batch, input_shape=list(shape),
                       num_classes=jb.num_classes, threads=opts.threads, dtype=opts.dtype,
                       channels_last=opts.channels_last, device=opts.torch_device,
                       aux_loss_weight=jb.train_spec.aux_loss_weight,
                       weight_decay=jb.optim.weight_decay,
                       learning_rate=jb.optim.learning_rate, task=jb.task)
    return torch, reply, None
  except TorchUnavailable:
    raise
  except RuntimeError as e:
    print(f"  {name}: no PyTorch comparison: {e}", file=sys.stderr, flush=True)
    return None, None, str(e)


def _train_figures(res: dict, jb, mine, opts: Options) -> None:
  batch = res["batch_size"]
  res["train_img_s"] = median_rate(mine)
  res["train_ms_step"] = 1000.0 * batch / res["train_img_s"]
  res["train_img_s_rounds"] = [r["images"] / r["seconds"] for r in mine]
  res["train_img_per_cpu_s"] = median_rate(mine, "cpu_seconds")
  res["finite"] = all(r.get("finite", True) for r in mine)
  res["flops_per_step"], res["flops_per_step_hlo"] = jb.flops, jb.flops_hlo
  flops = jb.flops or jb.flops_hlo   # the compiled count where the backend gives one
  res["achieved_gflops"] = flops * res["train_img_s"] / batch / 1e9
  res["mfu"] = res["achieved_gflops"] / opts.peak_gflops if opts.peak_gflops > 0 else None
  res["step_memory_mb"] = jb.memory


def _torch_figures(res: dict, t_info, theirs, ev_mine, ev_theirs, mine, opts) -> None:
  t = {**t_info, "train_img_s": median_rate(theirs),
       "train_img_s_rounds": [r["images"] / r["seconds"] for r in theirs],
       "train_img_per_cpu_s": median_rate(theirs, "cpu_seconds")}
  t["train_ms_step"] = 1000.0 * res["batch_size"] / t["train_img_s"]
  res["ratio_train"] = paired_ratio(mine, theirs)
  res["ratio_train_cpu"] = paired_ratio(mine, theirs, "cpu_seconds")
  if opts.eval:
    t["eval_img_s"] = median_rate(ev_theirs)
    res["ratio_eval"] = paired_ratio(ev_mine, ev_theirs)
  res["torch"] = t


def bench_model(name: str, opts: Options, torch=None) -> dict:
  """Every figure for one model (see RESULT_KEYS); ``torch`` is a TorchWorker or None."""
  shape = jax_side.input_shape(name, opts.image_size, opts.input_shape)
  batch = opts.batch_size or default_batch(shape)
  res = {"model": name, "batch_size": batch, "image_size": shape[-2], "input_shape": list(shape),
         "dtype": opts.dtype, "threads": opts.threads}
  jb = jax_side.JaxBench(name, batch, shape, opts.dtype, with_eval=opts.eval,
                         kernels=opts.kernels)
  res.update(kernels=jb.kernels, devices=jb.devices, lower_s=jb.lower_s,
             compile_s=jb.compile_s)
  steps = res["steps_per_round"] = _round_steps(jb, opts)
  torch, t_info, torch_error = torch_setup(torch, name, jb, shape, batch, opts)
  mine, theirs = interleaved("train", jb, torch, steps, opts.rounds, opts.warmup)
  _train_figures(res, jb, mine, opts)
  res["eval_img_s"] = None
  ev_mine = ev_theirs = []
  if opts.eval:
    ev_mine, ev_theirs = interleaved("eval", jb, torch, max(1, steps * 2),
                                     max(3, opts.rounds // 2), 1)
    res["eval_img_s"] = median_rate(ev_mine)
  res["peak_rss_mb"] = jax_side.peak_rss_mb()
  res["device_peak_mb"] = jax_side.device_peak_mb()
  res["torch"] = {"error": torch_error} if torch_error else None
  res["ratio_train"] = res["ratio_train_cpu"] = res["ratio_eval"] = None
  if torch is not None:
    _torch_figures(res, t_info, theirs, ev_mine, ev_theirs, mine, opts)
  del jb
  res.update(pipeline_dataset=None, pipeline_source=None, pipeline_img_s=None,
             pipeline_vs_train=None)
  if opts.pipeline:
    res.update(pipeline.pipeline_throughput(name, batch, shape[-2], opts.data_dir,
                                            opts.pipeline_batches))
    if res["pipeline_img_s"]:
      res["pipeline_vs_train"] = res["pipeline_img_s"] / res["train_img_s"]
  return res


def _fmt(v, spec="{:,.1f}") -> str:
  return "-" if v is None else spec.format(v)


def table(results) -> str:
  """One row per successful result, columns right-aligned."""
  head = ("model", "batch", "input", "dev", "train img/s", "ms/step", "torch img/s", "ratio",
          "cpu ratio", "eval img/s", "torch eval", "ratio", "compile s", "GFLOP/s", "MFU",
          "RSS MB", "pipe img/s")
  rows = [head]
  for r in results:
    t = r.get("torch") or {}
    shape = "x".join(str(s) for s in r.get("input_shape", [r["image_size"]])[:-1])
    rows.append((r["model"], str(r["batch_size"]), shape,
                 str(r.get("devices", 1)), _fmt(r["train_img_s"]), _fmt(r["train_ms_step"]),
                 _fmt(t.get("train_img_s")),
                 _fmt(r["ratio_train"], "{:.2f}"), _fmt(r.get("ratio_train_cpu"), "{:.2f}"),
                 _fmt(r["eval_img_s"]),
                 _fmt(t.get("eval_img_s")), _fmt(r["ratio_eval"], "{:.2f}"),
                 _fmt(r["compile_s"]), _fmt(r["achieved_gflops"]), _fmt(r["mfu"], "{:.1%}"),
                 _fmt(r["peak_rss_mb"], "{:,.0f}"), _fmt(r["pipeline_img_s"], "{:,.0f}")))
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                             enumerate(zip(row, widths))) for row in rows)
