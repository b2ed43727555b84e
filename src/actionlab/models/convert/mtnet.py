"""Importer of the released MTNet ``.pth`` checkpoints (``network/MTnet.py``).

Same file layout as SRTG (``{'epoch', 'state_dict', 'optimizer'}``, ``module.`` keys); the GRU of
each path's alignment branch is ``sr_{short,long}.op`` there and ``sr_{short,long}.rnn`` here.

    python -m actionlab.models.convert mtnet IN.pth OUT.ckpt --model mtnet_m [--num-classes N --partial]
"""

from __future__ import annotations

from actionlab.models.convert.srtg import ReleasedFormat, make_main

__all__ = ["FORMAT", "main"]

FORMAT = ReleasedFormat(
    family="mtnet",
    module="actionlab.models.mtnet",
    models=("mtnet_xs", "mtnet_s", "mtnet_m", "mtnet_l"),
    prefixes=("module.",),
    renames=((".sr_short.op.", ".sr_short.rnn."), (".sr_long.op.", ".sr_long.rnn.")),
    head="fc",
    num_frames=16,
)

main = make_main(FORMAT)
