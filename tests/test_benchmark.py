"""experiments/benchmark.py and cnnlab.bench: it runs end to end and writes the documented JSON;
its set-up path works for every registered model; rounds alternate between the two sides; the
train-step path (--pipeline=false) imports no TensorFlow. No timing is asserted (this machine's
timings are not something a test can pin down)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cnnlab import models
from cnnlab.bench import jax_side, runner
from cnnlab.bench.torch_client import TorchUnavailable, TorchWorker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One model per family (and both LeNets) get the full train + eval step traced.
TRACED = ("lenet5", "lenet5_1998", "alexnet", "alexnet_2012", "vgg11_bn", "googlenet",
          "resnet18", "resnet20", "fcn1d", "resnet18_1d", "r3d_18")   # + 1-D and video inputs


def _run(*args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_smoke_run_writes_table_and_json(tmp_path):
  out = tmp_path / "bench.json"
  r = _run("--model=lenet5", "--batch_size=8", "--rounds=2", "--warmup=0",
           "--steps_per_round=1", "--pipeline_batches=2", "--kernels=plain", f"--json_out={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "train img/s" in r.stdout and "lenet5" in r.stdout
  data = json.loads(out.read_text())
  assert set(data) == {"machine", "flags", "results"}
  assert {"jax", "device", "loadavg_before", "perf_applied"} <= set(data["machine"])
  (res,) = data["results"]
  assert set(runner.RESULT_KEYS) <= set(res)
  assert res["model"] == "lenet5" and res["batch_size"] == 8 and res["image_size"] == 28
  assert res["input_shape"] == [28, 28, 1] and res["finite"] is True
  assert res["kernels"] == "plain"
  for key in ("train_img_s", "train_ms_step", "train_img_per_cpu_s", "eval_img_s", "compile_s",
              "pipeline_img_s", "peak_rss_mb"):
    assert res[key] > 0, key
  assert len(res["train_img_s_rounds"]) == 2
  assert res["flops_per_step"] > 0 and res["mfu"] is None    # no --peak_gflops given
  assert res["flops_per_step_hlo"] > 0 and res["step_memory_mb"]["total"] > 0
  assert res["pipeline_dataset"] == "mnist" and res["pipeline_source"] == "synthetic"
  assert res["torch"] is None and res["ratio_train"] is None


def test_missing_torch_interpreter_is_a_usage_error():
  r = _run("--model=lenet5", "--compare=torch", "--torch_python=/nonexistent/python")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: --torch_python='/nonexistent/python' cannot be started")


def test_interpreter_without_torch_names_the_pip_command():
  """A Python without torch: the worker dies importing it, and the driver says what to do."""
  if importlib.util.find_spec("torch") is not None:   # looked up, never imported
    pytest.skip("this interpreter has torch")
  worker = TorchWorker(sys.executable)
  try:
    with pytest.raises(TorchUnavailable,
                       match="pip install torch==2.14.1 torchvision==0.29.1"):
      worker.call(cmd="setup", model="lenet5", batch_size=8, input_shape=[28, 28, 1])
  finally:
    worker.close()


def test_usage_errors():
  r = _run("--model=no_such_model")
  assert r.returncode == 2 and "no_such_model" in r.stderr
  r = _run("--model=lenet5", "--perf=turbo")
  assert r.returncode == 2 and "turbo" in r.stderr


@pytest.mark.parametrize("name", models.names())
def test_every_model_sets_up(name):
  """The benchmark's set-up for every registered model, at its documented input size: the
  state's shapes (init traced); one model per family also traces the train and eval steps."""
  import jax
  setup = jax_side.Setup(name, 2, jax_side.input_shape(name), "float32")
  state = jax.eval_shape(setup.init)
  assert jax.tree.leaves(state.params)
  if name in TRACED:
    new_state, metrics, outs = setup.eval_shape()
    assert {"train_loss", "train_accuracy", "grad_norm", "finite"} <= set(metrics)
    assert {"loss_sum", "correct", "count"} <= set(outs)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_dataset_and_defaults_follow_the_model_family():
  assert jax_side.dataset_for("lenet5", 28) == ("mnist", None)
  assert jax_side.dataset_for("lenet5_1998", 32) == ("mnist", "lenet1998")
  assert jax_side.dataset_for("resnet20", 32) == ("cifar10", None)
  assert jax_side.dataset_for("resnet50", 224) == ("imagenet2012", None)
  assert runner.default_batch((28, 28, 1)) == 128 and runner.default_batch((224, 224, 3)) == 16
  assert runner.default_batch((500, 1)) == 128 and runner.default_batch((16, 112, 112, 3)) == 16
  cfg = jax_side.train_config("googlenet", 16, 224, "bfloat16")
  assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9
  assert cfg.optimizer.weight_decay == 1e-4 and cfg.aux_loss_weight == 0.3
  assert cfg.model.dtype == "bfloat16"


class _Side:
  def __init__(self, log, name):
    self.log, self.name = log, name

  def train(self, steps):
    self.log.append(self.name)
    return {"seconds": 1.0, "cpu_seconds": 1.0, "images": steps}

  def call(self, cmd, steps):
    return getattr(self, cmd)(steps)


def test_rounds_interleave_and_alternate_who_goes_first():
  log = []
  mine, theirs = runner.interleaved("train", _Side(log, "jax"), _Side(log, "torch"),
                                        steps=3, rounds=3, warmup=1)
  assert log == ["jax", "torch", "torch", "jax", "jax", "torch", "torch", "jax"]
  assert len(mine) == len(theirs) == 3
  assert runner.paired_ratio(mine, theirs) == 1.0


# --- the train-step path on a machine without TensorFlow -----------------------------------------
# The H200 image's Python packages (the `device` tool's KINDS.md, read 2026-11-17); the train-step
# benchmark must import nothing else but the wheels gpu_check.sh says to carry (CARRIED).
GPU_IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest python-dateutil pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz tqdm transformers
treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
CARRIED = frozenset({"ml-collections"})

_IMPORT_PROBE = r"""
import atexit, importlib.metadata as md, json, os, runpy, sys
out = sys.argv.pop(1)
def dump():
  tops = sorted({m.split(".")[0] for m in list(sys.modules)})
  files = {os.path.realpath(m.__file__) for m in list(sys.modules.values())
           if getattr(m, "__file__", None)}
  dists = set()   # by file, not by top-level name: namespace packages (google.*) have many owners
  for d in md.distributions():
    for f in d.files or ():
      if f.suffix == ".py" and os.path.realpath(d.locate_file(f)) in files:
        dists.add(d.metadata["Name"])
        break
  with open(out, "w") as f:
    json.dump({"modules": tops, "dists": sorted(dists)}, f)
atexit.register(dump)
sys.argv[0] = "benchmark"
runpy.run_module("experiments.benchmark", run_name="__main__", alter_sys=True)
"""


def _norm(dist: str) -> str:
  return dist.lower().replace("_", "-").replace(".", "-")


def test_train_step_path_imports_no_tensorflow(tmp_path):
  """`benchmark --pipeline=false` (what gpu_check.sh runs) must work where only the GPU image's
  packages are: it imports no tensorflow / tensorflow_datasets / clu / torch, and nothing outside
  the image's list except the carried wheels."""
  probe = tmp_path / "imports.json"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(probe), "--model=lenet5",
                      "--batch_size=8", "--rounds=1", "--warmup=0", "--steps_per_round=1",
                      "--pipeline=false", "--eval=false"], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "lenet5" in r.stdout
  seen = json.loads(probe.read_text())
  for heavy in ("tensorflow", "tensorflow_datasets", "clu", "torch", "tensorboard"):
    assert heavy not in seen["modules"], f"the train-step benchmark imported {heavy}"
  outside = {_norm(d) for d in seen["dists"]} - GPU_IMAGE - CARRIED - {"cnnlab"}
  assert not outside, f"not in the GPU image and not carried: {sorted(outside)}"


def test_input_shapes_follow_model_info():
  assert jax_side.input_shape("resnet50") == (224, 224, 3)
  assert jax_side.input_shape("resnet50", 128) == (128, 128, 3)
  assert jax_side.input_shape("lenet5", 0, (32, 32, 1)) == (32, 32, 1)
  with pytest.raises(ValueError, match="3 channels"):
    jax_side.input_shape("resnet50", 0, (224, 224, 1))
  with pytest.raises(ValueError, match="2-D inputs"):
    jax_side.input_shape("resnet50", 0, (224, 3))
  r = _run("--model=resnet50", "--input_shape=224,3", "--pipeline=false")
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --input_shape")


# --- the PyTorch side builds the same networks ----------------------------------------------------
TORCH_PYTHON = "/work/torchvenv/bin/python"   # this machine's torch venv, where it exists
SAME_ON_BOTH_SIDES = ("lenet5", "resnet20", "resnet18", "fcn1d", "resnet1d",
                      "resnet18_1d", "resnet50_1d", "resnet18_3d", "r3d_18", "mc3_18",
                      "r2plus1d_18", "unet", "unet3d")


@pytest.mark.skipif(not os.path.exists(TORCH_PYTHON), reason="no torch venv on this machine")
def test_torch_side_has_the_same_parameter_counts():
  """Each registered model's PyTorch counterpart (torchvision's, or cnnlab.bench.torch_models' for the
  CIFAR ResNets, LeNet-5, the 1-D baselines and the 1-D / 3-D ResNets) has exactly the
  trainable parameters ModelInfo documents, at the documented classes and input channels."""
  names = [n for n in SAME_ON_BOTH_SIDES if n in models.names()]
  specs = [(n, models.info(n).num_classes, models.info(n).input_shape[-1]) for n in names]
  code = ("import json, sys; from cnnlab.bench import torch_models as t; "
          "print(json.dumps({n: sum(p.numel() for p in t.build(n, k, c).parameters() "
          "if p.requires_grad) for n, k, c in json.loads(sys.argv[1])}))")
  r = subprocess.run([TORCH_PYTHON, "-c", code, json.dumps(specs)], cwd=ROOT,
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode == 0, r.stderr[-2000:]
  counts = json.loads(r.stdout)
  assert counts == {n: models.info(n).num_params for n in names}
