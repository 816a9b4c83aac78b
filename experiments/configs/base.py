"""What every recipe starts from: ``base()`` is ``cnnlab.config.defaults()`` — every key with
its one default (documented there). A recipe sets what its paper says and nothing else;
``--config.x=y`` overrides any key; ``cnnlab.config.resolve`` checks and derives the rest.
"""
import ml_collections


def base() -> ml_collections.ConfigDict:
  from cnnlab import config
  return config.defaults()
