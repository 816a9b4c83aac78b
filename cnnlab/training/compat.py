"""``Run(config).restore_checkpoint(workdir, which)`` for experiments/visualize.py, written
before ``load_trained``; delete once it calls ``cnnlab.training.load_trained``."""
from __future__ import annotations


class Run:
  def __init__(self, config):
    self._config = self.config = config
    self.model = None
    self.image_shape = None

  def restore_checkpoint(self, workdir: str, which: str = "latest"):
    from cnnlab.training.trained import load_trained
    t = load_trained(workdir, which, spec=self._config)
    self.model, self.image_shape = t.model, t.spec.model.input_shape
    return t.state, t.step
