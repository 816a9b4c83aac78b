"""The BatchNorm shapes both BatchNorm benchmarks time (experiments/bench_bn.py in JAX,
experiments/bench_bn_torch.py in a torch-only venv): plain data, no imports, so either side
reads the same table."""

# name: ((N, *spatial, C), residual added, ReLU) - the BatchNorms of the benchmark's models and batches.
SHAPES = {
    "resnet20 16ch 32x32 b128 relu": ((128, 32, 32, 16), False, True),
    "resnet20 16ch 32x32 b128 +res relu": ((128, 32, 32, 16), True, True),
    "resnet20 64ch 8x8 b128 +res relu": ((128, 8, 8, 64), True, True),
    "resnet18 64ch 112x112 b16 relu (stem)": ((16, 112, 112, 64), False, True),
    "resnet18 64ch 56x56 b16 +res relu": ((16, 56, 56, 64), True, True),
    "resnet18 256ch 14x14 b16 relu": ((16, 14, 14, 256), False, True),
    "resnet18 512ch 7x7 b16 no relu (shortcut)": ((16, 7, 7, 512), False, False),
    "resnet50 64ch 56x56 b16 relu": ((16, 56, 56, 64), False, True),
    "resnet50 256ch 56x56 b16 +res relu": ((16, 56, 56, 256), True, True),
    "resnet50 512ch 28x28 b16 no relu (shortcut)": ((16, 28, 28, 512), False, False),
    "resnet50 1024ch 14x14 b16 +res relu": ((16, 14, 14, 1024), True, True),
    "resnet1d 128ch L256 b16 relu": ((16, 256, 128), False, True),
}
