"""actionlab: efficient video action recognition on PyTorch Lightning + Hydra."""

from actionlab.utils.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
