"""3-D U-Net (Çiçek, Abdulkadir, Lienkamp, Brox & Ronneberger 2016, "3D U-Net: learning dense
volumetric segmentation from sparse annotation", MICCAI) on the synthetic CT "organ" phantoms
the project writes itself on first use (cnnlab/datasets/phantoms.py: a body with liver, kidney
and spine and a small liver lesion, random poses, noise; 48^3 voxels of 5 mm; 256 training,
32 validation and 32 test volumes).

Command (no preparation step):
    python -m experiments.train --config=experiments/configs/unet3d_phantoms.py \\
        --workdir=runs/unet3d_phantoms

The network is the paper's (§2, Fig. 2: per level two 3x3x3 convolutions with BatchNorm before
each ReLU, the channels doubled before each 2x2x2 max-pool, up-convolutions, a 1x1x1 head),
narrowed for a CPU: 8 base channels instead of 32, depth 3, same padding, one input channel
(the soft-tissue CT window, W 350 / L 50 HU), 5 classes. Training: random 32^3 crops (a 48^3
volume costs ~2.6x a crop per step), soft Dice + cross-entropy (the classes are very unequal in
size: the lesion is a few hundred voxels), Adam 3e-3, batch 2, STEPS steps; evaluation on the
validation volumes predicted whole from overlapping 32^3 tiles (Gaussian blending).

Expected (own target, issue 26): mean Dice over the three organs >= 0.90 on the validation
volumes in <= 15 minutes on a CPU. The lesion's Dice is reported beside it (no target).
"""
from experiments.configs.base import base

STEPS = 600
TARGET_ORGAN_DICE = 0.90
ORGANS = ("liver", "kidney", "spine")
EXPECTED = dict(   # for the reproduction report (cnnlab.report)
    order=45, metrics=("dice:" + "+".join(ORGANS), "dice:lesion"),
    paper=f"mean organ Dice >= {TARGET_ORGAN_DICE} (own target; synthetic phantoms)",
    source="own target (issue 26)", target=("dice:" + "+".join(ORGANS), ">=", TARGET_ORGAN_DICE),
    time_estimate="<= 15 min on a 2-core CPU", seeds=1)


def get_config():
  c = base()
  c.model.name = "unet3d"
  c.model.num_classes = None
  c.model.kwargs = {"base_channels": 8, "depth": 3, "padding": "same"}
  c.dataset.name = "synthetic_phantoms"
  c.dataset.preprocess = "window"
  c.dataset.window = "soft_tissue"
  c.dataset.crop_shape = (32, 32, 32)
  c.dataset.tile_shape = (32, 32, 32)
  c.dataset.tile_overlap = 0.5
  c.dataset.flip_axes = ()
  c.batch_size = 2
  c.num_train_steps = STEPS
  c.loss = "dice_ce"
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.weight_decay = 0.0
  c.schedule.name = "constant"
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.log_every_steps = 20
  c.best_metric = "eval_mean_dice"
  return c
