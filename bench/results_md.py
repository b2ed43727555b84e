"""bench/RESULTS.md's generated sections: one block between two marker comments per script.

A section a script makes from its JSON (``bench/gpu/report.py results``, ``bench/efficiency.py
--results-md``) lives between its own begin and end markers, so regenerating it replaces exactly
that block and leaves the hand-written narrative around it alone.
"""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Replace the block of ``path`` between ``begin`` and ``end`` by ``section`` (markers kept);
    append it with its markers when the file has none yet."""
    text = path.read_text()
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
