"""Transfer learning on data we have: LeNet-5 trained on MNIST, fine-tuned on 1,000 labelled
Fashion-MNIST images, against the same network trained from scratch on the same 1,000.

Commands (the first is the README's main job; it leaves the MNIST run in runs/lenet5_mnist):
    python -m experiments.train --config=experiments/configs/lenet5_mnist.py --workdir=runs/lenet5_mnist
    python -m experiments.train --config=experiments/configs/lenet5_fashion_finetune.py:finetune --workdir=runs/fmnist1k_finetune
    python -m experiments.train --config=experiments/configs/lenet5_fashion_finetune.py:scratch --workdir=runs/fmnist1k_scratch

The fine-tuned run starts from every MNIST weight except the classifier (re-initialised, the
class meanings differ) and trains all layers with the optimizer below; ``--config.freeze`` /
``--config.lr_groups`` / ``--config.linear_probe=True`` give the other usual baselines.
Evaluation is on the whole Fashion-MNIST test split (10,000). No paper number: this is our own
transfer baseline; results of both arms are in docs/RESULTS.md. Time: ~1 min per run on a 2-core
CPU (after the MNIST run).
"""
from experiments.configs.base import base

LABELLED = 1_000                 # labelled Fashion-MNIST training images
SOURCE = "runs/lenet5_mnist"     # the main job's workdir (its latest checkpoint)
# No EXPECTED (the report's per-recipe table): this is a two-arm comparison without a paper
# target. ARMS lets the report recognise a run of either arm (cnnlab.report.runs.identify), so
# it is labelled lenet5_fashion_finetune:finetune / :scratch, never lenet5_fashion_mnist.
ARMS = ("finetune", "scratch")


def get_config(arm: str = "finetune"):
  if arm not in ("finetune", "scratch"):
    raise ValueError(f"arm={arm!r} is not one of finetune, scratch")
  c = base()
  c.model.name = "lenet5"
  c.dataset.name = "fashion_mnist"
  c.dataset.preprocess = "standard"
  c.dataset.train_split = f"train[:{LABELLED}]"
  c.batch_size = 50
  c.num_epochs = 30.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = "decoupled"
  c.schedule.name = "cosine"
  c.log_every_steps = 20
  c.eval_every_steps = 100
  if arm == "finetune":
    c.init_from = SOURCE
  return c
