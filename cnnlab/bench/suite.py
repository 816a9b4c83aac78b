"""A fixed list of benchmark cases run under a wall-clock budget into one JSON report: what
``experiments/gpu_check.sh`` runs on a lent GPU (``GPU``), and on a CPU in the tests (``TINY``).

    report = suite.run(suite.GPU, budget_s=380, json_path="/out/gpu_check.json")

The report holds the environment (versions, devices, XLA flags), two measured ceilings (a bf16
matrix product and an elementwise pass over a large array, timed like every other figure), and
per case every figure of ``runner.bench_model`` plus MFU against the device's datasheet peak and
against the measured matrix ceiling. It is rewritten after every case, so a run cut short still
leaves what it measured. A case whose model is not registered is skipped with a note; so is a
case that would overrun the budget (estimated from the slowest case so far).

Speed settings used on every case (what is known to make a ResNet-50 train step fast on Hopper):
bfloat16 compute with float32 parameters, channels-last (NHWC) layout, a batch large enough to
fill the chip (256 per GPU), the state donated to the step, a synthetic batch already on the
device, and no host sync inside a timed round. No XLA flag is set: candidates are listed in
``XLA_FLAG_CANDIDATES`` and measured one at a time in separate processes (gpu_check.sh) before
any becomes a default.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time

from cnnlab import models
from cnnlab.bench import jax_side, runner
from cnnlab.bench.torch_client import TorchUnavailable

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, TFLOP/s. NVIDIA's H100 and H200 datasheets
# give 1,979 TFLOP/s for the SXM parts "with sparsity", so 989.4 dense; the H200 is the H100's
# chip with more and faster memory (141 GB HBM3e at 4.8 TB/s), so the two share the figure.
# Matched on the device kind JAX reports (e.g. "NVIDIA H200").
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4}

# XLA GPU flags worth an A/B on a convnet train step, each measured alone against the default
# (gpu_check.sh runs them after the suite while its wall budget lasts); none is on by default.
XLA_FLAG_CANDIDATES = (
    # cuDNN runtime fusion of conv + bias/activation epilogues (if this jaxlib still has it).
    "--xla_gpu_use_runtime_fusion=true",
    # CUDA graphs off: shows how much kernel-launch overhead the default command buffers hide.
    "--xla_gpu_enable_command_buffer=",
    # Dense layers through cuBLAS instead of Triton-generated GEMMs.
    "--xla_gpu_enable_triton_gemm=false",
    # Autotuning off: compile time saved vs step time lost (conv algorithm choice).
    "--xla_gpu_autotune_level=0",
)


@dataclasses.dataclass(frozen=True)
class Case:
  model: str
  batch_size: int
  dtype: str = "bfloat16"
  image_size: int = 0            # 0: ModelInfo.input_shape
  input_shape: tuple = ()        # overrides image_size (1-D / 3-D tiny cases)
  optional: bool = False         # not registered yet: skip with a note instead of failing
  torch: bool = False            # also time PyTorch eager on the same case, interleaved

  @property
  def key(self) -> str:
    return f"{self.model}_{self.dtype}_b{self.batch_size}"


GPU = (
    Case("resnet50", 256, image_size=224, torch=True),
    Case("resnet50", 128, image_size=224),
    Case("resnet50", 512, image_size=224),
    Case("resnet50", 256, "float32", image_size=224),
    Case("resnet18", 256, image_size=224),
    Case("vgg16", 128, image_size=224),
    Case("googlenet", 256, image_size=224),
    Case("resnet1d", 256, optional=True),
    Case("r3d_18", 32, optional=True),
)

TINY = (   # the GPU suite's shape (one model in both dtypes, optional models), in seconds
    Case("lenet5", 8, torch=True),
    Case("lenet5", 16, "float32"),
    Case("fcn1d", 4, input_shape=(32, 1), optional=True),   # (a 3-D model costs ~30 CPU-s)
)

SUITES = {"gpu": GPU, "tiny": TINY}

# Timing protocol per suite: the GPU's rounds are ~1 s of steps; the tiny suite times 1 step.
TIMING = {"gpu": dict(rounds=5, warmup=1, round_seconds=1.0),
          "tiny": dict(rounds=2, warmup=0, steps_per_round=1)}
# (matrix side, MiB) of the two ceilings: 8192^3 bf16 (1.1 TFLOP) and 2 GiB, well past the
# H200's 60 MB L2; tiny ones on a CPU.
CEILING_SIZES = {"gpu": (8192, 2048), "tiny": (128, 8)}


def select(suite: str, keys=()) -> tuple[Case, ...]:
  """The suite's cases, or only those whose ``key`` is in ``keys``; ValueError names the valid."""
  if suite not in SUITES:
    raise ValueError(f"suite {suite!r} is not one of {', '.join(SUITES)}")
  cases = SUITES[suite]
  if not keys:
    return cases
  bad = sorted(set(keys) - {c.key for c in cases})
  if bad:
    raise ValueError(f"unknown case(s) {bad} in suite {suite!r}; valid: "
                     f"{', '.join(c.key for c in cases)}")
  return tuple(c for c in cases if c.key in keys)


def environment() -> dict:
  """Versions, devices and the settings that change speed."""
  import importlib.metadata as md
  import jax
  versions = {}
  for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml_collections",
               "torch", "torchvision"):
    try:
      versions[dist] = md.version(dist)
    except md.PackageNotFoundError:
      versions[dist] = None
  dev = jax.local_devices()[0]
  try:
    limit = (dev.memory_stats() or {}).get("bytes_limit")
  except Exception:
    limit = None
  return {"python": sys.version.split()[0], "platform": platform.platform(),
          "backend": jax.default_backend(), "device_kind": dev.device_kind,
          "device_count": jax.device_count(), "memory_limit_gib": limit and limit / 2**30,
          "versions": versions,
          "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                 "XLA_PYTHON_CLIENT_PREALLOCATE",
                                                 "JAX_COMPILATION_CACHE_DIR")}}


def _median_seconds(fn, args, reps: int, trials: int = 5) -> float:
  import jax
  jax.block_until_ready(fn(*args))                      # compile + warm up
  times = []
  for _ in range(trials):
    t0 = time.perf_counter()
    for _ in range(reps):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / reps)
  return statistics.median(times)


def ceilings(matmul_n: int, copy_mib: int) -> dict:
  """Two measured ceilings on random data: a bf16 n x n x n matrix product (TFLOP/s) and an
  elementwise pass y = x + 1 over a float32 array (GB/s, bytes read plus written)."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.PRNGKey(1))
  a = jax.random.normal(ka, (matmul_n, matmul_n), jnp.bfloat16)
  b = jax.random.normal(kb, (matmul_n, matmul_n), jnp.bfloat16)
  mm = _median_seconds(jax.jit(jnp.matmul), (a, b), reps=10)
  x = jax.random.normal(ka, (copy_mib * 2**18,), jnp.float32)
  cp = _median_seconds(jax.jit(lambda v: v + 1.0), (x,), reps=10)
  del a, b, x
  return {"matmul_n": matmul_n, "matmul_tflops": 2 * matmul_n**3 / mm / 1e12,
          "elementwise_mib": copy_mib, "elementwise_gbs": 2 * copy_mib * 2**20 / cp / 1e9}


def peak_tflops(device_kind: str) -> float | None:
  for name, peak in PEAK_BF16_TFLOPS.items():
    if name in device_kind:
      return peak
  return None


def _write(report: dict, path: str | None) -> None:
  if not path:
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(report, f, indent=2)
  os.replace(tmp, path)


def _one_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


def _options(case: Case, timing: dict, peak: float | None, threads: int, torch_device: str):
  return runner.Options(batch_size=case.batch_size, image_size=case.image_size,
                        input_shape=tuple(case.input_shape), dtype=case.dtype, eval=False,
                        pipeline=False, peak_gflops=(peak or 0.0) * 1e3, threads=threads,
                        torch_device=torch_device, **timing)


def _bench_case(case: Case, opts, torch) -> tuple[dict, object]:
  """(result, the torch worker still usable or None). A worker that dies costs the comparison,
  not the case: the case is measured again without it."""
  try:
    return runner.bench_model(case.model, opts, torch if case.torch else None), torch
  except TorchUnavailable as e:
    res, _ = _bench_case(dataclasses.replace(case, torch=False), opts, None)
    res["torch"] = {"error": _one_line(e)}
    return res, None
  except Exception as e:  # an OOM or a compile failure of one case: record it, go on
    return {"model": case.model, "error": _one_line(e)}, torch


def _probe_torch(torch, report: dict):
  """The worker answers a ping once torch is imported; a worker that cannot is dropped here,
  before any case, and the report says why."""
  if torch is None:
    return None
  try:
    report["torch"] = torch.call(cmd="ping")
    return torch
  except (TorchUnavailable, RuntimeError) as e:
    report["torch"] = {"error": _one_line(e)}
    return None


def _add_utilisation(res: dict, peak: float | None, ceil: dict) -> None:
  tflops = res.get("achieved_gflops")
  if tflops is None:
    return
  tflops /= 1e3
  res["achieved_tflops"] = tflops
  res["mfu_vs_peak"] = tflops / peak if peak else None
  res["mfu_vs_matmul"] = tflops / ceil["matmul_tflops"] if ceil.get("matmul_tflops") else None


def run(cases, *, timing: dict, budget_s: float, json_path: str | None = None,
        peak: float | None = None, torch=None, torch_device: str = "cpu", threads: int = 1,
        ceiling_sizes: tuple[int, int] | None = (8192, 2048), log=print) -> dict:
  """Runs ``cases`` in order within ``budget_s`` seconds of wall time (see the module doc)."""
  t0 = time.perf_counter()
  env = environment()
  peak = peak or peak_tflops(env["device_kind"])
  report = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": env, "peak_bf16_tflops": peak, "budget_s": budget_s,
            "timing": timing, "ceilings": ceilings(*ceiling_sizes) if ceiling_sizes else {},
            "cases": [], "skipped": []}
  log(f"ceilings: {report['ceilings']}")
  torch = _probe_torch(torch, report)
  if report.get("torch"):
    log(f"PyTorch worker: {report['torch']}")
  _write(report, json_path)
  slowest, registered = 0.0, set(models.names())

  def skip(case, reason):
    report["skipped"].append({"case": case.key, "reason": reason})
    log(f"  skipped {case.key}: {reason}")

  for case in cases:
    elapsed = time.perf_counter() - t0
    if case.model not in registered:
      skip(case, f"model {case.model!r} is not registered in this cnnlab"
           + ("" if case.optional else " (a required case)"))
    elif elapsed + slowest > budget_s:
      skip(case, f"wall budget: {elapsed:.0f} s of {budget_s:.0f} s used; the slowest case "
           f"so far took {slowest:.0f} s")
    else:
      log(f"[{elapsed:5.0f} s] {case.key} ...")
      c0, peak_before = time.perf_counter(), jax_side.device_peak_mb()
      res, torch = _bench_case(case, _options(case, timing, peak, threads, torch_device), torch)
      res.update(case=case.key, wall_s=time.perf_counter() - c0)
      # JAX's device peak cannot be reset: it is this case's own peak only if it rose here.
      after = res.get("device_peak_mb")
      res["device_peak_is_this_case"] = None if after is None else (
          peak_before is None or after > peak_before)
      _add_utilisation(res, peak, report["ceilings"])
      slowest = max(slowest, res["wall_s"])
      report["cases"].append(res)
      log("  " + summary_line(res))
      gc.collect()
    report["wall_s"] = time.perf_counter() - t0
    _write(report, json_path)
  return report


def summary_line(res: dict) -> str:
  if "error" in res:
    return f"{res.get('case', res['model'])}: error: {res['error']}"
  mem = res.get("step_memory_mb") or {}
  t = res.get("torch") or {}
  parts = [f"{res['case']}: {res['train_img_s']:,.0f} img/s",
           f"{res['train_ms_step']:.2f} ms/step", f"compile {res['compile_s']:.1f} s",
           f"{res.get('achieved_tflops', 0):.3g} TFLOP/s"]
  if res.get("mfu_vs_peak") is not None:
    parts.append(f"MFU {res['mfu_vs_peak']:.1%} of peak")
  if res.get("mfu_vs_matmul") is not None:
    parts.append(f"{res['mfu_vs_matmul']:.1%} of measured matmul")
  if mem.get("total") is not None:
    parts.append(f"step memory {mem['total']:,.0f} MiB")
  if res.get("device_peak_mb") is not None:
    own = "" if res.get("device_peak_is_this_case") else " (an earlier case's)"
    parts.append(f"device peak {res['device_peak_mb']:,.0f} MiB{own}")
  if not res.get("finite", True):
    parts.append("NON-FINITE steps (skipped by the guard)")
  if t.get("train_img_s"):
    parts.append(f"PyTorch {t['train_img_s']:,.0f} img/s, ratio {res['ratio_train']:.2f}")
  elif t.get("error"):
    parts.append(f"PyTorch: {t['error']}")
  return ", ".join(parts)


def record_trial(main_path: str, xla_flags: list, trial: dict) -> dict:
  """Appends a flag trial (a one-case suite run in its own process with ``xla_flags``) to the
  main report at ``main_path``, with its ratio to the same case there (> 1: the flags help)."""
  with open(main_path) as f:
    report = json.load(f)
  base = {c["case"]: c for c in report.get("cases", []) if "error" not in c}
  entries = []
  for res in trial.get("cases", []):
    entry = {"xla_flags": list(xla_flags), "case": res["case"],
             **{k: res.get(k) for k in ("error", "train_img_s", "train_ms_step", "compile_s")}}
    ref = base.get(res["case"])
    if ref and res.get("train_img_s"):
      entry["ratio_vs_default"] = res["train_img_s"] / ref["train_img_s"]
    entries.append(entry)
  report.setdefault("xla_flag_trials", []).extend(entries)
  _write(report, main_path)
  return report


def summary_table(report: dict) -> str:
  """The report in a few lines (the device tool returns the end of a command's output)."""
  peak = report.get("peak_bf16_tflops")
  ceil = report.get("ceilings") or {}
  env = report.get("environment", {})
  lines = [f"device {env.get('device_kind')} | jax {env.get('versions', {}).get('jax')} | "
           f"peak bf16 {peak} TFLOP/s | measured matmul "
           f"{ceil.get('matmul_tflops', 0):.3g} TFLOP/s, elementwise "
           f"{ceil.get('elementwise_gbs', 0):.0f} GB/s"]
  lines += [summary_line(c) for c in report.get("cases", [])]
  lines += [f"skipped {s['case']}: {s['reason']}" for s in report.get("skipped", [])]
  for t in report.get("xla_flag_trials", []):
    if t.get("error"):
      what = f"error {t['error']}"
    else:
      what = f"{t['train_img_s']:,.0f} img/s"
      if t.get("ratio_vs_default"):
        what += f", x{t['ratio_vs_default']:.3f} vs default"
    lines.append(f"trial {' '.join(t['xla_flags'])} on {t['case']}: {what}")
  return "\n".join(lines)
