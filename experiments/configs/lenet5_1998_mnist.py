"""LeNet-5 as published (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied
to Document Recognition", Proc. IEEE 86(11)) on MNIST, without distortions.

    python -m experiments.train --config=experiments/configs/lenet5_1998_mnist.py --workdir=runs/lenet5_1998

Model: the paper's net (``lenet5_1998``): 32x32 inputs (MNIST padded 28 -> 32, background -0.1,
ink 1.175, §III-A), C1-S2-C3 (Table I connections)-S4-C5-F6 with 1.7159 tanh(2a/3) squashing,
weights U(+-2.4/F_in), and the Euclidean RBF output layer with fixed +-1 codes. The loss is
the paper's MAP criterion (eq. 9: the RBF penalty of the correct class plus
log(e^-j + sum_i e^-y_i), j = 1), ``--config.loss=lenet_map``; plain softmax cross-entropy over
the RBF outputs underfits badly (see "What we found").

Schedule: the paper trains 20 passes with its global step size eta = 5e-4 for 2 passes, 2e-4
for 3, 1e-4 for 3, 5e-5 for 4 and 1e-5 for the rest (§II-D / Appendix C). Those values scale
the stochastic diagonal Levenberg-Marquardt (SDLM) per-parameter steps eta / (mu + h_kk), which
cnnlab does not implement; we keep the paper's 20 passes and the *shape* of its schedule (the
same boundaries and ratios 1 : 0.4 : 0.2 : 0.1 : 0.02) on plain SGD with momentum, small
batches standing in for the paper's online updates. See docs/RESULTS.md for what this gives.

What we found (real MNIST, 2-core CPU, single seed each, batch 16; "train" is the running
training accuracy at the end; command template:
  python3 -m experiments.train --config=experiments/configs/lenet5_1998_mnist.py
    --workdir=/tmp/l98x_NAME --config.dataset.data_dir=/tmp/tfds_real --config.num_epochs=5
    [overrides]):
  config (CE loss unless noted)                        epochs  test acc  train acc
  this config: SGD m0.9 lr 1e-3, paper schedule, RBF      20   98.71 %   98.83 %
    (same run at 1 / 3 / 5 epochs:                              95.59 / 98.06 / 98.21 %)
  SGD lr 5e-4 (--config.optimizer.learning_rate=0.0005)    5   98.08 %   97.78 %
  SGD lr 2e-3                                              1   91.87 %     -
  SGD lr 2e-2                                            div.  ~10 %  (tanh saturated, loss 42)
  AdamW lr 1e-3, paper schedule (--config.optimizer.name=adamw)  5  97.57 %  97.41 %
  AdamW lr 3e-3                                            1   92.36 %     -
  dense softmax head (--config.model.kwargs="{'head': 'dense'}")  5  97.02 %  96.58 %
    (stuck at 11.35 % after epoch 1: with the 2.4/F init the signal reaching a fresh dense
    head is tiny; the fixed +-1 RBF codes act as a large fixed-gain head and avoid this)
  RBF, init U(+-2.4/sqrt F) instead of U(+-2.4/F) *    3   97.56 %   98.44 %
  RBF, the paper's MAP loss (lenet.map_loss, j=1) *   10   98.95 %   99.42 %
    (same run at 1 / 3 / 5 / 7 epochs: 98.06 / 98.71 / 98.77 / 98.88 %; train at 3: 99.03 %)
  * standalone loop (/tmp/mini.py: same model, data, batch 16, SGD m0.9 lr 1e-3, paper
    schedule; the loss and init are not config options of experiments.train).
Diagnosis: everything trained with softmax cross-entropy underfits (train ~98.8 % after 20
passes). In the 20-epoch checkpoint the later layers never leave tanh's linear range (mean
|2a/3| = 0.12 at C5 and 0.08 at F6; F6 outputs ~0.1 against +-1 codes), so C5/F6 act almost
linearly. The cause is the loss on the RBF output: the logit gaps 2 x.(w_i - w_j) are already
large for tiny F6 outputs x, so CE saturates early and nothing pulls F6 to its code. The paper's
criterion (eq. 9) keeps a y_{D_p} = ||x - w_D||^2 term at full weight (the "rubbish" class
absorbs the partition function), i.e. a regression of F6 onto the +-1 code; with it the same
model and optimizer reach in 3 epochs what CE reaches in 20, and 1.05 % error after 10
(one seed; the paper's 0.95 % is at 20 passes with SDLM, so it is still not shown here).
Step size, optimizer (AdamW as a stand-in for SDLM), the dense head and the sqrt(F) init do
not fix CE. Input scaling matches §III-A (background -0.1, ink 1.175). This recipe therefore
trains with the MAP loss (``loss="lenet_map"``, registered by cnnlab/proj/lecun1998) and
otherwise the same hyperparameters; its 3-seed result is in docs/RESULTS.md.

Paper procedure (``:sdlm``):
    python -m experiments.train --config=experiments/configs/lenet5_1998_mnist.py:sdlm --workdir=runs/lenet5_1998_sdlm
trains as §III-C describes: stochastic diagonal Levenberg-Marquardt
(cnnlab/proj/lecun1998/sdlm.py), one example per update (cnnlab/proj/lecun1998/online.py),
mu = 0.02, the curvature by the paper's own recursion (Appendix C,
cnnlab/proj/lecun1998/curvature.py) on 500 patterns before each pass, the
paper's schedule shape over 20 passes — with ONE deviation: eta is the paper's divided by 10
(5e-5, 2e-5, 1e-5, 5e-6, 1e-6; SDLM_ETA_SCALE). ``:sdlm_paper_eta`` keeps the paper's eta 5e-4
(2 passes), 2e-4 (3), 1e-4 (3), 5e-5 (4), 1e-5 (the rest) and DIVERGES here: at the paper's init
U(+-2.4/F) the curvature h_kk of every layer below F6 is far under mu, so those layers step by
eta/mu = 0.025 x the gradient. ``:sdlm`` gives 1.64 +- 0.22 % test error after 20 passes
(3 seeds, docs/RESULTS.md) — worse than the SGD procedure above; probes in BUILD_NOTES.md
("SDLM").

Expected: 0.95 % test error without distortions (paper §III-C, Fig. 9; 0.8 % with distortions).
Time: ~5-10 min per seed on a 2-core Zen4 CPU.
"""
from experiments.configs.base import base

PAPER_TEST_ERROR = 0.95          # percent, no distortions (§III-C)
PAPER_PASSES = 20
PAPER_ETA = (5e-4, 2e-4, 1e-4, 5e-5, 1e-5)   # global step sizes of the SDLM schedule
PAPER_BOUNDARIES = (2.0, 5.0, 8.0, 12.0)     # passes after which eta changes
EXPECTED = dict(   # for the reproduction report (cnnlab.report)
    order=1, metrics=("error",), paper="≤ 0.95 % test error (no distortions)",
    source="LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11), §III-C, Fig. 9",
    time_estimate="minutes on a 2-core CPU", target=("error", "<=", PAPER_TEST_ERROR / 100))


PAPER_MU = 0.02                  # SDLM's mu (§III-C)
PAPER_HESSIAN_SAMPLES = 500      # curvature re-estimated on 500 patterns before each pass (§III-C)
# Ours, not the paper's: ``:sdlm`` scales the paper's eta by this (the paper's diverges here;
# 2e-4 and 1e-4 diverge or stall too, BUILD_NOTES.md "SDLM").
SDLM_ETA_SCALE = 0.1
PROCEDURES = ("sgd", "sdlm", "sdlm_paper_eta")


def get_config(procedure: str = "sgd"):
  """``procedure``: 'sgd' (minibatch SGD with the paper's schedule shape, the 3-seed row in
  docs/RESULTS.md), 'sdlm' (the paper's own procedure, online SDLM, at eta / 10) or
  'sdlm_paper_eta' (the same at the paper's eta, which diverges); see the module docstring."""
  if procedure not in PROCEDURES:
    raise ValueError(f"procedure={procedure!r} is not one of {', '.join(PROCEDURES)}")
  c = base()
  c.model.name = "lenet5_1998"
  c.dataset.name = "mnist"
  c.dataset.preprocess = "lenet1998"
  c.batch_size = 16
  c.num_epochs = float(PAPER_PASSES)
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.001
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 0.0
  c.schedule.name = "piecewise"
  c.schedule.boundaries = PAPER_BOUNDARIES
  c.schedule.rates = PAPER_ETA        # scaled so that rates[0] -> optimizer.learning_rate
  c.loss = "lenet_map"                # the paper's criterion, eq. 9 (see "What we found")
  c.loss_rubbish_j = 1.0
  c.eval_every_steps = -1
  c.log_every_steps = 500
  if procedure.startswith("sdlm"):
    # The paper's procedure (§III-C, Appendix C): online updates, per-parameter steps
    # eta / (mu + h_kk) with the curvature (the paper's recursion) re-estimated on 500 patterns
    # before each pass. One engine step = 500 successive one-example updates (its first 500
    # examples are the curvature sample at the start of a pass); 120 steps per pass.
    c.batch_size = PAPER_HESSIAN_SAMPLES
    c.online_updates = True
    c.optimizer.name = "sdlm"
    c.optimizer.sdlm_curvature = "paper"
    c.optimizer.learning_rate = PAPER_ETA[0] * (
        1.0 if procedure == "sdlm_paper_eta" else SDLM_ETA_SCALE)
    c.optimizer.momentum = 0.0
    c.optimizer.sdlm_mu = PAPER_MU
    c.optimizer.sdlm_hessian_samples = PAPER_HESSIAN_SAMPLES
    c.log_every_steps = 20
  return c
