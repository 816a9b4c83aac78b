"""cnnlab: landmark CNNs in pure-functional Flax linen, trained data-parallel with Optax over
TensorFlow Datasets and checkpointed with Orbax.

    import cnnlab
    model = cnnlab.create_model("resnet50")
    cnnlab.list_models()

Importing cnnlab imports the parts that register names a config may use (the model zoo, the
engine's losses / optimizers / step kinds, the research projects under cnnlab.proj), so that
``cnnlab.config.resolve`` knows every name as soon as cnnlab is imported. An interpreter
without JAX (the PyTorch side of the benchmark, ``python -m cnnlab.bench.torch_worker``) gets
the bare package: nothing else of cnnlab runs there.
"""
import importlib.util as _importlib_util

__version__ = "0.1.0"

if _importlib_util.find_spec("jax") is not None:
  from cnnlab import models  # noqa: E402
  from cnnlab.training import optim, steps, tasks  # noqa: E402,F401
  from cnnlab import proj  # noqa: E402,F401

  create_model = models.create
  list_models = models.names
  model_info = models.info

__all__ = ["models", "create_model", "list_models", "model_info", "__version__"]
