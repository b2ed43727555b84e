"""Importers of officially released checkpoints, one module per family.

Each family module (``rubiksnet``, ``x3d``, ``vov3d``, ``tsm``, ``srtg``, ``mtnet``, ``vit``,
``tokshift`` ...) exposes ``main(argv: list[str]) -> None``; the shared command line is
``python -m actionlab.models.convert <family> <in> <out.ckpt> [options]``.
"""
