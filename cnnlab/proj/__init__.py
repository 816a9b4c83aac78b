"""Research code that belongs to one paper, kept out of the engine (big_vision's ``proj/``).

Each project registers what it adds — losses, optimizers, kinds of train step, and the config
rules that come with them — with ``cnnlab.training.registry`` (and through it
``cnnlab.config.registry``) when imported; ``cnnlab/__init__.py`` imports every project here, so
a config naming one of its parts resolves like any other. Projects:

- lecun1998: LeNet-5 as LeCun, Bottou, Bengio & Haffner 1998 trained it — the MAP loss on RBF
  outputs, stochastic diagonal Levenberg-Marquardt, online (per-example) updates, and the
  paper's curvature recursion.
"""
from cnnlab.proj import lecun1998  # noqa: F401
