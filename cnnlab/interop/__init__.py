"""Weights to and from other frameworks.

``cnnlab.interop.torchvision``: convert / load torchvision state dicts (.pth, .safetensors)
into the variables of cnnlab's torchvision-layout models, and export / save cnnlab variables
back as torchvision state dicts. Import the submodule explicitly; it never imports torch unless
asked to read or write a .pth file.
"""
