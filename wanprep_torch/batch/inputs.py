"""Batch inputs: video files, folders, glob patterns and text/CSV manifests -> an ordered list
of videos, each with its own output folder name (:func:`plan`)."""

from __future__ import annotations

import csv
import glob
import io
import os
from pathlib import Path
from typing import Iterable

from ..errors import one_line
from .job import BatchError, VideoRecord

__all__ = ["VIDEO_EXTENSIONS", "MANIFEST_EXTENSIONS", "discover", "unique_names", "plan"]

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .mov .mkv .avi .webm .m4v .mpg .mpeg .wmv .flv .ts .mts .m2ts .3gp .ogv .gif".split()
)
MANIFEST_EXTENSIONS = frozenset((".txt", ".csv", ".lst", ".list"))
RESERVED_NAMES = frozenset(("batch.json", ".models", ".wanprep-partial", ".wanprep.lock"))


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _read_manifest(path: Path) -> list[str]:
    """Paths listed in a text manifest (one a line, # comments) or a CSV (a ``video``/``path``/
    ``file`` column, else the first); relative entries are relative to the manifest's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read manifest {path}: {one_line(exc)}") from None
    entries: list[str] = []
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        col = 0
        if rows:
            header = [c.strip().lower() for c in rows[0]]
            for key in ("video", "path", "file", "filename"):
                if key in header:
                    col = header.index(key)
                    rows = rows[1:]
                    break
        for r in rows:
            cell = r[col].strip() if col < len(r) else ""
            if cell and not cell.startswith("#"):
                entries.append(cell)
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(line)
    base = path.parent
    return [e if os.path.isabs(os.path.expanduser(e)) else str(base / e) for e in entries]


def discover(inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> tuple[list[Path], list[str]]:
    """Expand ``inputs`` into videos, in order, each once.

    A folder is searched recursively for files with a video extension (sorted); a pattern with
    ``* ? [`` is expanded with :mod:`glob` (``**`` recursive); a ``.txt/.csv/.lst/.list`` file is
    a manifest of paths (each expanded by the same rules); any other file is a video. Files under
    ``exclude`` (the output folder) are left out.

    Returns (videos, missing): ``missing`` lists inputs that name nothing (a path that does not
    exist, a pattern that matches nothing).
    """
    videos: list[Path] = []
    missing: list[str] = []
    seen: set[str] = set()
    manifests: set[str] = set()
    excl = Path(exclude).resolve() if exclude is not None else None

    def add(p: Path) -> None:
        key = os.path.normcase(str(p.resolve()))
        if key in seen:
            return
        if excl is not None and (excl == p.resolve() or excl in p.resolve().parents):
            return
        seen.add(key)
        videos.append(p)

    def expand(item: str) -> None:
        p = Path(os.path.expanduser(item))
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()]
            for f in sorted(found, key=lambda f: str(f.relative_to(p)).lower()):
                add(f)
        elif p.is_file():
            if p.suffix.lower() in MANIFEST_EXTENSIONS:
                key = str(p.resolve())
                if key in manifests:
                    return  # a manifest listing itself
                manifests.add(key)
                for e in _read_manifest(p):
                    expand(e)
            else:
                add(p)
        elif _is_glob(item):
            hits = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            if not hits:
                missing.append(item)
            for h in hits:
                hp = Path(h)
                if hp.is_dir() or hp.suffix.lower() in MANIFEST_EXTENSIONS:
                    expand(h)
                elif hp.is_file():
                    add(hp)
        else:
            missing.append(item)

    for item in inputs:
        expand(os.fspath(item))
    return videos, missing


def unique_names(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Output folder names: each path's stem, ``-2``, ``-3``... added where two share one
    (case-insensitively; the first keeps the plain stem). The same inputs in the same order
    give the same names, which ``--resume`` relies on."""
    used = set(RESERVED_NAMES)
    names = []
    for p in paths:
        stem = Path(os.fspath(p)).stem.strip() or "video"
        if stem.startswith("."):
            stem = "_" + stem[1:]
        name, k = stem, 2
        while name.lower() in used:
            name, k = f"{stem}-{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


def plan(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[VideoRecord]:
    """The batch's records, all "pending", in input order; an input that names nothing becomes a
    "failed" record. Raises BatchError when nothing at all was found."""
    out_dir = Path(out_dir)
    videos, missing = discover(inputs, exclude=out_dir)
    if not videos:
        what = f": {', '.join(missing)} not found" if missing else ""
        raise BatchError(f"no videos found in the inputs{what}")
    names = unique_names([*videos, *missing])
    recs = [VideoRecord(str(v), n, str(out_dir / n)) for v, n in zip(videos, names)]
    for m, n in zip(missing, names[len(videos):]):
        recs.append(VideoRecord(m, n, str(out_dir / n), status="failed", error=f"not found: {m}"))
    return recs

