"""Load and run an ONNX model in onnxruntime in a child process.

ONNX Runtime can kill the process that loads a malformed graph (seen: a segmentation fault,
exit 139, creating a session on onnxruntime.transformers' float16 result for a torch
TorchScript ViT export). The converters check their candidates here, so such a crash ends a
child and comes back as a ConversionError with a message.

Parent side: :func:`run_isolated`. Child side: ``python -c ... MODEL PROVIDERS JOB_DIR``
(see :func:`_child_main`): reads JOB_DIR/feeds.npz if present, writes JOB_DIR/outputs.npz, or
JOB_DIR/error.txt with onnxruntime's message on an ordinary failure (exit status 3).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ._common import ConversionError

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_FAILED = 3  # the child's exit status for an error it caught (message in error.txt)

# Runs the child with this package first on sys.path, whatever the caller's working directory.
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from converters._isolated import _child_main; sys.exit(_child_main(sys.argv[1:]))"
)


class IsolatedRunError(ConversionError):
    """onnxruntime failed (or crashed) in the child; ``crashed`` tells which."""

    def __init__(self, msg: str, crashed: bool):
        super().__init__(msg)
        self.crashed = crashed


def _save_feeds(path: Path, feeds: Sequence[dict]) -> None:
    arrays, names = {}, []
    for i, feed in enumerate(feeds):
        names.append(list(feed))
        for j, (_, v) in enumerate(feed.items()):
            arrays[f"f{i}_{j}"] = np.asarray(v)
    np.savez(path, __names__=np.array(json.dumps(names)), **arrays)


def _load_feeds(path: Path) -> list[dict]:
    with np.load(path) as z:
        names = json.loads(str(z["__names__"]))
        return [{n: z[f"f{i}_{j}"] for j, n in enumerate(feed)} for i, feed in enumerate(names)]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_isolated(path, feeds: Sequence[dict] | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> list[list[np.ndarray]]:
    """Create a session on ``path`` in a child process and run it on each feed.

    feeds=None runs it once on a random input made from the model's own input specs (a smoke
    test: the graph loads, and runs). Returns the outputs per feed. Raises IsolatedRunError
    (a ConversionError) with onnxruntime's message, or naming the signal that killed the child.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="wanprep-ort-") as tmp:
        job = Path(tmp)
        if feeds is not None:
            _save_feeds(job / "feeds.npz", feeds)
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, _PACKAGE_ROOT, str(path), ",".join(providers), str(job)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        if proc.returncode == 0 and (job / "outputs.npz").is_file():
            with np.load(job / "outputs.npz") as z:
                n = int(z["__n__"])
                return [[z[f"o{i}_{j}"] for j in range(int(z[f"n{i}"]))] for i in range(n)]
        if proc.returncode == _FAILED and (job / "error.txt").is_file():
            raise IsolatedRunError((job / "error.txt").read_text(), crashed=False)
        if proc.returncode < 0:
            raise IsolatedRunError(
                f"{path}: onnxruntime crashed ({_signal_name(proc.returncode)}, exit {128 - proc.returncode}) "
                "loading or running the model", crashed=True)
        tail = " ".join(proc.stderr.decode(errors="replace").split()[-40:])
        raise IsolatedRunError(f"{path}: the onnxruntime check exited with status {proc.returncode}"
                               + (f" ({tail})" if tail else ""), crashed=proc.returncode >= 128)


def _child_main(argv: Sequence[str]) -> int:
    model, providers, job = argv[0], argv[1].split(","), Path(argv[2])
    from ._common import input_specs, make_session, random_feed, run

    try:
        sess = make_session(model, providers)
        if (job / "feeds.npz").is_file():
            feeds = _load_feeds(job / "feeds.npz")
        else:
            feeds = [random_feed(input_specs(sess), None, np.random.default_rng(0))]
        outs = []
        for feed in feeds:
            try:
                outs.append(run(sess, feed))
            except Exception as e:
                raise ConversionError(f"{model}: onnxruntime cannot run the model: {' '.join(str(e).split())}") from None
    except ConversionError as e:
        (job / "error.txt").write_text(str(e))
        return _FAILED
    arrays = {"__n__": np.array(len(outs))}
    for i, o in enumerate(outs):
        arrays[f"n{i}"] = np.array(len(o))
        for j, a in enumerate(o):
            arrays[f"o{i}_{j}"] = a
    np.savez(job / "outputs.npz", **arrays)
    return 0
