"""Weights from other frameworks.

``cnnlab.interop.torchvision``: convert / load torchvision state dicts (.pth, .safetensors)
into the variables of cnnlab's torchvision-layout models. Import the submodule explicitly; it
never imports torch unless asked to read a .pth file.
"""
