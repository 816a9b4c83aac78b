"""See what the network sees: feature extraction, attributions and pictures, for 1-D, 2-D and
3-D models alike (inputs (N, *spatial, C)).

- ``features``: layer names with output shapes, activations at named layers.
- ``attribution``: input-gradient saliency, SmoothGrad, Integrated Gradients (+ completeness).
- ``gradcam``: Grad-CAM at any layer with a spatial output.
- ``occlusion``: occlusion sensitivity.
- ``figures`` / ``heatmaps`` / ``grids`` / ``training_plots``: the pictures (matplotlib Agg).
"""
