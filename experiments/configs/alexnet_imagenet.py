"""AlexNet on ImageNet-1k.

Config argument: "alexnet" (torchvision layout, default) or "alexnet_2012" (the paper's net:
LRN, grouped convs, 227x227 crops):
    python -m experiments.train --config=experiments/configs/alexnet_imagenet.py:alexnet_2012 --workdir=runs/alexnet2012

Paper recipe (Krizhevsky, Sutskever & Hinton 2012, §5): batch 128, SGD momentum 0.9, weight
decay 5e-4, lr 0.01 divided by 10 when the validation error stopped improving (three times in
~90 epochs; we fix the drops at epochs 30, 60, 80), dropout 0.5, random 224 (torchvision layout)
or 227 (paper net) crops of 256x256 images with flips. (The paper's PCA colour augmentation is
not implemented.)
Expected: paper Table 2, one CNN: 40.7 % top-1 / 18.2 % top-5 error on ILSVRC-2012 val;
torchvision's alexnet IMAGENET1K_V1 weights give 56.522 % / 79.066 % top-1 / top-5 accuracy.
Time: 5-6 days on two GTX 580 in the paper; a few hours on one H100 (estimate).
"""
from experiments.configs.base import base

VARIANTS = ("alexnet", "alexnet_2012")
EXPECTED = dict(   # for the reproduction report (cnnlab.report)
    order=5, metrics=("error", "top5_error"),
    paper="40.7 % / 18.2 % top-1 / top-5 error (one CNN); torchvision weights: "
          "43.48 % / 20.93 %",
    source="Krizhevsky, Sutskever & Hinton 2012, Table 2; torchvision model card",
    time_estimate="a few hours on one H100", seeds=1)


def get_config(variant: str = "alexnet"):
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r} is not one of {', '.join(VARIANTS)}")
  c = base()
  c.model.name = variant
  c.dataset.name = "imagenet2012"
  c.dataset.preprocess = "alexnet"
  c.dataset.image_size = 227 if variant == "alexnet_2012" else 224
  c.dataset.eval_resize = 256
  c.dataset.shuffle_buffer = 16_384
  c.batch_size = 128
  c.num_epochs = 90.0
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.exclude_norm_and_bias = False
  c.schedule.name = "step"
  c.schedule.boundaries = (30.0, 60.0, 80.0)
  c.schedule.decay_factor = 0.1
  c.checkpoint_every_steps = 5000
  return c
