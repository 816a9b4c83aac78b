"""The PyTorch side of ``experiments.benchmark --compare=torch``: a worker process,
``python -m cnnlab.bench.torch_worker --serve`` under an interpreter that has torch.

It imports only torch / torchvision (an optional extra, never a cnnlab dependency:
``pip install torch==2.14.1 torchvision==0.29.1``) and is driven over stdin/stdout, one JSON
object per line, so that benchmark.py can interleave its rounds with the JAX rounds:

  {"cmd": "setup", "model": "resnet18", "batch_size": 16, "input_shape": [224, 224, 3],
   "num_classes": 1000, "task": "classify" (or "segment": labels per pixel), "threads": 2,
   "dtype": "float32", "channels_last": "auto",
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
has them (cnnlab/bench/torch_models.py).

Run standalone for a quick look:  python -m cnnlab.bench.torch_worker resnet18 16 224 [steps]
Only ``cnnlab/__init__``'s JAX-free path runs before it (an interpreter with torch but no JAX
can run it); nothing in cnnlab imports this module.
"""
import json
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from cnnlab.bench.torch_models import _CIFAR_DEPTHS, _memory_format, build


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
    num_classes = int(cmd["num_classes"])
    self.aux_weight = float(cmd["aux_loss_weight"])
    self.bf16 = cmd["dtype"] == "bfloat16"
    self.model = build(cmd["model"], num_classes, channels).to(self.device)
    self.opt = torch.optim.SGD(self.model.parameters(), lr=float(cmd["learning_rate"]),
                               momentum=0.9, weight_decay=float(cmd["weight_decay"]))
    g = torch.Generator().manual_seed(1)
    self.x = torch.randn(self.batch, channels, *spatial, generator=g).to(self.device)
    self.segment = cmd.get("task", "classify") == "segment"   # labels per pixel / voxel
    label_shape = (self.batch, *spatial) if self.segment else (self.batch,)
    self.y = torch.randint(0, num_classes, label_shape, generator=g).to(self.device)
    self.class_axis = 1 if self.segment else -1
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
      acc = acc + (logits.detach().argmax(self.class_axis) == self.y).float().mean()
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
      correct = correct + (logits.argmax(self.class_axis) == self.y).sum()
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
               "num_classes": classes, "dtype": "float32", "learning_rate": 0.01,
               "weight_decay": 1e-4, "aux_loss_weight": 0.3 if name == "googlenet" else 0.0,
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
