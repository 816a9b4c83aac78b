"""ResNet for time series (Wang, Yan & Oates 2017, "Time series classification from scratch
with deep neural networks: a strong baseline", IJCNN, §III.B) on any UCR/UEA archive dataset.

Command:
    CNNLAB_RAW_DATA_DIR=../shared/datasets python -m experiments.train \
        --config=experiments/configs/resnet1d_ucr.py --config.dataset.name=ucr/GunPoint \
        --workdir=runs/resnet1d_gunpoint --config.seed=0

Protocol: as fcn1d_ucr.py (Ismail Fawaz et al. 2019, DMKD 33(4)) except 1,500 epochs and
batch min(64, n_train / 10).

Published test accuracy of ResNet, mean over runs (shared ../shared/datasets/ucr/README.md):
GunPoint 0.991, ItalyPowerDemand 0.962, ArrowHead 0.838, JapaneseVowels 0.992.
"""
from experiments.configs.base import base
from experiments.configs.fcn1d_ucr import TARGET_MARGIN, ucr_protocol

PAPER_TEST_ACCURACY = {"ucr/GunPoint": 0.991, "ucr/ItalyPowerDemand": 0.962,
                       "ucr/ArrowHead": 0.838, "ucr/JapaneseVowels": 0.992}
EPOCHS = 1500
BATCH_MAX = 64
EXPECTED = dict(   # for the reproduction report (cnnlab.report): the default dataset, GunPoint
    order=21, metrics=("accuracy",),
    paper=f"{PAPER_TEST_ACCURACY['ucr/GunPoint']:.3f} test accuracy on GunPoint (mean over runs)",
    source="Ismail Fawaz et al. 2019 (DMKD 33(4)), results-ucr-128.csv; Wang et al. 2017",
    datasets=PAPER_TEST_ACCURACY, target_margin=TARGET_MARGIN,
    time_estimate=("5.5 min per seed on ItalyPowerDemand (length 24) on a shared 2-core CPU; "
                   "~15-20 min for length 150-250 (65 ms per step at batch 5 x 150)"), seeds=5)


def get_config():
  c = base()
  c.model.name = "resnet1d"
  return ucr_protocol(c, epochs=EPOCHS, batch_max=BATCH_MAX)
