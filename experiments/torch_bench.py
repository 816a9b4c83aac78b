"""The PyTorch side of ``experiments/benchmark.py --compare=torch``: a worker process.

It imports only torch / torchvision (an optional extra, never a cnnlab dependency:
``pip install torch==2.14.1 torchvision==0.29.1``) and is driven over stdin/stdout, one JSON
object per line, so that benchmark.py can interleave its rounds with the JAX rounds:

  {"cmd": "setup", "model": "resnet18", "batch_size": 16, "input_shape": [224, 224, 3],
   "num_classes": 1000, "threads": 2, "dtype": "float32", "channels_last": "auto",
   "device": "cpu", "aux_loss_weight": 0.3, "weight_decay": 1e-4}
      -> {"ok": true, "channels_last": bool, "params": int, "torch": version, ...}
  {"cmd": "train", "steps": n}  -> {"ok": true, "seconds": s, "images": n * batch}
  {"cmd": "eval", "steps": n}   -> {"ok": true, "seconds": s, "images": n * batch}
  {"cmd": "ping"}  -> {"ok": true, "torch": version, "torchvision": version, "cuda": bool}
  {"cmd": "quit"}
Errors come back as {"ok": false, "error": "..."}; nothing else is written to stdout.

The train step is what a PyTorch user writes: eager mode, ``optimizer.zero_grad(set_to_none=
True)``, forward, cross-entropy (plus weighted auxiliary losses for GoogLeNet), backward,
``torch.optim.SGD(momentum=0.9, weight_decay=...)``, and the batch accuracy as a metric; one
host sync per round. ``input_shape`` is cnnlab's per-example shape, channels last ((H, W, C),
(L, C) or (T, H, W, C)); the batch here is the same data channels-first. ``device`` "cuda" runs
on the GPU (``cudnn.benchmark`` on, as a PyTorch user would for fixed shapes; bfloat16 through
``torch.autocast``). Architectures: torchvision's builders where they exist (video models from
``torchvision.models.video``); LeNet-5 (the modern variant of cnnlab's ``lenet5``) and the CIFAR
ResNets of He et al. 2016 §4.2 (option A shortcuts) are defined here, layer for layer as cnnlab
has them.

Run standalone for a quick look:  python experiments/torch_bench.py resnet18 16 224 [steps]
"""
import json
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- architectures torchvision does not have ---------------------------------------------------
class LeNet5(nn.Module):
  """conv 6@5x5 pad 2, ReLU, max-pool 2; conv 16@5x5, ReLU, max-pool 2; fc 120-84-classes."""

  def __init__(self, num_classes=10, in_channels=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
    self.conv2 = nn.Conv2d(6, 16, 5)
    self.fc1 = nn.Linear(16 * 5 * 5, 120)
    self.fc2 = nn.Linear(120, 84)
    self.fc3 = nn.Linear(84, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = torch.flatten(x, 1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.fc3(x)


class _CifarBlock(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.stride, self.extra = stride, planes - cin

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    s = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
    if self.extra > 0:   # option A: zero-pad the new channels
      s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
    return F.relu(y + s)


class CifarResNet(nn.Module):
  """Depth 6n+2: 3x3 conv 16, three stages of n blocks at 16/32/64, global pool, fc."""

  def __init__(self, n, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    blocks, cin = [], 16
    for s, planes in enumerate((16, 32, 64)):
      for i in range(n):
        blocks.append(_CifarBlock(cin, planes, 2 if s > 0 and i == 0 else 1))
        cin = planes
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(64, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    x = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- 1-D baselines of Wang, Yan, Oates 2017 (cnnlab.models.timeseries), Keras defaults ---------
def _keras_bn(features):
  return nn.BatchNorm1d(features, eps=1e-3, momentum=0.01)   # Keras momentum 0.99


class FCN1D(nn.Module):
  """conv 128@8, 256@5, 128@3 ('same' padding, biases), each + BN + ReLU; GAP; dense."""

  def __init__(self, num_classes, channels, filters=(128, 256, 128), kernels=(8, 5, 3)):
    super().__init__()
    layers, cin = [], channels
    for f, k in zip(filters, kernels):
      layers += [nn.Conv1d(cin, f, k, padding="same"), _keras_bn(f), nn.ReLU()]
      cin = f
    self.body = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.body(x).mean(-1))


class _Block1D(nn.Module):
  def __init__(self, cin, features, kernels=(8, 5, 3)):
    super().__init__()
    self.convs = nn.ModuleList()
    self.bns = nn.ModuleList()
    for i, k in enumerate(kernels):
      self.convs.append(nn.Conv1d(cin if i == 0 else features, features, k, padding="same"))
      self.bns.append(_keras_bn(features))
    self.short_conv = nn.Conv1d(cin, features, 1) if cin != features else None
    self.short_bn = _keras_bn(features)

  def forward(self, x):
    y = x
    for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
      y = bn(conv(y))
      if i < len(self.convs) - 1:
        y = F.relu(y)
    s = self.short_conv(x) if self.short_conv is not None else x
    return F.relu(y + self.short_bn(s))


class ResNet1D(nn.Module):
  """Three residual blocks of 64, 128, 128 maps (kernels 8, 5, 3); GAP; dense."""

  def __init__(self, num_classes, channels, features=(64, 128, 128)):
    super().__init__()
    blocks, cin = [], channels
    for f in features:
      blocks.append(_Block1D(cin, f))
      cin = f
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.blocks(x).mean(-1))


# --- torchvision's ResNet layout with 1-D / 3-D layers (cnnlab's resnet*_1d / resnet*_3d) -------
_ND_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
              3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)}


class _NdBlock(nn.Module):
  """torchvision's BasicBlock (expansion 1) or Bottleneck (expansion 4, stride in the 3-tap)."""

  def __init__(self, rank, cin, planes, stride, bottleneck):
    super().__init__()
    conv, bn, _ = _ND_LAYERS[rank]
    self.expansion = 4 if bottleneck else 1
    out = planes * self.expansion
    if bottleneck:
      self.body = nn.Sequential(
          conv(cin, planes, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, planes, 3, stride, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, out, 1, bias=False), bn(out))
    else:
      self.body = nn.Sequential(
          conv(cin, planes, 3, stride, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, planes, 3, 1, 1, bias=False), bn(planes))
    self.down = None
    if stride != 1 or cin != out:
      self.down = nn.Sequential(conv(cin, out, 1, stride, bias=False), bn(out))

  def forward(self, x):
    s = self.down(x) if self.down is not None else x
    return F.relu(self.body(x) + s)


class NdResNet(nn.Module):
  def __init__(self, rank, stages, bottleneck, num_classes, channels):
    super().__init__()
    conv, bn, pool = _ND_LAYERS[rank]
    self.stem = nn.Sequential(conv(channels, 64, 7, 2, 3, bias=False), bn(64),
                              nn.ReLU(inplace=True), pool(3, 2, 1))
    blocks, cin = [], 64
    for s, n in enumerate(stages):
      for i in range(n):
        blocks.append(_NdBlock(rank, cin, 64 * 2 ** s, 2 if s > 0 and i == 0 else 1,
                               bottleneck))
        cin = 64 * 2 ** s * (4 if bottleneck else 1)
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.blocks(self.stem(x))
    return self.fc(torch.flatten(x, 2).mean(-1))


_ND_DEPTHS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
              "resnet50": ((3, 4, 6, 3), True)}


_CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
_VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")


def build(name, num_classes, channels):
  """The torch model for a cnnlab registry name; ValueError if there is no equivalent."""
  if name == "lenet5":
    return LeNet5(num_classes, channels)
  if name in _CIFAR_DEPTHS and channels == 3:
    return CifarResNet(_CIFAR_DEPTHS[name], num_classes)
  if name == "fcn1d":
    return FCN1D(num_classes, channels)
  if name == "resnet1d":
    return ResNet1D(num_classes, channels)
  depth, _, dims = name.partition("_")
  if depth in _ND_DEPTHS and dims in ("1d", "3d"):
    return NdResNet(int(dims[0]), *_ND_DEPTHS[depth], num_classes, channels)
  import torchvision
  if name in _VIDEO:
    return getattr(torchvision.models.video, name)(num_classes=num_classes)
  builder = getattr(torchvision.models, name, None)
  if builder is None or not callable(builder):
    raise ValueError(f"no PyTorch equivalent of {name!r}")
  kw = {"num_classes": num_classes}
  if name == "googlenet":
    kw.update(aux_logits=True, init_weights=True)
  return builder(**kw)


def _memory_format(rank, channels_last):
  if not channels_last:
    return torch.contiguous_format
  return {2: torch.channels_last, 3: torch.channels_last_3d}[rank]


# --- the worker ---------------------------------------------------------------------------------
class Bench:
  def __init__(self, cmd):
    threads = int(cmd.get("threads") or 0)
    if threads > 0:
      torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.device = torch.device(cmd.get("device", "cpu"))
    if self.device.type == "cuda":
      torch.backends.cudnn.benchmark = True
    self.batch = int(cmd["batch_size"])
    shape = cmd.get("input_shape") or [cmd["image_size"], cmd["image_size"],
                                       cmd.get("channels", 3)]
    *spatial, channels = (int(v) for v in shape)
    self.rank = len(spatial)
    num_classes = int(cmd.get("num_classes", 1000))
    self.aux_weight = float(cmd.get("aux_loss_weight", 0.3))
    self.bf16 = cmd.get("dtype", "float32") == "bfloat16"
    self.model = build(cmd["model"], num_classes, channels).to(self.device)
    self.opt = torch.optim.SGD(self.model.parameters(), lr=float(cmd.get("learning_rate", 0.01)),
                               momentum=0.9, weight_decay=float(cmd.get("weight_decay", 1e-4)))
    g = torch.Generator().manual_seed(1)
    self.x = torch.randn(self.batch, channels, *spatial, generator=g).to(self.device)
    self.y = torch.randint(0, num_classes, (self.batch,), generator=g).to(self.device)
    mode = cmd.get("channels_last", "auto")
    if self.rank == 1:
      self.channels_last = False        # no channels-last format for 1-D tensors
    elif mode == "auto":
      self.channels_last = self._pick_layout()
    else:
      self.channels_last = mode in (True, "on", "true", "1")
    self._set_layout(self.channels_last)
    self.info = {"channels_last": self.channels_last, "threads": torch.get_num_threads(),
                 "params": sum(p.numel() for p in self.model.parameters()),
                 "torch": torch.__version__, "device": str(self.device),
                 "mkldnn": bool(torch.backends.mkldnn.is_available())}
    if self.device.type == "cuda":
      self.info["gpu"] = torch.cuda.get_device_name(self.device)

  def _set_layout(self, channels_last):
    fmt = _memory_format(self.rank, channels_last)
    self.model = self.model.to(memory_format=fmt)
    self.xl = self.x.contiguous(memory_format=fmt)

  def _pick_layout(self):
    """channels_last only where it is faster for this model here (best of 3 steps each)."""
    best = {}
    for cl in (False, True):
      self._set_layout(cl)
      self.train(1)
      best[cl] = min(self.train(1)["seconds"] for _ in range(3))
    return best[True] < best[False]

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

  def train(self, steps):
    self.model.train()
    acc = torch.zeros((), device=self.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      with self._autocast():
        out = self.model(self.xl)
        if isinstance(out, tuple):          # GoogLeNetOutputs(logits, aux2, aux1)
          logits = out[0]
          loss = F.cross_entropy(logits.float(), self.y)
          for aux in out[1:]:
            if aux is not None:
              loss = loss + self.aux_weight * F.cross_entropy(aux.float(), self.y)
        else:
          logits = out
          loss = F.cross_entropy(logits.float(), self.y)
      loss.backward()
      self.opt.step()
      acc = acc + (logits.detach().argmax(-1) == self.y).float().mean()
    float(acc)                               # one host sync per round (waits for the GPU too)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch}

  def profile(self, steps):
    """``steps`` train steps under torch.profiler: each operator's self CPU time and calls."""
    from torch.profiler import ProfilerActivity, profile
    self.train(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
      timing = self.train(steps)
    ops = [{"name": e.key, "seconds": e.self_cpu_time_total * 1e-6, "calls": e.count}
           for e in prof.key_averages() if e.self_cpu_time_total > 0]
    return {**timing, "ops": ops}

  @torch.no_grad()
  def eval(self, steps):
    self.model.eval()
    correct = torch.zeros((), device=self.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      with self._autocast():
        logits = self.model(self.xl)
      correct = correct + (logits.argmax(-1) == self.y).sum()
    float(correct)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch}


def serve(stdin=sys.stdin, stdout=sys.stdout):
  bench = None
  for line in stdin:
    line = line.strip()
    if not line:
      continue
    try:
      cmd = json.loads(line)
      kind = cmd.get("cmd")
      if kind == "quit":
        break
      if kind == "ping":
        import torchvision
        reply = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                 "cuda": torch.cuda.is_available()}
      elif kind == "setup":
        bench = None                  # free the last model first (GPU memory is shared)
        if torch.cuda.is_available():
          torch.cuda.empty_cache()
        bench = Bench(cmd)
        reply = bench.info
      elif kind in ("train", "eval", "profile"):
        if bench is None:
          raise ValueError(f"send 'setup' before {kind!r}")
        reply = getattr(bench, kind)(int(cmd.get("steps", 1)))
      else:
        raise ValueError(f"unknown cmd {kind!r}; valid: ping, setup, train, eval, profile, quit")
      reply = {"ok": True, **reply}
    except Exception as e:  # reported to the driver, which decides what to do
      reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    stdout.write(json.dumps(reply) + "\n")
    stdout.flush()


def main(argv):
  if len(argv) > 1 and argv[1] != "--serve":
    name, batch, size = argv[1], int(argv[2]), int(argv[3])
    steps = int(argv[4]) if len(argv) > 4 else 10
    channels = 1 if name.startswith("lenet") else 3
    classes = 10 if name.startswith("lenet") or name in _CIFAR_DEPTHS else 1000
    b = Bench({"model": name, "batch_size": batch, "input_shape": [size, size, channels],
               "num_classes": classes,
               "device": "cuda" if torch.cuda.is_available() else "cpu"})
    b.train(2)
    r = b.train(steps)
    print(json.dumps({**b.info, "train_img_s": r["images"] / r["seconds"]}))
    return
  # 'same' padding with the 1-D baselines' even kernels: torch warns that it pads a copy.
  warnings.filterwarnings("ignore", message="Using padding='same'")
  # Keep stdout for the protocol: anything torch prints goes to stderr.
  out = sys.stdout
  sys.stdout = sys.stderr
  serve(sys.stdin, out)


if __name__ == "__main__":
  main(sys.argv)
