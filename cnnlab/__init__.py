"""cnnlab: landmark CNNs in pure-functional Flax linen, trained data-parallel with Optax over
TensorFlow Datasets and checkpointed with Orbax.

    import cnnlab
    model = cnnlab.create_model("resnet50")
    cnnlab.list_models()
"""
__version__ = "0.1.0"

from cnnlab import models  # noqa: E402
# The engine's built-in losses, optimizers and step kinds, and the research projects' own,
# register their names with cnnlab.config.registry when imported (config resolution checks
# names against it); importing them here makes every name known as soon as cnnlab is.
from cnnlab.training import optim, steps  # noqa: E402,F401
from cnnlab import proj  # noqa: E402,F401

create_model = models.create
list_models = models.names
model_info = models.info

__all__ = ["models", "create_model", "list_models", "model_info", "__version__"]
