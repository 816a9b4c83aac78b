"""Makes the torchvision parity fixtures in tests/fixtures/torchvision/ (needs torch+torchvision).

    /work/torchvenv/bin/python tests/make_torchvision_fixtures.py            # every case
    /work/torchvenv/bin/python tests/make_torchvision_fixtures.py resnet50_224 alexnet_224

No weights are stored. For each case this script

1. builds the torchvision model (``weights=None``) and lists its state_dict keys and shapes;
2. fills every tensor from ``synthetic_state_dict`` below: numpy only, a pure function of
   (seed, key, shape), so the test regenerates the very same weights without torch;
3. loads them with ``load_state_dict(strict=True)`` and runs the model in eval mode on inputs
   from ``synthetic_inputs`` (seeded numpy, NCHW);
4. writes ``<case>.npz`` holding only the seeds, the key/shape list, a checksum of the weights
   and torchvision's logits (float32).

The test (tests/test_interop_torchvision.py) rebuilds weights and inputs from the fixture,
converts with ``cnnlab.interop.torchvision.convert`` and compares cnnlab's eval-mode logits with
the stored ones. Only numpy is imported at module level, so the test can import the generators
from here; torch and torchvision are imported inside ``main``.

Weight scales keep activations and logits O(1), so the 1e-4 absolute tolerance is tight:
conv kernels He-uniform (std sqrt(2 / fan_in)), Linear weights std sqrt(1 / fan_in), biases
U(-0.1, 0.1); BatchNorm is far from the identity: scale U(0.5, 1.5), running_mean U(-0.5, 0.5),
running_var U(0.5, 2.0). Random running statistics do not normalise, so in a ResNet each block
would multiply the residual stream's variance by about 3 (3^50 in ResNet-152); the last
BatchNorm of every residual branch (``layerS.i.bn2`` of a basic block, ``bn3`` of a bottleneck,
``conv2.1`` of a video block) therefore gets scale U(0.1, 0.2), which keeps the stream O(1)
while every branch still moves the logits by far more than the tolerance. Every draw is a
float32 uniform (``Generator.random``), a plain transform of PCG64's bits, cheaper than normals
and stable across numpy versions.

Segmentation networks (fcn_resnet50, deeplabv3_resnet50; ``torchvision.models.segmentation``,
built with ``weights_backbone=None``) return a dict of (N, C, H, W) maps: the fixture stores
the "out" logits (and the "aux" ones where the aux head is on) moved to channels-last, as
cnnlab returns them. The last BatchNorm of each residual branch is found under the
``backbone.`` prefix too. ``SEGMENTATION_CASES`` (tests/fixtures/torchvision_segmentation/)
use 2 classes so larger inputs stay small on disk.

Weights out (``EXPORT_CASES``, fixtures in tests/fixtures/torchvision_export/): the other way
round. A worker process with jax and cnnlab (``--cnnlab_python``, default ``python3``) makes
seeded variables in cnnlab's own layout (``cnnlab_side_variables``) and writes them with
``cnnlab.interop.torchvision.save`` as .safetensors; this script loads the file into the
torchvision model built with ``torchvision_kwargs`` using ``load_state_dict(strict=True)`` and
stores torch's eval logits. tests/test_parity_export.py compares cnnlab's logits on the same
variables with them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zlib

import numpy as np

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                           "torchvision")
WEIGHT_SEED = 20240601
INPUT_SEED = 7
BATCH = 2

# case name -> (torchvision builder, square input size or (T, H, W)). Small inputs keep the
# test fast on two cores; AlexNet and ResNet-50 also run at the documented 224. VGG at 64 (and AlexNet at 96)
# leaves 2x2 maps before the adaptive 7x7 (6x6) pool: the non-divisible adaptive-pool path.
# ResNet-18 at 97 exercises odd sizes through the stride-2 convs and the max-pool.
CASES = {
    "alexnet_224": ("alexnet", 224),
    "alexnet_96": ("alexnet", 96),
    "vgg11_64": ("vgg11", 64),
    "vgg13_64": ("vgg13", 64),
    "vgg16_64": ("vgg16", 64),
    "vgg19_64": ("vgg19", 64),
    "vgg11_bn_64": ("vgg11_bn", 64),
    "vgg13_bn_64": ("vgg13_bn", 64),
    "vgg16_bn_64": ("vgg16_bn", 64),
    "vgg19_bn_64": ("vgg19_bn", 64),
    "googlenet_224": ("googlenet", 224),
    "googlenet_99": ("googlenet", 99),
    "resnet18_97": ("resnet18", 97),
    "resnet34_64": ("resnet34", 64),
    "resnet50_224": ("resnet50", 224),
    "resnet101_64": ("resnet101", 64),
    "resnet152_64": ("resnet152", 64),
    # Video (torchvision.models.video), inputs N, C, T, H, W: small clips; odd sizes for
    # R(2+1)D run the stride-2 (2+1)-D convs on odd lengths.
    "r3d_18_4x32": ("r3d_18", (4, 32, 32)),
    "mc3_18_4x32": ("mc3_18", (4, 32, 32)),
    "r2plus1d_18_5x29": ("r2plus1d_18", (5, 29, 29)),
    # Segmentation (torchvision.models.segmentation), (H, W) inputs, batch 1, the default 21
    # classes (so the key lists are the registered models'): tiny odd sizes keep the stored
    # per-pixel logits small; SEGMENTATION_CASES has larger inputs and the aux head.
    "fcn_resnet50_24x33": ("fcn_resnet50", (24, 33)),
    "deeplabv3_resnet50_27x20": ("deeplabv3_resnet50", (27, 20)),
}
SEGMENTATION = ("fcn_resnet50", "deeplabv3_resnet50")
SEGMENTATION_CLASSES = 2
# case -> (model, (H, W), aux_loss), SEGMENTATION_CLASSES classes, in SEGMENTATION_DIR: the
# fixtures hold the "out" logits and, with the aux head, the "aux" ones
# (tests/test_models_segmentation.py compares both, per pixel).
SEGMENTATION_DIR = os.path.join(os.path.dirname(FIXTURE_DIR), "torchvision_segmentation")
SEGMENTATION_CASES = {
    "fcn_resnet50_96x128": ("fcn_resnet50", (96, 128), False),
    "deeplabv3_resnet50_75x101": ("deeplabv3_resnet50", (75, 101), False),
    "fcn_resnet50_aux_45x61": ("fcn_resnet50", (45, 61), True),
    "deeplabv3_resnet50_aux_48x64": ("deeplabv3_resnet50", (48, 64), True),
}


def _uniform(rng: np.random.Generator, shape, low: float, high: float) -> np.ndarray:
  x = rng.random(shape, dtype=np.float32)
  x *= np.float32(high - low)
  x += np.float32(low)
  return x


def synthetic_tensor(seed: int, key: str, shape: tuple[int, ...],
                     branch_end: bool = False) -> np.ndarray:
  """The tensor stored under ``key``: a pure function of (seed, key, shape, branch_end).

  ``branch_end`` marks the scale of the BatchNorm that closes a residual branch.
  """
  shape = tuple(int(s) for s in shape)
  leaf = key.rsplit(".", 1)[-1]
  if leaf == "num_batches_tracked":
    return np.zeros(shape, np.int64)
  rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
  if leaf == "weight" and len(shape) >= 2:  # conv (O, I, kh, kw) or Linear (O, I)
    fan_in = math.prod(shape[1:])
    gain = 2.0 if len(shape) >= 3 else 1.0
    bound = math.sqrt(3.0 * gain / fan_in)   # uniform with std sqrt(gain / fan_in)
    return _uniform(rng, shape, -bound, bound)
  if leaf == "weight":                       # BatchNorm scale
    return _uniform(rng, shape, 0.1, 0.2) if branch_end else _uniform(rng, shape, 0.5, 1.5)
  if leaf == "bias":
    return _uniform(rng, shape, -0.1, 0.1)
  if leaf == "running_mean":
    return _uniform(rng, shape, -0.5, 0.5)
  if leaf == "running_var":
    return _uniform(rng, shape, 0.5, 2.0)
  raise ValueError(f"no synthetic rule for state_dict key {key!r}")


_BLOCK_BN = re.compile(r"^((?:backbone\.)?layer\d+\.\d+)\.bn(\d)\.weight$")
# A video ResNet block's branch ends in conv2 = Sequential(conv, BatchNorm3d).
_VIDEO_BRANCH_END = re.compile(r"^layer\d+\.\d+\.conv2\.1\.weight$")


def residual_branch_ends(keys) -> set[str]:
  """Keys of the BatchNorm scales that close a ResNet residual branch."""
  keys = set(keys)
  ends = set()
  for k in keys:
    if _VIDEO_BRANCH_END.match(k):
      ends.add(k)
    m = _BLOCK_BN.match(k)
    if m:
      last = 3 if f"{m.group(1)}.conv3.weight" in keys else 2
      if int(m.group(2)) == last:
        ends.add(k)
  return ends


def synthetic_state_dict(seed: int, keys, shapes) -> dict[str, np.ndarray]:
  keys = list(keys)
  ends = residual_branch_ends(keys)
  return {k: synthetic_tensor(seed, k, s, k in ends) for k, s in zip(keys, shapes)}


def synthetic_inputs(seed: int, shape) -> np.ndarray:
  """NCHW float32 inputs, U(-sqrt 3, sqrt 3) (zero mean, unit variance)."""
  rng = np.random.default_rng(seed)
  return _uniform(rng, tuple(int(s) for s in shape), -math.sqrt(3.0), math.sqrt(3.0))


def checksum(state_dict: dict[str, np.ndarray]) -> float:
  """Sum of |w| over the first and last 64 entries of every float tensor, in float64.

  Cheap (VGG has 138M weights) and enough to detect a generator that drifted.
  """
  total = 0.0
  for v in state_dict.values():
    if v.dtype.kind == "f":
      flat = v.reshape(-1)
      total += float(np.abs(flat[:64], dtype=np.float64).sum())
      total += float(np.abs(flat[-64:], dtype=np.float64).sum())
  return total


def pack_shapes(shapes) -> tuple[np.ndarray, np.ndarray]:
  """(ndims, flat dims): a ragged list of shapes as two int arrays."""
  ndims = np.asarray([len(s) for s in shapes], np.int32)
  flat = np.asarray([d for s in shapes for d in s], np.int64)
  return ndims, flat


def unpack_shapes(ndims: np.ndarray, flat: np.ndarray) -> list[tuple[int, ...]]:
  out, i = [], 0
  for n in ndims.tolist():
    out.append(tuple(flat[i:i + n].tolist()))
    i += n
  return out


def load_fixture(path: str) -> dict:
  """Reads a fixture written by ``main`` into plain Python / numpy values."""
  with np.load(path, allow_pickle=False) as z:
    extra = {"create_kwargs": json.loads(str(z["create_kwargs"]))} if "create_kwargs" in z else {}
    extra |= {"aux_logits": z["aux_logits"]} if "aux_logits" in z else {}
    return extra | {
        "model": str(z["model"]),
        "weight_seed": int(z["weight_seed"]),
        "input_seed": int(z["input_seed"]),
        "input_shape": tuple(z["input_shape"].tolist()),
        "keys": [str(k) for k in z["keys"]],
        "shapes": unpack_shapes(z["ndims"], z["dims"]),
        "checksum": float(z["checksum"]),
        "logits": z["logits"],
        "versions": str(z["versions"]),
    }


VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")   # in torchvision.models.video


def builder(torchvision, name: str):
  """torchvision's builder of ``name`` (image models, or video / segmentation ones from
  models.video / models.segmentation)."""
  home = {**dict.fromkeys(VIDEO, torchvision.models.video),
          **dict.fromkeys(SEGMENTATION, torchvision.models.segmentation)}
  return getattr(home.get(name, torchvision.models), name)


def input_shape(size, batch: int = BATCH) -> tuple[int, ...]:
  """NC* input shape for a case's size: an int (square image) or a tuple ((H, W) image,
  (T, H, W) video)."""
  spatial = (size, size) if isinstance(size, int) else tuple(size)
  return (batch, 3, *spatial)


def _batch(name: str) -> int:
  return 1 if name in SEGMENTATION else BATCH


def _build(torchvision, name: str, segmentation: tuple[int, bool] = (21, False)):
  """torchvision's ``name`` without weights; ``segmentation``: (num_classes, aux_loss)."""
  builder_fn = builder(torchvision, name)
  if name == "googlenet":  # keep the aux heads so their weights are part of the fixture too
    return builder_fn(weights=None, aux_logits=True, init_weights=False)
  if name in SEGMENTATION:
    num_classes, aux = segmentation
    return builder_fn(weights=None, weights_backbone=None, num_classes=num_classes,
                      aux_loss=aux)
  return builder_fn(weights=None)


def channels_last_logits(out) -> dict[str, np.ndarray]:
  """{'logits': ...[, 'aux_logits': ...]} from a torchvision model's output, float32, with
  segmentation outputs (a dict of N, C, H, W maps) moved to channels-last as cnnlab's."""
  if not isinstance(out, dict):
    return {"logits": out.numpy().astype(np.float32)}
  moved = {k: np.moveaxis(v.numpy(), 1, -1).astype(np.float32) for k, v in out.items()}
  return {"logits": moved["out"]} | ({"aux_logits": moved["aux"]} if "aux" in moved else {})


def make_case(case: str, torch, torchvision) -> dict:
  own_dir = case in SEGMENTATION_CASES
  if own_dir:
    name, size, aux = SEGMENTATION_CASES[case]
    model = _build(torchvision, name, (SEGMENTATION_CLASSES, aux))
  else:
    name, size = CASES[case]
    model = _build(torchvision, name)
  reference = model.state_dict()
  keys = list(reference)
  shapes = [tuple(v.shape) for v in reference.values()]
  weights = synthetic_state_dict(WEIGHT_SEED, keys, shapes)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  model.eval()
  shape = input_shape(size, _batch(name))
  x = torch.from_numpy(synthetic_inputs(INPUT_SEED, shape))
  with torch.no_grad():
    outputs = channels_last_logits(model(x))
  logits = outputs["logits"]
  ndims, dims = pack_shapes(shapes)
  path = os.path.join(SEGMENTATION_DIR if own_dir else FIXTURE_DIR, f"{case}.npz")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez_compressed(
      path, model=np.asarray(name), weight_seed=np.asarray(WEIGHT_SEED),
      input_seed=np.asarray(INPUT_SEED), input_shape=np.asarray(shape),
      keys=np.asarray(keys), ndims=ndims, dims=dims, checksum=np.asarray(checksum(weights)),
      versions=np.asarray(f"torch {torch.__version__}, torchvision {torchvision.__version__}"),
      **outputs)
  return {"path": path, "logits_std": float(logits.std()),
          "logits_absmax": float(np.abs(logits).max()), "bytes": os.path.getsize(path)}


# --- weights out: cnnlab-side weights, exported, in torchvision -------------------------------
EXPORT_DIR = os.path.join(os.path.dirname(FIXTURE_DIR), "torchvision_export")
EXPORT_SEED = 20261201
# case -> (model, square input size, models.create kwargs). GoogLeNet with transform_input on,
# so the exported model is only right in torch if torchvision_kwargs reports it.
EXPORT_CASES = {
    "export_alexnet_96": ("alexnet", 96, {"num_classes": 10}),
    "export_googlenet_99": ("googlenet", 99, {"num_classes": 10, "aux_logits": True,
                                              "transform_input": True}),
    "export_resnet18_64": ("resnet18", 64, {"num_classes": 10}),
    "export_r2plus1d_18_4x32": ("r2plus1d_18", (4, 32, 32), {"num_classes": 10}),
    # Segmentation, batch 1, (H, W) inputs: FCN at an odd size, DeepLabV3 with its aux head
    # (so the aux_classifier keys must be right for torch's strict load).
    "export_fcn_resnet50_75x101": ("fcn_resnet50", (75, 101),
                                   {"num_classes": SEGMENTATION_CLASSES}),
    "export_deeplabv3_resnet50_aux_64x80": ("deeplabv3_resnet50", (64, 80),
                                            {"num_classes": SEGMENTATION_CLASSES,
                                             "aux_loss": True}),
}


def abstract_variables(name: str, **create_kwargs) -> dict:
  """Flat {path: ShapeDtypeStruct} of cnnlab's ``name`` (needs jax and cnnlab; no compute)."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util
  from cnnlab import models
  model = models.create(name, **create_kwargs)
  shape = models.info(name).input_shape
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))
  return traverse_util.flatten_dict(dict(abstract))


def cnnlab_side_variables(name: str, seed: int, **create_kwargs) -> dict:
  """Seeded cnnlab variables of ``name`` made in cnnlab's own layout (needs jax and cnnlab):
  the rules of ``synthetic_tensor`` with fan-ins read off flax kernels (*k, I, O), each array
  drawn from (seed, its flax path); never passes through torchvision's layout."""
  from flax import traverse_util
  from cnnlab.interop import torchvision as tv
  flat = abstract_variables(name, **create_kwargs)
  ends = residual_branch_ends(tv.torch_key(p) for p in flat)
  out = {}
  for path, leaf in flat.items():
    rng = np.random.default_rng([seed, zlib.crc32("/".join(path).encode())])
    dims, leaf_name = tuple(leaf.shape), path[-1]
    if leaf_name == "kernel":
      gain = 2.0 if len(dims) > 2 else 1.0
      bound = math.sqrt(3.0 * gain / math.prod(dims[:-1]))
      out[path] = _uniform(rng, dims, -bound, bound)
    elif leaf_name == "scale":
      low, high = (0.1, 0.2) if tv.torch_key(path) in ends else (0.5, 1.5)
      out[path] = _uniform(rng, dims, low, high)
    else:
      low, high = {"bias": (-0.1, 0.1), "mean": (-0.5, 0.5), "var": (0.5, 2.0)}[leaf_name]
      out[path] = _uniform(rng, dims, low, high)
  return traverse_util.unflatten_dict(out)


def _export_worker(name: str, seed: int, create_kwargs: str, out: str) -> int:
  """Runs under the interpreter that has cnnlab (not torch): writes ``out`` (.safetensors) and
  ``out``.json, the torchvision builder kwargs."""
  from cnnlab.interop import torchvision as tv
  kwargs = json.loads(create_kwargs)
  variables = cnnlab_side_variables(name, seed, **kwargs)
  tv.save(variables, name, out)
  tv_kwargs = tv.torchvision_kwargs(variables, name,
                                    transform_input=kwargs.get("transform_input", False))
  with open(out + ".json", "w") as f:
    json.dump(tv_kwargs, f)
  return 0


def make_export_case(case: str, torch, torchvision, python: str) -> dict:
  import subprocess
  import tempfile
  from safetensors.torch import load_file
  name, size, create_kwargs = EXPORT_CASES[case]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, f"{name}.safetensors")
    subprocess.run([python, os.path.abspath(__file__), "--export-worker", name,
                    str(EXPORT_SEED), json.dumps(create_kwargs), out], check=True, cwd=root,
                   env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu"))
    with open(out + ".json") as f:
      tv_kwargs = json.load(f)
    state = load_file(out)
  model = builder(torchvision, name)(weights=None, **tv_kwargs)
  model.load_state_dict(state, strict=True)
  model.eval()
  shape = input_shape(size, _batch(name))
  with torch.no_grad():
    logits = channels_last_logits(
        model(torch.from_numpy(synthetic_inputs(INPUT_SEED, shape))))["logits"]
  numpy_state = {k: v.numpy() for k, v in state.items()}
  ndims, dims = pack_shapes([v.shape for v in numpy_state.values()])
  os.makedirs(EXPORT_DIR, exist_ok=True)
  path = os.path.join(EXPORT_DIR, f"{case}.npz")
  np.savez_compressed(
      path, model=np.asarray(name), weight_seed=np.asarray(EXPORT_SEED),
      input_seed=np.asarray(INPUT_SEED), input_shape=np.asarray(shape),
      keys=np.asarray(list(numpy_state)), ndims=ndims, dims=dims,
      checksum=np.asarray(checksum(numpy_state)), logits=logits.astype(np.float32),
      create_kwargs=np.asarray(json.dumps(create_kwargs)),
      torchvision_kwargs=np.asarray(json.dumps(tv_kwargs)),
      versions=np.asarray(f"torch {torch.__version__}, torchvision {torchvision.__version__}"))
  return {"path": path, "logits_std": float(logits.std()),
          "logits_absmax": float(np.abs(logits).max()), "bytes": os.path.getsize(path)}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ["--export-worker"]:   # the cnnlab half of an export case (see make_export_case)
    name, seed, kwargs, out = argv[1:]
    return _export_worker(name, int(seed), kwargs, out)
  all_cases = list(CASES) + list(SEGMENTATION_CASES) + list(EXPORT_CASES)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("cases", nargs="*", help=f"default: all of {', '.join(all_cases)}")
  parser.add_argument("--cnnlab_python", default="python3",
                      help="interpreter with jax and cnnlab, for the export cases")
  args = parser.parse_args(argv)
  unknown = [c for c in args.cases if c not in all_cases]
  if unknown:
    parser.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(all_cases)}")
  try:
    import torch
    import torchvision
  except ImportError as e:
    print(f"error: this script needs torch and torchvision ({e}); see the docstring",
          file=sys.stderr)
    return 2
  torch.manual_seed(0)  # unused by the synthetic weights; keeps any torch-side default fixed
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  os.makedirs(FIXTURE_DIR, exist_ok=True)
  for case in args.cases or all_cases:
    if case in EXPORT_CASES:
      r = make_export_case(case, torch, torchvision, args.cnnlab_python)
    else:
      r = make_case(case, torch, torchvision)
    print(f"{case:20s} logits std {r['logits_std']:.3f} max|.| {r['logits_absmax']:.3f} "
          f"-> {os.path.relpath(r['path'])} ({r['bytes']} bytes)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
