"""Transfer learning pieces: merging pretrained variables into a fresh model (matching shapes
taken, head re-initialised, first layer adapted, any other mismatch a one-line error), freezing
(bit-identical frozen parameters and statistics) and learning-rate groups."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import models
from cnnlab.training import transfer


def _init(model, shape):
  return jax.jit(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False))(
      jax.random.PRNGKey(0))


def test_head_and_input_paths_are_found_by_asking_the_model():
  m = models.create("resnet18", num_classes=10)
  assert transfer.head_paths(m, (32, 32, 3)) == {"params/fc/kernel", "params/fc/bias"}
  assert transfer.input_paths(m, (32, 32, 3)) == {"params/conv1/kernel"}
  g = models.create("googlenet", num_classes=10)
  heads = transfer.head_paths(g, (64, 64, 3))
  assert {"params/fc/kernel", "params/aux1/fc2/kernel", "params/aux2/fc2/kernel"} <= heads
  assert not any("fc1" in h for h in heads)


def test_merge_takes_matching_reinitialises_head_and_adapts_grey_input():
  src_model = models.create("resnet18", num_classes=1000)
  src = _init(src_model, (32, 32, 3))
  tgt_model = models.create("resnet18", num_classes=5)
  fresh = _init(tgt_model, (32, 32, 1))
  merged, report = transfer.merge(fresh, src, head=transfer.head_paths(tgt_model, (32, 32, 1)),
                                  first=transfer.input_paths(tgt_model, (32, 32, 1)))
  assert report.reinitialised == ("params/fc/kernel", "params/fc/bias") or \
      set(report.reinitialised) == {"params/fc/kernel", "params/fc/bias"}
  assert report.adapted == ("params/conv1/kernel",)
  np.testing.assert_array_equal(merged["params"]["layer3_1"]["conv2"]["kernel"],
                                src["params"]["layer3_1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["bn1"]["var"], src["batch_stats"]["bn1"]["var"])
  np.testing.assert_array_equal(merged["params"]["fc"]["kernel"], fresh["params"]["fc"]["kernel"])
  # Grey input: the summed RGB kernel responds to x exactly as the RGB kernel to (x, x, x).
  grey = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 1)), jnp.float32)
  feats_src = models.create("resnet18", num_classes=0).apply(src, jnp.repeat(grey, 3, -1))
  feats_tgt = models.create("resnet18", num_classes=0).apply(merged, grey)
  np.testing.assert_allclose(feats_tgt, feats_src, rtol=1e-4, atol=1e-4)


def test_adapt_input_kernel_many_channels_keeps_equal_channel_response():
  w = np.random.default_rng(1).normal(size=(3, 3, 3, 4))
  w6 = transfer.adapt_input_kernel(w, 6)
  assert w6.shape == (3, 3, 6, 4)
  np.testing.assert_allclose(w6.sum(axis=2), w.sum(axis=2), rtol=1e-12)
  w5 = transfer.adapt_input_kernel(w, 5)
  np.testing.assert_allclose(w5[:, :, 3], w[:, :, 0] * 3 / 5, rtol=1e-12)


def test_merge_mismatch_is_one_line_naming_the_parameters():
  src = _init(models.create("resnet18", num_classes=10), (32, 32, 3))
  tgt_model = models.create("resnet34", num_classes=10)
  fresh = _init(tgt_model, (32, 32, 3))
  with pytest.raises(transfer.TransferError) as e:
    transfer.merge(fresh, src, head=transfer.head_paths(tgt_model, (32, 32, 3)),
                   source_name="r18")
  msg = str(e.value)
  assert "\n" not in msg and "layer1_2" in msg and "missing" in msg and "'r18'" in msg


def test_freeze_is_bit_identical_and_lr_groups_scale_updates():
  model = models.create("resnet18", num_classes=3)
  variables = _init(model, (16, 16, 3))
  params, stats = variables["params"], variables["batch_stats"]
  tx, frozen = transfer.partition_optimizer(optax.sgd(0.1, momentum=0.9), params,
                                            freeze=("^conv1", "^bn1", "^layer1_"),
                                            lr_groups=(("^fc", 0.0),))
  assert "conv1/kernel" in frozen and all(not f.startswith("layer2") for f in frozen)
  mask = transfer.frozen_stats_mask(stats, frozen)
  assert mask["bn1"]["mean"] and mask["layer1_0"]["bn2"]["var"] and not mask["layer2_0"]["bn1"]["mean"]
  opt_state = tx.init(params)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
  y = jnp.array([0, 1, 2, 0])

  def loss(p, s):
    out, upd = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), upd["batch_stats"]

  p, s, o = params, stats, opt_state
  for _ in range(2):
    (_, new_s), g = jax.value_and_grad(loss, has_aux=True)(p, s)
    upd, o = tx.update(g, o, p)
    p = optax.apply_updates(p, upd)
    s = jax.tree.map(lambda m, n, old: old if m else n, mask, new_s, s)
  np.testing.assert_array_equal(p["conv1"]["kernel"], params["conv1"]["kernel"])
  np.testing.assert_array_equal(p["layer1_1"]["conv2"]["kernel"], params["layer1_1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(p["fc"]["kernel"], params["fc"]["kernel"])     # lr x 0
  np.testing.assert_array_equal(s["bn1"]["mean"], stats["bn1"]["mean"])
  assert not np.array_equal(p["layer2_0"]["conv1"]["kernel"], params["layer2_0"]["conv1"]["kernel"])
  assert not np.array_equal(s["layer2_0"]["bn1"]["mean"], stats["layer2_0"]["bn1"]["mean"])


def test_bad_patterns_and_sources_are_one_line():
  params = _init(models.create("lenet5"), (28, 28, 1))["params"]
  with pytest.raises(transfer.TransferError, match="matches no parameter"):
    transfer.partition_optimizer(optax.sgd(0.1), params, freeze=("^nope",))
  with pytest.raises(transfer.TransferError, match="not a regular expression"):
    transfer.partition_optimizer(optax.sgd(0.1), params, freeze=("(",))
  with pytest.raises(transfer.TransferError, match="REGEX=MULTIPLIER"):
    transfer.parse_lr_groups("fc")
  with pytest.raises(transfer.TransferError, match=">= 0"):
    transfer.parse_lr_groups("fc=-1")
  assert transfer.parse_lr_groups("^fc=10, ^conv=0.5") == (("^fc", 10.0), ("^conv", 0.5))
  with pytest.raises(transfer.TransferError, match="no such file"):
    transfer.parse_source("/nonexistent/w.safetensors")
  with pytest.raises(transfer.TransferError, match="neither"):
    transfer.parse_source("/nonexistent/run:best")
