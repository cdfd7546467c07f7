"""Hydra configs of segpets, shipped inside the package: ``pkg://segpets.configs``."""
