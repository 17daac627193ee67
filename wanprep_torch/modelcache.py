"""Converted copies of models, kept once per source model's content.

A converted model (the FP16 copy ``--fp16`` runs) is named after the SHA-256 of its source's
bytes, the ``.onnx`` and every external data file it refers to, so the same model converts
once whatever ``--out`` a run writes to and wherever the file was copied, and a changed model
converts again. Hashing a 2.5 GB model takes seconds, so the digests are remembered in
``digests.json`` beside the copies, keyed by each file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["external_data_files", "content_digest", "cached_copy_path"]

MEMO_NAME = "digests.json"


def external_data_files(model, folder) -> list[Path]:
    """The external data files an ONNX ``model`` (loaded without them) refers to, in ``folder``."""
    import onnx

    names = []
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in names:
                names.append(loc)
    return [Path(folder) / n for n in names]


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def content_digest(files, memo_dir=None) -> str:
    """SHA-256 (hex) over the files' bytes, in order; ``memo_dir``: remember it per
    (path, size, mtime) in ``memo_dir/digests.json`` so unchanged files are not read again."""
    files = [Path(f) for f in files]
    key = "\n".join(_stat_key(f) for f in files)
    memo_path = Path(memo_dir) / MEMO_NAME if memo_dir is not None else None
    memo = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.stat().st_size}\0".encode())  # sizes keep the files' boundaries apart
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    if memo_path is not None:
        memo[key] = digest
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f".{MEMO_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0))
        os.replace(tmp, memo_path)  # concurrent runs: the last writer wins, both entries are right
    return digest


def cached_copy_path(source: Path, digest: str, cache_dir, suffix: str) -> Path:
    """Where the converted copy of content ``digest`` lives: an existing ``*-<digest[:16]><suffix>``
    in ``cache_dir`` (made from a file of the same content under any name), else
    ``<source's stem>-<digest[:16]><suffix>`` (the stem only helps people reading the folder)."""
    tag = f"-{digest[:16]}{suffix}"
    found = sorted(p for p in Path(cache_dir).glob(f"*{tag}") if p.is_file())
    return found[0] if found else Path(cache_dir) / f"{Path(source).stem}{tag}"
