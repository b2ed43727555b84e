"""``python -m actionlab.pretrained list | show NAME | fetch NAME [--dir D] | readme README.md``.

``list`` prints the registry (name, dataset, frames x crop, views, paper top-1, source);
``show`` one entry with its full input protocol and where it comes from; ``fetch`` downloads a
release (progress bar, resumes an interrupted download, checks and records size and sha256),
converts it to a lab checkpoint carrying the entry's protocol and prints the ``eval.py``
command that reproduces the paper's row. Releases without a direct link are downloaded by hand
from their page and given with ``--file``. ``readme`` rewrites the registry table of the README
between its ``weights`` markers (``make registry``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from actionlab.pretrained.registry import Release, get, releases

__all__ = ["fetch", "list_table", "main", "markdown_table", "next_step", "show"]

WEIGHTS_START, WEIGHTS_END = "<!-- weights:start -->", "<!-- weights:end -->"


def _paper(release: Release) -> str:
    paper = release.paper
    if paper is None or paper.top1 is None:
        return "-"
    top5 = f" / {paper.top5:g}" if paper.top5 is not None else ""
    return f"{paper.top1:g}{top5}"


def list_table(rows: list[Release]) -> str:
    """The ``list`` output: one aligned line per release."""
    header = ("name", "dataset", "frames x crop", "views", "paper top-1", "source")
    lines = [
        (r.name, r.dataset, r.frames_x_crop(), r.views(), _paper(r).split(" /")[0], r.source)
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*row) for row in (header, *lines))


def markdown_table(rows: list[Release] | None = None) -> str:
    """The README's registry table."""
    rows = releases() if rows is None else rows
    lines = [
        "| name | `model=` | `data=` | pretrain | frames x test crop | views | paper top-1 / top-5 | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        where = f"[link]({r.url})" if r.url else f"[manual]({r.page})"
        lines.append(
            f"| `{r.name}` | `{r.config}` | `{r.dataset}` | {r.pretrain} | {r.frames_x_crop()} | "
            f"{r.views()} | {_paper(r)} | {where} |"
        )
    lines.append("")
    lines.append(
        f"{len(rows)} releases. Views: test clips x crops of the protocol recorded in the converted "
        "checkpoint (the paper's). Generated from `actionlab/pretrained/registry.py` by "
        "`make registry`."
    )
    return "\n".join(lines)


def show(release: Release) -> str:
    """Everything the registry knows about one release."""
    p = release.protocol
    out = [
        (f"{release.name}: {release.family} -> model={release.config}, data={release.dataset} "
        f"({release.num_classes} classes), pretrain {release.pretrain}"),
        f"  file:      {release.file_name or '(name not published)'}",
        f"  source:    {release.source}",
        f"  page:      {release.page}",
    ]
    if release.paper:
        out.append(f"  paper:     top-1 {_paper(release)} on {release.paper.views} ({release.paper.source})")
    for extra in release.results:
        top5 = f" / {extra.top5:g}" if extra.top5 is not None else ""
        out.append(f"  also:      top-1 {extra.top1:g}{top5} on {extra.views} ({extra.source})")
    out += [
        "  protocol:  " + p.summary(),
        (f"    colour {p.channel_order.upper()}, pixels {p.value_range} then mean {list(p.mean)} "
        f"std {list(p.std)} (network input in [{p.normalised_range[0]:.3g}, {p.normalised_range[1]:.3g}])"),
        f"    sampling {p.sampling}: {p.num_frames} frames"
        + (f", step {p.sampling_rate}" if p.sampling == "dense" else " (TSN segments over the video)")
        + (f" at {p.target_fps:g} fps" if p.target_fps else "")
        + (f", short videos {p.pad}" if p.sampling == "dense" else ""),
        f"    train: short side {p.train_scale[0]}-{p.train_scale[1]}, crop {p.train_crop}",
        (f"    test:  short side {p.test_scale}, {p.clips} clips x {p.crops} crops of {p.test_crop}, "
        f"{p.aggregate} (eval.protocol={p.eval_protocol})"),
    ]
    if p.model_options:
        out.append(f"    model: {dict(p.model_options)}")
    out.append(f"    from:  {p.reference}")
    if release.notes:
        out.append(f"  notes:     {release.notes}")
    out.append(f"  fetch:     python -m actionlab.pretrained fetch {release.name}"
               + (" --file PATH" if release.manual else ""))
    return "\n".join(out)


def _convert_argv(release: Release, src: Path, dst: Path) -> list[str]:
    argv = [release.family, str(src), str(dst), "--release", release.name]
    if release.family == "vit":  # the .npz is an initialisation: build the entry's video model
        argv += [
            "--model", release.config,
            "--num-frames", str(release.protocol.num_frames),
            "--img-size", str(release.protocol.train_crop),
            "--num-classes", str(release.num_classes),
        ]
    return argv


def fetch(
    release: Release,
    directory: str | os.PathLike,
    file: str | os.PathLike | None = None,
    url: str | None = None,
    convert: bool = True,
    progress: bool = True,
) -> Path | None:
    """Download (or take ``file``), check, record, convert ``release``; returns the lab
    checkpoint (None with ``convert=False``). Errors are :class:`SystemExit` with the fix."""
    from actionlab.pretrained.download import DownloadError, download, file_record

    directory = Path(directory)
    if file is not None:
        src = Path(file)
        if not src.is_file():
            raise SystemExit(f"--file {src} does not exist (download it from {release.page})")
        record = file_record(src)
        if release.size is not None and record.size != release.size:
            raise SystemExit(
                f"{src} has {record.size} bytes but {release.name} is {release.size}: not that file"
            )
        if release.sha256 is not None and record.sha256 != release.sha256:
            raise SystemExit(f"{src}: sha256 {record.sha256} is not {release.name}'s {release.sha256}")
    else:
        link = url or release.url
        if link is None:
            raise SystemExit(
                f"{release.name} has no direct download link: download it by hand from "
                f"{release.page}, then run python -m actionlab.pretrained fetch {release.name} "
                "--file PATH"
            )
        name = release.file_name or Path(urlparse(link).path).name or f"{release.name}.bin"
        try:
            record = download(link, directory / name, release.size, release.sha256, progress=progress)
        except DownloadError as err:
            raise SystemExit(str(err)) from err
        src = directory / name
    print(f"{src}: {record.size} bytes, sha256 {record.sha256}")
    if not convert:
        return None
    dst = directory / f"{release.name}.ckpt"
    family = importlib.import_module("actionlab.models.convert.__main__")
    family.main(_convert_argv(release, src, dst))
    print(next_step(release, dst))
    return dst


def next_step(release: Release, ckpt: str | os.PathLike) -> str:
    """What ``fetch`` prints last: the ``eval.py`` command of the paper's row (the docs show
    it for every family from here, so the page and the tool say the same)."""
    if release.task == "init":
        return (
            f"{ckpt} holds initial weights (the classifier is zero): the starting point of "
            f"model={release.config} training, not an evaluation row"
        )
    if release.paper:
        return (
            f"reproduce the paper's row (top-1 {_paper(release)} on {release.paper.views}, "
            f"{release.paper.source}):\n  {release.eval_command(ckpt)}"
        )
    return f"no reported accuracy for {release.name}; evaluate it with:\n  {release.eval_command(ckpt)}"


def _lookup(name: str) -> Release:
    try:
        return get(name)
    except KeyError as err:
        raise SystemExit(str(err.args[0])) from err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actionlab.pretrained", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the registry of released checkpoints")
    ls.add_argument("--family")
    ls.add_argument("--dataset")
    sh = sub.add_parser("show", help="one release, with its input protocol")
    sh.add_argument("name")
    fe = sub.add_parser("fetch", help="download, check and convert a release")
    fe.add_argument("name")
    fe.add_argument(
        "--dir", default=os.environ.get("ACTIONLAB_WEIGHTS", "weights"),
        help="where the file and the lab checkpoint go (default: $ACTIONLAB_WEIGHTS or ./weights)",
    )
    fe.add_argument("--file", help="a copy downloaded by hand (releases without a direct link)")
    fe.add_argument("--url", help="download from this mirror instead of the registry's link")
    fe.add_argument("--no-convert", action="store_true", help="download and check only")
    rd = sub.add_parser("readme", help="rewrite the registry table between the README's markers")
    rd.add_argument("readme", type=Path)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "list":
        rows = releases(args.family, args.dataset)
        if not rows:
            raise SystemExit(f"no release of family {args.family!r} / dataset {args.dataset!r}")
        print(list_table(rows))
    elif args.command == "show":
        print(show(_lookup(args.name)))
    elif args.command == "fetch":
        fetch(_lookup(args.name), args.dir, args.file, args.url, convert=not args.no_convert)
    else:
        from actionlab.profile import update_readme

        update_readme(args.readme, markdown_table(), start=WEIGHTS_START, end=WEIGHTS_END)
        print(f"updated the registry table of {args.readme}")


if __name__ == "__main__":
    main()
