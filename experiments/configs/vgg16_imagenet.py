"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks") on ImageNet-1k.

Config argument: "<depth>[_bn]", depth in 11/13/16/19 (default 16):
    python -m experiments.train --config=experiments/configs/vgg16_imagenet.py:16 --workdir=runs/vgg16

Paper recipe (§3.1): batch 256, SGD momentum 0.9, weight decay 5e-4 (L2 in the loss), dropout 0.5
on the first two FC layers, lr 0.01 divided by 10 three times when validation accuracy stopped
improving (the paper stopped after 74 epochs; we fix the drops at epochs 30, 50, 65), training
scale jitter S in [256, 512] with random 224 crops and flips.
Expected: paper Table 3 (single-scale test, train S in [256;512], test Q=384): VGG-16 (D)
25.6 % top-1 / 8.1 % top-5 error; Table 4 (multi-scale test): 24.8 % / 7.5 %. torchvision's
vgg16 IMAGENET1K_V1 weights give 71.592 % / 90.382 % top-1 / top-5 accuracy at 224 center crop.
Time: 2-3 weeks on 4 Titan Black GPUs in the paper; ~1.5 days on one H100 in bf16 (estimate).
"""
from experiments.configs.base import base

EXPECTED = dict(   # for the reproduction report (cnnlab.report)
    order=6, metrics=("error", "top5_error"),
    paper="25.6 % / 8.1 % top-1 / top-5 error (single scale, Q=384); torchvision weights at "
          "224 crop: 28.41 % / 9.62 %",
    source="Simonyan & Zisserman 2015, Table 3; torchvision model card",
    time_estimate="~1.5 days on one H100 in bf16", seeds=1)

DEPTHS = (11, 13, 16, 19)


def get_config(arg: str = "16"):
  bn = arg.endswith("_bn")
  depth = int(arg[:-3] if bn else arg)
  if depth not in DEPTHS:
    raise ValueError(f"depth={depth} is not one of {DEPTHS}")
  c = base()
  c.model.name = f"vgg{depth}" + ("_bn" if bn else "")
  c.dataset.name = "imagenet2012"
  c.dataset.preprocess = "vgg"
  c.dataset.image_size = 224
  c.dataset.eval_resize = 256
  c.dataset.shuffle_buffer = 16_384
  c.batch_size = 256
  c.num_epochs = 74.0
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.exclude_norm_and_bias = False
  c.schedule.name = "step"
  c.schedule.boundaries = (30.0, 50.0, 65.0)
  c.schedule.decay_factor = 0.1
  c.checkpoint_every_steps = 5000
  return c
