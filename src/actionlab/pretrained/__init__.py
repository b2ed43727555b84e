"""Released weights in, paper protocol out.

``actionlab.pretrained`` is the registry of every released checkpoint the lab imports
(:data:`REGISTRY`, :class:`Release`): where the file comes from, the paper's number and the
input protocol it was trained and tested with (:class:`InputProtocol`). The command line::

    python -m actionlab.pretrained list [--family F] [--dataset D]
    python -m actionlab.pretrained show NAME
    python -m actionlab.pretrained fetch NAME [--dir D] [--file PATH]

downloads (resuming), checks and converts a release into a lab checkpoint that carries its
protocol, and prints the ``eval.py`` command that reproduces the paper's row. Nothing is
downloaded on import.
"""

from actionlab.pretrained.protocol import InputProtocol
from actionlab.pretrained.registry import (
    REGISTRY,
    PaperResult,
    Release,
    find_by_file,
    get,
    releases,
)

__all__ = ["REGISTRY", "InputProtocol", "PaperResult", "Release", "find_by_file", "get", "releases"]
