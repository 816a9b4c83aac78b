"""cnnlab.datasets: building TFDS datasets offline, from the original files or from nothing.

    from cnnlab.datasets import prepare
    prepare.prepare("mnist", source_dir="../shared/datasets/mnist")

Modules: prepare (TFDS's own builders run on local files, checksums verified; first-use
preparation), local (cnnlab's own TFDS builder for datasets made from local files), ucr (the
UCR/UEA ``.ts`` reader), volumes (folders of labelled volumes, the volume readers), synthetic
(look-alike raw files for tests and benchmarks). Feeding a training run is cnnlab.data's job;
nothing here is imported on the training path.
"""
