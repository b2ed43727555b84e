"""Importer of the released TokShift / ViT video ``.pth`` checkpoints.

``VideoNetworks/TokShift-Transformer`` saves ``{'epoch', 'state_dict', 'best_acc1', 'optimizer',
'scheduler'}`` from DDP; weights sit under ``module.base_model.`` with the jeonsworld ViT names
that :mod:`actionlab.models.vit` keeps, so only the prefix goes. The input size is read off the
position embeddings (``1 + (size/16)^2`` tokens), so 224/256/384 files rebuild at their size.

    python -m actionlab.models.convert tokshift IN.pth OUT.ckpt --model tokshift_base \
        [--num-frames 8] [--num-classes N --partial]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from actionlab.models.convert.srtg import ReleasedFormat, make_main

__all__ = ["FORMAT", "main"]

POS_KEY = "transformer.embeddings.position_embeddings"
PATCH = 16


def _img_size(state: Mapping[str, Tensor]) -> dict[str, Any]:
    if POS_KEY not in state:
        return {}
    return {"img_size": math.isqrt(state[POS_KEY].shape[1] - 1) * PATCH}


FORMAT = ReleasedFormat(
    family="tokshift",
    module="actionlab.models.vit",
    models=("tokshift_base", "tokshift_large", "vit_base", "vit_large"),
    prefixes=("module.", "base_model."),
    renames=(),
    head="head",
    num_frames=8,
    model_kwargs=_img_size,
)

main = make_main(FORMAT)
