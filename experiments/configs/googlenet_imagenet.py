"""GoogLeNet / Inception-v1 (Szegedy et al. 2015, "Going Deeper with Convolutions"), torchvision
layout (with BatchNorm), on ImageNet-1k.

    python -m experiments.train --config=experiments/configs/googlenet_imagenet.py --workdir=runs/googlenet

Paper recipe (§6): asynchronous SGD with momentum 0.9, lr decreased by 4 % every 8 epochs,
auxiliary classifiers' losses weighted 0.3 (dropped at inference), Polyak averaging for the
final model (here: an EMA of the parameters), photometric and scale/aspect augmentation
(here: Inception random-resized crop, area 8-100 %, aspect 3/4-4/3, and flips). The paper's
absolute lr and batch are not given; we use lr 0.1 for batch 256 with SGD (BN makes this safe).
Expected: paper Table 3, one model, one crop: 10.07 % top-5 error; torchvision's googlenet
IMAGENET1K_V1 weights give 69.778 % / 89.530 % top-1 / top-5 accuracy.
Time: about 2 days on one H100 for 90 epochs (estimate).
"""
from experiments.configs.base import base

LR_DECAY_EVERY_EPOCHS = 8
LR_DECAY = 0.96
EPOCHS = 90
EXPECTED = dict(   # for the reproduction report (cnnlab.report)
    order=7, metrics=("error", "top5_error"),
    paper="10.07 % top-5 error (one model, one crop); torchvision weights: 30.22 % / 10.47 %",
    source="Szegedy et al. 2015, Table 3; torchvision model card",
    time_estimate="about 2 days on one H100", seeds=1)


def get_config():
  c = base()
  c.model.name = "googlenet"
  c.dataset.name = "imagenet2012"
  c.dataset.preprocess = "inception"
  c.dataset.image_size = 224
  c.dataset.eval_resize = 256
  c.dataset.shuffle_buffer = 16_384
  c.batch_size = 256
  c.num_epochs = float(EPOCHS)
  c.aux_loss_weight = 0.3
  c.ema_decay = 0.9999
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "piecewise"
  c.schedule.boundaries = tuple(float(e) for e in range(LR_DECAY_EVERY_EPOCHS, EPOCHS,
                                                        LR_DECAY_EVERY_EPOCHS))
  c.schedule.rates = tuple(0.1 * LR_DECAY ** i for i in range(len(c.schedule.boundaries) + 1))
  c.checkpoint_every_steps = 5000
  return c
