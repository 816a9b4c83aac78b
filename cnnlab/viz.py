"""The former home of cnnlab's pictures, now ``cnnlab.explain``; these names stay for existing
callers (reports, notebooks). New code imports from ``cnnlab.explain`` directly."""
from cnnlab.explain.features import Layer as LayerOutput  # noqa: F401
from cnnlab.explain.features import feature_maps, first_conv_kernel  # noqa: F401
from cnnlab.explain.features import trace as trace_layers  # noqa: F401
from cnnlab.explain.figures import CLASS_NAMES, HEADER_INCHES, grid_shape  # noqa: F401
from cnnlab.explain.grids import plot_feature_maps, plot_filters  # noqa: F401
from cnnlab.explain.training_plots import (plot_confusion, plot_curves, run_clock,  # noqa: F401
                                           series)


def spatial_layers(model, variables, images):
  """The traced layers with a (N, *spatial, C) output."""
  from cnnlab.explain import features
  return features.spatial(trace_layers(model, variables, images))
