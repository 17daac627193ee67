"""The Ray engine: the videos as a Ray Data job, mapped by a pool of actors that each hold the
two models. ``job.out`` must be reachable by every node (shared storage) on a multi-node
cluster. Each video is reported as its row comes back (rows are not kept in input order)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

from ..errors import one_line
from .job import BatchError, Job, VideoRecord, process_one
from .report import Board

__all__ = ["RAY_INSTALL", "RayPool", "import_ray", "ray_pool", "run_ray", "local_runtime_env"]

RAY_INSTALL = 'pip install "wanprep_torch[ray]"'


def import_ray():
    """Ray with Ray Data, or BatchError naming the install command."""
    try:
        import ray
        import ray.data  # noqa: F401  (needs pandas and pyarrow: the [data] extra)
    except ImportError as exc:
        raise BatchError(f"--engine ray needs Ray Data ({one_line(exc)}): {RAY_INSTALL}") from None
    return ray


class _RayVideoActor:
    """A Ray Data actor: holds the two models (loaded once), runs its share of the videos.

    Rows carry one JSON-encoded VideoRecord each (``record``) and come back the same way, so the
    driver gets exactly what the local engine writes."""

    def __init__(self, job: Job, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.job = job
        self.threads = threads
        self.pre = job.load_models(job.options, None, threads)

    def __call__(self, batch: dict) -> dict:
        out = []
        for item in batch["record"]:
            d = json.loads(item)
            index = d.pop("index")
            rec = VideoRecord(**d)
            try:
                rec = process_one(rec, self.pre, self.job)
            except KeyboardInterrupt:
                rec = VideoRecord(**dict(rec.to_json(), status="incomplete", error="interrupted"))
            out.append(json.dumps(dict(rec.to_json(), index=index)))
        return {"record": out}


class RayPool(NamedTuple):
    device: str  # what each actor runs on ("cuda": its own GPU)
    actors: int
    gpus: float  # per actor
    cpus: int  # per actor
    threads: int | None  # CPU threads per actor (None: the default)


def ray_pool(ray, device: str | None, workers: int | None, n_videos: int) -> RayPool:
    """The actor pool from the cluster's resources: one GPU per actor and as many actors as GPUs where the cluster has GPUs
    (and the device is not the CPU; ``workers`` above the GPU count share them, 1/k of a GPU
    each); else actors of ``physical cores`` CPUs each, as many as the nodes hold."""
    from ..runtime import physical_cores

    res = ray.cluster_resources()
    n_gpu = int(res.get("GPU", 0))
    if device and str(device).startswith("cuda") and not n_gpu:
        raise BatchError(f"--device {device}: the Ray cluster has no GPUs")
    if n_gpu and device in (None, "auto") or str(device).startswith("cuda"):
        size = workers or n_gpu
        share = -(-size // n_gpu) if n_gpu else 1  # more actors than GPUs: k share one, 1/k each
        # The actor sees only its own GPU (CUDA_VISIBLE_DEVICES): plain "cuda".
        return RayPool("cuda", max(1, min(size, n_videos)), (1 if share <= 1 else 1.0 / share), 1, None)
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [res.get("CPU", 1)]
    if workers:
        cpus = max(1, min(physical_cores(), int(sum(node_cpus) // workers)))
    else:
        cpus = max(1, min(physical_cores(), int(max(node_cpus))))
    size = workers or max(1, sum(int(c // cpus) for c in node_cpus))
    return RayPool("cpu", max(1, min(size, n_videos)), 0, cpus, cpus)


def local_runtime_env() -> dict:
    """A local instance's workers import this copy of wanprep_torch (a source checkout that is
    not installed, or not the installed one)."""
    root = str(Path(__file__).resolve().parents[2])
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}}


def _connect(ray, address: str | None) -> bool:
    """Use the instance already initialised in this process, else join ``address``, else start a
    local one; returns whether one was started here. Failures become BatchError."""
    if ray.is_initialized():
        return False
    kw = dict(log_to_driver=False, include_dashboard=False)
    try:
        if address:
            ray.init(address=address, **kw)
            return False
        ray.init(runtime_env=local_runtime_env(), **kw)
        return True
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError from ray.init
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise BatchError(f"cannot start or join {where}: {one_line(exc)[:300]}") from None


def run_ray(records: list[VideoRecord], job: Job, address: str | None = None, workers: int | None = None) -> list[VideoRecord]:
    """Run the pending ``records`` as a Ray Data job; returns the finished records (also in
    ``job.out/batch.json``)."""
    ray = import_ray()
    started = _connect(ray, address)
    try:
        records = list(records)
        todo = [i for i, r in enumerate(records) if r.status == "pending"]
        device, size, gpus, cpus, threads = ray_pool(ray, job.options.device, workers, len(todo))
        meta = dict(job.meta, engine="ray", workers=size, devices=[device] * size,
                    ray_address=address or ("local" if started else "existing"))
        board = Board(records, Path(job.out), meta, job.progress, job.log)
        if not todo:
            board.close()
            return board.records
        _run_dataset(ray, board, records, todo, dataclasses.replace(job, options=job.options.replace(device=device)),
                     size, gpus, cpus, threads)
        board.close()
        return board.records
    finally:
        if started:
            try:
                ray.shutdown()
            except KeyboardInterrupt:  # a Ctrl-C after the last video: the report stands
                pass


def _run_dataset(ray, board: Board, records, todo, job: Job, size, gpus, cpus, threads) -> None:
    ctx = ray.data.DataContext.get_current()
    for attr, value in (("enable_progress_bars", False), ("print_on_execution_start", False)):
        if hasattr(ctx, attr):
            setattr(ctx, attr, value)
    ctx.execution_options.preserve_order = False  # rows come back as videos finish
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [{"record": json.dumps(dict(records[i].to_json(), index=i))} for i in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # One video in flight per actor: a free actor takes the next video (no queue behind a long
    # one), and each finished video's row is out at once.
    pool = ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)
    ds = ds.map_batches(_RayVideoActor, batch_size=1, compute=pool,
                        num_gpus=gpus, num_cpus=cpus, fn_constructor_kwargs=dict(job=job, threads=threads))
    done: set = set()
    try:
        # Batches of one row, no prefetching: each video is reported as soon as its row is out.
        for batch in ds.iter_batches(batch_size=1, prefetch_batches=0, batch_format="default"):
            for row in batch["record"]:
                d = json.loads(row)
                i = d.pop("index")
                done.add(i)
                board.finished(i, VideoRecord(**d))
    except KeyboardInterrupt:
        # Ray does not say which videos were running: those with an output folder were.
        board.interrupted([i for i in todo if i not in done and Path(records[i].out).exists()])
        board.close(interrupted=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a failed job is reported on one line
        board.close(interrupted=False)
        raise BatchError(f"the Ray job failed: {one_line(exc)[:600]}") from None
