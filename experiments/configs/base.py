"""The keys every recipe shares, with neutral defaults. Recipes start from ``base()``.

Keys: model.{name, kwargs, dtype, num_classes (0: from the dataset)}, dataset.{name, data_dir,
preprocess, image_size, eval_resize, train_split, eval_split, shuffle_buffer}, batch_size
(global), eval_batch_size (0: batch_size), num_epochs, num_train_steps (-1: from epochs), seed,
optimizer.*, schedule.* (see cnnlab/training/optim.py), label_smoothing, aux_loss_weight,
grad_accum_steps, ema_decay, eval_every_steps / checkpoint_every_steps / log_every_steps
(-1: once per epoch; eval 0: only at the end), keep_checkpoints, best_metric,
compilation_cache_dir (None: <workdir>/../.jax_cache; "": off).
"""
import ml_collections


def dataset_config(name: str = "") -> ml_collections.ConfigDict:
  """Every input-pipeline option (cnnlab/data/pipeline.py documents them), unset (None) so the
  dataset's own default applies, but typed so ``--config.dataset.x=...`` can set any of them."""
  from cnnlab.data import pipeline
  fields = {"name": name}
  for key, default in pipeline.DEFAULTS.items():
    kind = (int if key == "image_size" else str) if default is None else type(default)
    fields[key] = ml_collections.FieldReference(None, field_type=kind)
  return ml_collections.ConfigDict(fields)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(name="", kwargs={}, dtype="float32", num_classes=0))
  c.dataset = dataset_config()
  c.batch_size = 128
  c.eval_batch_size = 0
  c.num_epochs = 1.0
  c.num_train_steps = -1
  c.seed = 0
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, base_batch_size=0, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_decay_mode="l2",
      exclude_norm_and_bias=True))
  c.schedule = ml_collections.ConfigDict(dict(
      name="constant", warmup_epochs=0.0, boundaries=(), decay_factor=0.1, rates=()))
  c.loss = "cross_entropy"          # or "lenet_map" (LeCun et al. 1998, eq. 9)
  c.loss_rubbish_j = 1.0            # lenet_map's constant j
  c.label_smoothing = 0.0
  c.aux_loss_weight = 0.0
  c.grad_accum_steps = 1
  c.ema_decay = 0.0
  c.eval_every_steps = -1
  c.checkpoint_every_steps = -1
  c.log_every_steps = 100
  c.keep_checkpoints = 3
  c.best_metric = "eval_accuracy"
  c.compilation_cache_dir = ml_collections.FieldReference(None, field_type=str)
  return c
