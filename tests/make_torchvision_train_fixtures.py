"""Makes the train-mode parity fixtures in tests/fixtures/torchvision_train/ (needs torch).

    /work/torchvenv/bin/python tests/make_torchvision_train_fixtures.py          # every case
    /work/torchvenv/bin/python tests/make_torchvision_train_fixtures.py resnet18_64

One training step's worth of numbers from torchvision, in float64: the weights of the eval
parity fixtures (``make_torchvision_fixtures.synthetic_state_dict``, same seed), ``.double()``,
``train()``, dropout off (p=0 on both sides: masks cannot match across frameworks), seeded
NCHW inputs and labels, cross-entropy (mean over the batch; GoogLeNet adds 0.3 x each aux
head's, as its paper and torchvision's reference recipe do), one backward. Stored:

* the loss;
* per parameter, in torchvision's key order and layout: the gradient's sum, sum of |g|, L2
  norm and 8 entries at seeded flat indices (a full float64 gradient of ResNet-50 is 200 MB;
  these digests keep every fixture < 0.5 MB and still pin each tensor entrywise at 8 places
  and in aggregate everywhere);
* the running mean and variance of every BatchNorm after torch's update (momentum 0.1,
  unbiased batch variance for ``running_var``), in full.

tests/test_parity_train.py recomputes all of it with cnnlab in float64 and compares.
"""
from __future__ import annotations

import argparse
import os
import sys
import zlib

import numpy as np

import make_torchvision_fixtures as fx

TRAIN_DIR = os.path.join(os.path.dirname(fx.FIXTURE_DIR), "torchvision_train")
LABEL_SEED = 11
SAMPLES = 8          # entries kept per gradient tensor
AUX_WEIGHT = 0.3     # GoogLeNet's aux-loss weight (Szegedy et al. 2015, Sec. 5)

# case -> (torchvision builder, square input size or (T, H, W), batch): small sizes that keep
# every layer's maps non-empty and every BatchNorm's batch at >= 4 values per channel.
TRAIN_CASES = {
    "alexnet_64": ("alexnet", 64, 2),
    "vgg11_bn_32": ("vgg11_bn", 32, 2),
    "googlenet_64": ("googlenet", 64, 2),
    "resnet18_64": ("resnet18", 64, 2),
    "resnet50_64": ("resnet50", 64, 2),
    # Video at batch 4: layer4's maps are 1x1x1 at this size, and a BatchNorm over only 2
    # values per channel (batch 2) is degenerate (its outputs are +-1 whatever the input, and
    # its input gradient a difference of nearly equal terms; see the notes), so none sees < 4.
    "r3d_18_4x16": ("r3d_18", (4, 16, 16), 4),
    "mc3_18_4x16": ("mc3_18", (4, 16, 16), 4),
    "r2plus1d_18_4x16": ("r2plus1d_18", (4, 16, 16), 4),
}


def sample_indices(key: str, size: int) -> np.ndarray:
  """The flat indices of a gradient tensor whose entries the fixture keeps."""
  rng = np.random.default_rng([LABEL_SEED, zlib.crc32(key.encode())])
  return rng.integers(0, size, SAMPLES)


def labels(num_classes: int, batch: int) -> np.ndarray:
  return np.random.default_rng(LABEL_SEED).integers(0, num_classes, batch)


def digest(key: str, g: np.ndarray) -> tuple[float, float, float, np.ndarray]:
  """(sum, sum |g|, L2 norm, sampled entries) of a float64 gradient in torchvision layout."""
  flat = np.asarray(g, np.float64).reshape(-1)
  return (float(flat.sum()), float(np.abs(flat).sum()), float(np.linalg.norm(flat)),
          flat[sample_indices(key, flat.size)])


def dropout_off(name: str) -> dict:
  """torchvision builder kwargs that turn every dropout off."""
  if name == "googlenet":
    return {"dropout": 0.0, "dropout_aux": 0.0, "aux_logits": True, "init_weights": False}
  if name == "alexnet" or name.startswith("vgg"):
    return {"dropout": 0.0}
  return {}


def load_train_fixture(path: str) -> dict:
  with np.load(path, allow_pickle=False) as z:
    out = {k: z[k] for k in z.files}
  out["model"] = str(out["model"])
  out["keys"] = [str(k) for k in out["keys"]]
  out["grad_keys"] = [str(k) for k in out["grad_keys"]]
  out["stat_keys"] = [str(k) for k in out["stat_keys"]]
  out["shapes"] = fx.unpack_shapes(out.pop("ndims"), out.pop("dims"))
  return out


def make_case(case: str, torch, torchvision) -> dict:
  name, size, batch = TRAIN_CASES[case]
  model = fx.builder(torchvision, name)(weights=None, **dropout_off(name))
  reference = model.state_dict()
  keys, shapes = list(reference), [tuple(v.shape) for v in reference.values()]
  weights = fx.synthetic_state_dict(fx.WEIGHT_SEED, keys, shapes)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  model.double().train()
  shape = (batch, *fx.input_shape(size)[1:])
  x = torch.from_numpy(fx.synthetic_inputs(fx.INPUT_SEED, shape)).double()
  y = torch.from_numpy(labels(model.state_dict()[_head(keys)].shape[0], batch))
  out = model(x)
  ce = torch.nn.functional.cross_entropy
  if name == "googlenet":
    loss = ce(out.logits, y) + AUX_WEIGHT * (ce(out.aux_logits1, y) + ce(out.aux_logits2, y))
  else:
    loss = ce(out, y)
  loss.backward()
  grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
  digests = [digest(k, g) for k, g in grads.items()]
  buffers = dict(model.named_buffers())
  stat_keys = [k for k in buffers if k.endswith(("running_mean", "running_var"))]
  ndims, dims = fx.pack_shapes(shapes)
  os.makedirs(TRAIN_DIR, exist_ok=True)
  path = os.path.join(TRAIN_DIR, f"{case}.npz")
  np.savez_compressed(
      path, model=np.asarray(name), weight_seed=np.asarray(fx.WEIGHT_SEED),
      input_seed=np.asarray(fx.INPUT_SEED), label_seed=np.asarray(LABEL_SEED),
      input_shape=np.asarray(shape), keys=np.asarray(keys), ndims=ndims,
      dims=dims, checksum=np.asarray(fx.checksum(weights)), loss=np.asarray(loss.item()),
      grad_keys=np.asarray(list(grads)),
      grad_sum=np.asarray([d[0] for d in digests]), grad_abs=np.asarray([d[1] for d in digests]),
      grad_norm=np.asarray([d[2] for d in digests]),
      grad_samples=np.stack([d[3] for d in digests]),
      stat_keys=np.asarray(stat_keys),
      stats=np.concatenate([buffers[k].numpy().reshape(-1) for k in stat_keys]
                           or [np.zeros(0)]),
      versions=np.asarray(f"torch {torch.__version__}, torchvision {torchvision.__version__}"))
  return {"path": path, "loss": loss.item(), "bytes": os.path.getsize(path)}


def _head(keys) -> str:
  return next(k for k in ("fc.weight", "classifier.6.weight") if k in keys)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("cases", nargs="*", help=f"default: all of {', '.join(TRAIN_CASES)}")
  args = parser.parse_args(argv)
  unknown = [c for c in args.cases if c not in TRAIN_CASES]
  if unknown:
    parser.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(TRAIN_CASES)}")
  try:
    import torch
    import torchvision
  except ImportError as e:
    print(f"error: this script needs torch and torchvision ({e}); see the docstring",
          file=sys.stderr)
    return 2
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  for case in args.cases or list(TRAIN_CASES):
    r = make_case(case, torch, torchvision)
    print(f"{case:16s} loss {r['loss']:.6f} -> {os.path.relpath(r['path'])} "
          f"({r['bytes']} bytes)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
