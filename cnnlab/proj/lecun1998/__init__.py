"""LeNet-5 trained as in LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied
to document recognition" (Proc. IEEE 86(11)): what it registers with the engine.

- loss ``lenet_map``: the MAP criterion (eq. 9) on the RBF outputs, constant ``j`` from
  ``config.loss_rubbish_j`` (cnnlab/models/lenet.py computes it with the model's RBF codes);
- optimizer ``sdlm``: stochastic diagonal Levenberg-Marquardt (§III-C, Appendix C), sdlm.py;
- step kind ``online`` (``config.online_updates=True``): each engine step's batch consumed as
  that many single-example updates, with SDLM's curvature re-estimated before every pass
  (online.py; the paper's own curvature recursion in curvature.py).

Modules: sdlm, online, curvature.
"""
from __future__ import annotations

from cnnlab.config import fail
from cnnlab.config.checks import one_of, positive
from cnnlab.models import lenet
from cnnlab.proj.lecun1998 import online, sdlm
from cnnlab.training import registry


def _map_loss(spec):
  return lambda logits, batch: lenet.map_loss(logits, batch["label"], spec.loss_rubbish_j)


def _sdlm(spec, schedule):
  return sdlm.sdlm(schedule, spec.sdlm_mu)


def _check_sdlm(c) -> None:
  o = c.optimizer
  positive(c, "optimizer.sdlm_mu", integer=False)
  positive(c, "optimizer.sdlm_hessian_samples", integer=True)
  if not c.online_updates:
    fail("optimizer.name", o.name, "sdlm re-estimates its curvature once per pass and steps "
         "one example at a time: set online_updates=True")
  one_of("optimizer.sdlm_curvature", o.sdlm_curvature, ("gauss_newton", "paper"))
  if o.sdlm_curvature == "paper" and (c.model.name != "lenet5_1998" or c.loss != "lenet_map"):
    fail("optimizer.sdlm_curvature", o.sdlm_curvature, "'paper' (LeCun et al. 1998, App. C) "
         "is implemented for model lenet5_1998 with loss lenet_map only")


def _check_online(c) -> None:
  """Online updates: one example at a time inside the step (online.py)."""
  if c.schedule.name == "plateau":
    fail("schedule.name", c.schedule.name, "plateau is not available with online_updates")
  if c.grad_accum_steps != 1:
    fail("grad_accum_steps", c.grad_accum_steps, "must be 1 with online_updates")
  if c.ema_decay:
    fail("ema_decay", c.ema_decay, "must be 0 with online_updates")
  if c.optimizer.weight_decay:
    fail("optimizer.weight_decay", c.optimizer.weight_decay,
         "must be 0 with online_updates (not implemented there)")


registry.register_loss("lenet_map", _map_loss)
registry.register_optimizer("sdlm", _sdlm, check=_check_sdlm)
# One engine step = one global batch of single-example updates: the optimizer counts examples.
registry.register_step("online", online.from_spec, check=_check_online,
                       updates_per_step=lambda spec: spec.loop.global_batch)
