"""``python -m actionlab.models.convert <family> <in> <out.ckpt> [options]``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import actionlab.models.convert as convert_pkg


def families() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(convert_pkg.__path__)
        if not m.name.startswith("_") and m.name != "common"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    known = families()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("families:", ", ".join(known))
        raise SystemExit(0 if argv else 2)
    family, rest = argv[0], argv[1:]
    if family not in known:
        raise SystemExit(f"unknown family {family!r}; choose one of: {', '.join(known)}")
    importlib.import_module(f"actionlab.models.convert.{family}").main(rest)


if __name__ == "__main__":
    main()
