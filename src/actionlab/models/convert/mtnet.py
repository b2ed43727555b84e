"""Importer of the released MTNet ``.pth`` checkpoints (``network/MTnet.py``).

Same file layout as SRTG (``{'epoch', 'state_dict', 'optimizer'}``, ``module.`` keys); the GRU of
each path's alignment branch is ``sr_{short,long}.op`` there and ``sr_{short,long}.rnn`` here.
The size is read off the keys (blocks per stage: XS 2/2/2/2, S 2/2/5/3, M 3/4/6/3, L 3/4/23/3)
and the cells must be GRUs; ``--model`` is a check, except the release's quirk that its
training code builds MTNet-S for the name ``mtnet_xs`` (accepted with a note). The protocol is
the registry entry's, else SRTG/MTNet validation (BGR, 294 short side, 256 centre crop) with
the README's 256 clip-size.

    python -m actionlab.models.convert mtnet IN.pth OUT.ckpt [--model mtnet_m] [--num-classes N --partial]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from actionlab.models.convert.srtg import ReleasedFormat, _cell, _layers, make_main

__all__ = ["FORMAT", "describe_mtnet", "main"]


def describe_mtnet(state: Mapping[str, Tensor]) -> str:
    return f"MTConv blocks {_layers(state)}, alignment {_cell(state, '.sr_short.')}"


def predict_mtnet(state: Mapping[str, Tensor]) -> str | None:
    from actionlab.models.mtnet import SIZES

    layers = _layers(state)
    return next((f"mtnet_{n}" for n, blocks in SIZES.items() if tuple(blocks) == layers), None)


def _protocol(name: str, frames: int, state: Mapping[str, Tensor]) -> tuple[Any, str]:
    from actionlab.pretrained.families import srtg_hacs

    return srtg_hacs(256, frames), "MTNet's validation protocol (train crop 256: the README's HACS clip-size)"


FORMAT = ReleasedFormat(
    family="mtnet",
    module="actionlab.models.mtnet",
    models=("mtnet_xs", "mtnet_s", "mtnet_m", "mtnet_l"),
    prefixes=("module.",),
    renames=((".sr_short.op.", ".sr_short.rnn."), (".sr_long.op.", ".sr_long.rnn.")),
    head="fc",
    num_frames=16,
    aliases={"mtnet_xs": "mtnet_s"},
    describe=describe_mtnet,
    predict=predict_mtnet,
    protocol=_protocol,
    foreign=((".sar.", "srtg"), ("transformer.encoder.", "tokshift")),
)

main = make_main(FORMAT)
