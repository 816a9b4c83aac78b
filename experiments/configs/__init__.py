"""This repository's recipes (``cnnlab.recipes``): one config module per recipe. The commands
in ``experiments/`` pass this package's name to the library's reproduce and report."""
RECIPES = __name__
