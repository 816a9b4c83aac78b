"""See what the network sees: feature extraction, attributions and pictures, for 1-D, 2-D and
3-D models alike (inputs (N, *spatial, C)).

- ``features``: layer names with output shapes, activations at named layers.
- ``attribution``: input-gradient saliency, SmoothGrad, Integrated Gradients (+ completeness).
- ``gradcam``: Grad-CAM at any layer with a spatial output.
- ``occlusion``: occlusion sensitivity.
- ``figures`` / ``heatmaps`` / ``grids`` / ``training_plots``: the pictures (matplotlib Agg).
- ``masks``: a segmentation's pictures (mask overlay, truth vs prediction contours, Dice bars).
- ``user_files`` / ``mask_files``: a user's own inputs read and prepared; a segmentation's
  masks written as files (PNG / NIfTI with the input's affine) with counts and volumes.
"""
