"""cnnlab.datasets: building TFDS datasets offline, from the original files or from nothing.

    from cnnlab.datasets import prepare
    prepare.prepare("mnist", source_dir="../shared/datasets/mnist")

Modules: prepare (TFDS's own builders run on local files, checksums verified; first-use
preparation), local (cnnlab's own TFDS builder for datasets made from local files), ucr (the
UCR/UEA ``.ts`` reader), volumes (folders of labelled volumes, the volume readers), synthetic
(look-alike raw files for tests and benchmarks); for segmentation: segmentation (the names and
their builders), seg_pairs (image <-> mask pairing, label mapping), seg_folders (image + mask
folders), seg_volumes (volume + label folders, DICOM series included), isbi2012 (the U-Net
paper's EM data), phantoms (synthetic 3-D organ phantoms). Feeding a training run is
cnnlab.data's job; nothing here is imported on the training path.
"""
