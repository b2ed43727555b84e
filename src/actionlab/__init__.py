"""actionlab: efficient video action recognition on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
