"""Transfer learning pieces: merging pretrained variables into a fresh model (matching shapes
taken, head re-initialised, first layer adapted, any other mismatch a one-line error), freezing
(bit-identical frozen parameters and statistics) and learning-rate groups."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import models
from cnnlab.training import sources, transfer


def _init(model, shape):
  return jax.jit(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False))(
      jax.random.PRNGKey(0))


def _zeros(model, shape):
  """Variables of the right shapes without compiling an init (for tests of shapes only)."""
  abstract = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False),
                            jax.random.PRNGKey(0))
  return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)


@pytest.fixture(scope="module")
def resnet18_1000():
  """Seeded 1000-class RGB ResNet-18 variables (ImageNet's head), built once for the module."""
  return _init(models.create("resnet18", num_classes=1000), (32, 32, 3))


def test_head_and_input_paths_are_found_by_asking_the_model():
  m = models.create("resnet18", num_classes=10)
  assert transfer.head_paths(m, (32, 32, 3)) == {"params/fc/kernel", "params/fc/bias"}
  assert transfer.input_paths(m, (32, 32, 3)) == {"params/conv1/kernel"}
  g = models.create("googlenet", num_classes=10)
  heads = transfer.head_paths(g, (64, 64, 3))
  assert {"params/fc/kernel", "params/aux1/fc2/kernel", "params/aux2/fc2/kernel"} <= heads
  assert not any("fc1" in h for h in heads)


def test_merge_takes_matching_reinitialises_head_and_adapts_grey_input(resnet18_1000):
  src = resnet18_1000
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
  features = jax.jit(models.create("resnet18", num_classes=0).apply)
  feats_src = features(src, jnp.repeat(grey, 3, -1))
  feats_tgt = features(merged, grey)
  np.testing.assert_allclose(feats_tgt, feats_src, rtol=1e-4, atol=1e-4)


def test_adapt_input_kernel_many_channels_keeps_equal_channel_response():
  w = np.random.default_rng(1).normal(size=(3, 3, 3, 4))
  w6 = transfer.adapt_input_kernel(w, 6)
  assert w6.shape == (3, 3, 6, 4)
  np.testing.assert_allclose(w6.sum(axis=2), w.sum(axis=2), rtol=1e-12)
  w5 = transfer.adapt_input_kernel(w, 5)
  np.testing.assert_allclose(w5[:, :, 3], w[:, :, 0] * 3 / 5, rtol=1e-12)


def test_merge_mismatch_is_one_line_naming_the_parameters():
  src = _zeros(models.create("resnet18", num_classes=10), (32, 32, 3))
  tgt_model = models.create("resnet34", num_classes=10)
  fresh = _zeros(tgt_model, (32, 32, 3))
  with pytest.raises(transfer.TransferError) as e:
    transfer.merge(fresh, src, head=transfer.head_paths(tgt_model, (32, 32, 3)),
                   source_name="r18")
  msg = str(e.value)
  assert "\n" not in msg and "layer1_2" in msg and "missing" in msg and "'r18'" in msg


def test_freeze_is_bit_identical_and_lr_groups_scale_updates():
  model = models.create("resnet18", num_classes=3)
  variables = _init(model, (16, 16, 3))
  params, stats = variables["params"], variables["batch_stats"]
  groups = (("^fc", 0.0),)
  tree = transfer.labels(params, ("^conv1", "^bn1", "^layer1_"), groups)
  tx = transfer.partition_optimizer(optax.sgd(0.1, momentum=0.9), tree, groups)
  frozen = transfer.frozen_paths(tree)
  assert "conv1/kernel" in frozen and all(not f.startswith("layer2") for f in frozen)
  mask = transfer.frozen_stats_mask(stats, frozen)
  assert mask["bn1"]["mean"] and mask["layer1_0"]["bn2"]["var"] and not mask["layer2_0"]["bn1"]["mean"]
  opt_state = tx.init(params)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
  y = jnp.array([0, 1, 2, 0])

  def loss(p, s):
    out, upd = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), upd["batch_stats"]

  @jax.jit
  def step(p, s, o):
    (_, new_s), g = jax.value_and_grad(loss, has_aux=True)(p, s)
    upd, o = tx.update(g, o, p)
    s = jax.tree.map(lambda m, n, old: old if m else n, mask, new_s, s)
    return optax.apply_updates(p, upd), s, o

  p, s, o = params, stats, opt_state
  for _ in range(2):
    p, s, o = step(p, s, o)
  np.testing.assert_array_equal(p["conv1"]["kernel"], params["conv1"]["kernel"])
  np.testing.assert_array_equal(p["layer1_1"]["conv2"]["kernel"], params["layer1_1"]["conv2"]["kernel"])
  np.testing.assert_array_equal(p["fc"]["kernel"], params["fc"]["kernel"])     # lr x 0
  np.testing.assert_array_equal(s["bn1"]["mean"], stats["bn1"]["mean"])
  assert not np.array_equal(p["layer2_0"]["conv1"]["kernel"], params["layer2_0"]["conv1"]["kernel"])
  assert not np.array_equal(s["layer2_0"]["bn1"]["mean"], stats["layer2_0"]["bn1"]["mean"])


def test_bad_patterns_and_sources_are_one_line():
  params = _init(models.create("lenet5"), (28, 28, 1))["params"]
  with pytest.raises(transfer.TransferError, match="matches no parameter"):
    transfer.labels(params, freeze=("^nope",))
  with pytest.raises(transfer.TransferError, match="not a regular expression"):
    transfer.labels(params, freeze=("(",))
  with pytest.raises(transfer.TransferError, match="REGEX=MULTIPLIER"):
    transfer.parse_lr_groups("fc")
  with pytest.raises(transfer.TransferError, match=">= 0"):
    transfer.parse_lr_groups("fc=-1")
  assert transfer.parse_lr_groups("^fc=10, ^conv=0.5") == (("^fc", 10.0), ("^conv", 0.5))
  with pytest.raises(transfer.TransferError, match="no such file"):
    sources.parse("/nonexistent/w.safetensors")
  with pytest.raises(transfer.TransferError, match="neither"):
    sources.parse("/nonexistent/run:best")


# --- through the trainer ------------------------------------------------------------------------
def _train(config, workdir):
  from cnnlab.training import train_and_evaluate
  return train_and_evaluate(config, str(workdir))


def _restore_params(workdir):
  from cnnlab.training import load_trained
  return jax.device_get(load_trained(str(workdir), "latest").variables["params"])


def test_init_from_workdir_freeze_and_resume_mid_fine_tune(mnist_data_dir, tmp_path):
  """Fine-tune from a cnnlab run: loaded weights, frozen conv1 bit-identical, transfer.json
  written, and 2 + restart + 2 steps == 4 steps to the bit."""
  import json
  import shutil
  from conftest import lenet_config
  _train(lenet_config(mnist_data_dir, num_train_steps=3), tmp_path / "src")
  src = _restore_params(tmp_path / "src")
  cfg = dict(num_train_steps=4, checkpoint_every_steps=2, eval_every_steps=2,
             init_from=str(tmp_path / "src") + ":latest", freeze="^conv1/",
             lr_groups="^fc=0.5", **{"optimizer.learning_rate": 1e-2})
  full = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "ft")
  tuned = _restore_params(tmp_path / "ft")
  np.testing.assert_array_equal(tuned["conv1"]["kernel"], src["conv1"]["kernel"])
  assert not np.array_equal(tuned["conv2"]["kernel"], src["conv2"]["kernel"])
  report = json.loads((tmp_path / "ft" / "transfer.json").read_text())
  assert "params/conv2/kernel" in report["loaded"] and report["reinitialised"] == []
  assert report["frozen"] == ["conv1/bias", "conv1/kernel"] or \
      sorted(report["frozen"]) == ["conv1/bias", "conv1/kernel"]
  shutil.copytree(tmp_path / "ft", tmp_path / "ft2")
  shutil.rmtree(tmp_path / "ft2" / "checkpoints" / "4")
  shutil.rmtree(tmp_path / "src")      # the source is only read when a run starts fresh
  resumed = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "ft2")
  assert resumed["params_fingerprint"] == full["params_fingerprint"]
  assert _restore_params(tmp_path / "ft2")["conv1"]["kernel"].shape == (5, 5, 1, 6)
  # ... while a fresh run from a missing source is one line, before anything is compiled.
  from cnnlab.config import ConfigError
  with pytest.raises(ConfigError) as e:
    _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "ft3")
  assert "\n" not in str(e.value) and "init_from" in str(e.value)


def test_init_from_safetensors_and_linear_probe(mnist_data_dir, tmp_path):
  """The torchvision route on a file written by export (seeded weights, no network): a
  10-class source re-headed to 10 classes; a linear probe trains the classifier alone."""
  from conftest import lenet_config
  from cnnlab.config import ConfigError
  # A torchvision-layout model is needed for a .safetensors file: AlexNet's layout on 28x28
  # inputs does not fit, so the file route is checked for its error, and the probe on a run.
  bad = tmp_path / "w.safetensors"
  import safetensors.numpy
  safetensors.numpy.save_file({"fc.weight": np.zeros((10, 84), np.float32)}, str(bad))
  with pytest.raises(ConfigError) as e:
    _train(lenet_config(mnist_data_dir, init_from=str(bad)), tmp_path / "x")
  assert "\n" not in str(e.value) and "w.safetensors" in str(e.value)
  assert not (tmp_path / "x" / "checkpoints").exists() or \
      not any((tmp_path / "x" / "checkpoints").iterdir())
  _train(lenet_config(mnist_data_dir, num_train_steps=2), tmp_path / "src")
  src = _restore_params(tmp_path / "src")
  _train(lenet_config(mnist_data_dir, num_train_steps=2, linear_probe=True,
                      init_from=str(tmp_path / "src")), tmp_path / "probe")
  probe = _restore_params(tmp_path / "probe")
  head = [k for k in probe if not np.array_equal(probe[k]["kernel"], src[k]["kernel"])]
  assert head and all(k in ("fc3", "fc", "dense_2", "classifier") or k.startswith("fc")
                      for k in head), head


def test_train_split_slice_trains_on_a_subset(mnist_data_dir, tmp_path):
  """``dataset.train_split='train[:96]'`` (TFDS slicing) sets the epoch: 96 // 32 = 3 steps."""
  from conftest import lenet_config, spec_of
  from cnnlab.config import ConfigError
  c = lenet_config(mnist_data_dir, num_train_steps=-1, num_epochs=2.0,
                   **{"dataset.train_split": "train[:96]"})
  spec = spec_of(c, data_dir_prepared=True)     # the slice sized from the prepared metadata
  assert spec.loop.steps_per_epoch == 3 and spec.loop.total_steps == 6
  c.dataset.train_split = "train[:x]"
  with pytest.raises(ConfigError, match="train"):
    spec_of(c, data_dir_prepared=True)


def test_finetune_recipe_arms():
  from experiments.configs import lenet5_fashion_finetune as r
  assert r.get_config("finetune").init_from == r.SOURCE
  assert r.get_config("scratch").init_from == ""
  assert r.get_config("scratch").dataset.train_split == "train[:1000]"


def test_torchvision_file_fine_tunes_a_resnet_on_grey_images(mnist_data_dir, tmp_path,
                                                            resnet18_1000):
  """The torchvision route: seeded 1000-class RGB ResNet-18 weights written as torchvision's
  .safetensors state dict (cnnlab's exporter), fine-tuned on 1-channel 10-class MNIST: head
  re-initialised, first layer adapted (RGB summed), the rest loaded, then trained."""
  import json
  from conftest import lenet_config
  from cnnlab.interop import torchvision as tv
  src = resnet18_1000
  path = tmp_path / "resnet18.safetensors"
  tv.save(src, "resnet18", str(path))
  _train(lenet_config(mnist_data_dir, num_train_steps=1, batch_size=8, eval_every_steps=0,
                      init_from=str(path), **{"model.name": "resnet18",
                                              "optimizer.learning_rate": 1e-3}),
         tmp_path / "ft")
  report = json.loads((tmp_path / "ft" / "transfer.json").read_text())
  assert sorted(report["reinitialised"]) == ["params/fc/bias", "params/fc/kernel"]
  assert report["adapted"] == ["params/conv1/kernel"]
  assert "params/layer4_1/conv2/kernel" in report["loaded"]
  tuned = _restore_params(tmp_path / "ft")
  np.testing.assert_allclose(tuned["conv1"]["kernel"][..., 0, :],
                             src["params"]["conv1"]["kernel"].sum(axis=2), atol=5e-3)
  assert tuned["fc"]["kernel"].shape == (512, 10)
