"""Input frames: validation, layout and chunking. Knows nothing of models.

Accepted: (T, H, W, 3) (ComfyUI IMAGE, float in [0, 1]), (T, 3, H, W), or one (H, W, 3)
frame; float (16/32/64-bit, bfloat16) in [0, 1] or uint8 0-255; any device. The canonical view
is (T, 3, H, W) in the input's dtype: for channels-last input it is a permuted view (no copy),
which is also the memory format torch resizes fastest on the CPU.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator

import torch

from .buffers import Workspace

__all__ = ["MIN_SIDE", "FrameBatch", "as_tchw", "check_finite", "iter_chunks", "quantize_u8", "to_float01"]

MIN_SIDE = 16
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tchw(frames: torch.Tensor, finite: bool = True) -> torch.Tensor:
    """Validate frames and return a (T, 3, H, W) view in the input's dtype and device.

    ``finite=False`` skips the NaN/inf scan (a pass over the data) for callers that scan each
    chunk as they go with :func:`check_finite`.

    Raises:
        TypeError: not a tensor, or an unsupported dtype.
        ValueError: empty video, wrong rank or channel count, frames under 16 px, NaN or inf.
    """
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype not in _FLOATS and frames.dtype != torch.uint8:
        raise TypeError(f"frames must be float in [0, 1] or uint8 0-255, got dtype {frames.dtype}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4:
        raise ValueError(
            f"frames must be (T, H, W, 3), (T, 3, H, W) or one (H, W, 3) frame; got {frames.dim()}-D shape {tuple(frames.shape)}"
        )
    if frames.shape[0] == 0:
        raise ValueError("empty video: no frames")
    if frames.shape[-1] == 3:
        view = frames.permute(0, 3, 1, 2)
    elif frames.shape[1] == 3:
        view = frames
    else:
        raise ValueError(
            f"frames must have 3 (RGB) channels, last (T, H, W, 3) or second (T, 3, H, W); got shape {tuple(frames.shape)}"
        )
    h, w = view.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"frames are {w}x{h} px; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if finite:
        check_finite(view)
    return view


def check_finite(frames: torch.Tensor, first_index: int = 0) -> None:
    """Raise ValueError naming the first frame with NaN or inf values, or whose mean is outside
    [0, 1] (float frames in 0-255, a common mistake, would otherwise run silently as white).

    One float32 sum per frame finds them (NaN and inf propagate); only a bad video pays for
    the exact per-element scan.
    """
    if not frames.is_floating_point():
        return
    sums = frames.sum(dim=(1, 2, 3), dtype=torch.float32)
    if bool(torch.isfinite(sums).all()):
        per_frame = max(frames[0].numel(), 1)
        off = (sums > 1.001 * per_frame) | (sums < -0.001 * per_frame)
        if bool(off.any()):
            i = int(torch.nonzero(off)[0])
            mean = float(sums[i]) / per_frame
            raise ValueError(
                f"frame {first_index + i} averages {mean:.3g}: float frames must be in [0, 1] "
                "(for 0-255 values divide by 255 or pass uint8)"
            )
        return
    bad = ~torch.isfinite(frames).flatten(1).all(dim=1)
    if not bool(bad.any()):
        raise ValueError("frames hold values too large to be in [0, 1]")
    i = int(torch.nonzero(bad)[0])
    kind = "NaN" if bool(torch.isnan(frames[i]).any()) else "inf"
    raise ValueError(f"frame {first_index + i} contains {kind} values")


def to_float01(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] as ``dtype``; uint8 is scaled by 1/255. Keeps the memory format."""
    if frames.dtype == torch.uint8:
        return frames.to(dtype).mul_(1.0 / 255.0)
    return frames.to(dtype)


# torch marks its quantized tensors deprecated (a one-time UserWarning); quantize_u8 only borrows
# their single-pass kernel and falls back when they are gone, so the notice is not the user's.
warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning, module=__name__)
_QUANTIZE_KERNEL = hasattr(torch, "quantize_per_tensor")
_QUANTIZE_UNSUPPORTED: set[str] = set()  # device types where the kernel failed once


def quantize_u8(frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8 0-255, rounded to nearest and clamped; same shape and
    memory format.

    On the CPU torch's per-tensor quantisation kernel does this in one vectorised pass (~5x
    faster than scale, round, clamp and cast as separate ops, measured on 832x480 frames); its
    bytes are read as uint8 without a copy. Without that kernel, or for a dtype it rejects,
    the separate ops run instead (into ``out`` when given). Exact ties (x * 255 = k + 0.5) may
    round either way.

    Args:
        frames: (..., ) float tensor, finite.
        out: optional uint8 tensor of the same shape and strides for the fallback path.

    Returns:
        uint8 tensor (a new one, or ``out``).
    """
    dev = frames.device.type
    if _QUANTIZE_KERNEL and frames.dtype == torch.float32 and dev not in _QUANTIZE_UNSUPPORTED:
        try:
            q = torch.quantize_per_tensor(frames, 1.0 / 255.0, 0, torch.quint8)
            u8 = torch.empty(0, dtype=torch.uint8, device=frames.device)
            return u8.set_(q.untyped_storage(), q.storage_offset(), q.size(), q.stride())
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            _QUANTIZE_UNSUPPORTED.add(dev)  # not on this device or torch build: plain ops from now on
    if out is None:
        out = torch.empty_like(frames, dtype=torch.uint8)
    # 255 x + 0.5, clamped, then truncated by the cast.
    half, k255 = (torch.tensor(c, device=frames.device) for c in (0.5, 255.0))
    tmp = torch.addcmul(half, frames.float(), k255).clamp_(0.0, 255.0)
    return out.copy_(tmp)


def iter_chunks(video, chunk_size: int) -> Iterator[torch.Tensor]:
    """Yield (T, 3, H, W) views of at most ``chunk_size`` frames from a tensor or an iterable of
    tensor chunks (each validated as it comes; all chunks must share frame size and device)."""
    if isinstance(video, torch.Tensor):
        view = as_tchw(video, finite=False)
        for s in range(0, view.shape[0], chunk_size):
            check_finite(view[s : s + chunk_size], s)
            yield view[s : s + chunk_size]
        return
    if isinstance(video, (str, bytes)) or not isinstance(video, Iterable):
        raise TypeError(f"video must be a torch.Tensor or an iterable of tensors, got {type(video).__name__}")
    size = None
    any_frames = False
    done = 0
    for i, chunk in enumerate(video):
        try:
            view = as_tchw(chunk, finite=False)
            check_finite(view, done)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"chunk {i}: {exc}") from None
        if size is None:
            size = (tuple(view.shape[-2:]), view.device)
        elif (tuple(view.shape[-2:]), view.device) != size:
            raise ValueError(
                f"chunk {i}: frames are {tuple(view.shape[-2:])} on {view.device}, earlier chunks {size[0]} on {size[1]}"
            )
        any_frames = True
        done += view.shape[0]
        for s in range(0, view.shape[0], chunk_size):
            yield view[s : s + chunk_size]
    if not any_frames:
        raise ValueError("empty video: the iterable yielded no frames")


def _copy_float01(out: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Write ``frames`` into the float tensor ``out`` as values in [0, 1] (uint8 scaled by
    1/255, in place: a mixed-dtype multiply into ``out`` is several times slower)."""
    out.copy_(frames)
    return out.mul_(1.0 / 255.0) if frames.dtype == torch.uint8 else out


class FrameBatch:
    """A group of (n, 3, H, W) frames and the conversions the stages need, each made once.

    On the CPU torch resizes uint8 channels-last images several times faster than float ones,
    so the detector's resize and the face crops read :meth:`uint8`; the pose crop needs exact
    float samples and reads :meth:`float01`. With a workspace, the conversions are written into
    reused buffers (valid until the next group).
    """

    def __init__(self, view: torch.Tensor, workspace: Workspace | None = None):
        self.view = view
        self.ws = workspace if workspace is not None else Workspace()
        self._u8 = None
        self._f32 = None

    def __len__(self) -> int:
        return self.view.shape[0]

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.view.shape[-2]), int(self.view.shape[-1])

    def _buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return self.ws.get(name, tuple(self.view.shape), dtype, self.view.device, channels_last=True)

    def uint8(self) -> torch.Tensor:
        """(n, 3, H, W) uint8, channels-last memory; float input is rounded to 1/255 steps."""
        if self._u8 is None:
            v = self.view
            if v.dtype == torch.uint8 and v.is_contiguous(memory_format=torch.channels_last):
                self._u8 = v
            elif v.dtype == torch.uint8:
                self._u8 = self._buffer("frames_u8", torch.uint8).copy_(v)
            else:
                buf = self._buffer("frames_u8", torch.uint8)
                u8 = quantize_u8(v, out=buf)
                # (T, 3, H, W) input quantises to planar memory; the resizes want channels-last.
                self._u8 = u8 if u8.is_contiguous(memory_format=torch.channels_last) else buf.copy_(u8)
        return self._u8

    def float01_region(self, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
        """(n, 3, y1 - y0, x1 - x0) float32 in [0, 1]: one rectangle of every frame.

        For input that is not float32 this converts only the rectangle (the pose crop needs a
        person's window, not the frame; BENCHMARKS.md has the cost of the whole-frame
        conversion). float32 input returns a view, no copy.
        """
        v = self.view[..., y0:y1, x0:x1]
        if v.dtype == torch.float32:
            return v
        if self._f32 is not None:
            return self._f32[..., y0:y1, x0:x1]
        n, c, h, w = v.shape
        # A flat buffer: the rectangle's size changes from group to group.
        flat = self.ws.get("frames_f32_region", (n * h * w * c,), torch.float32, v.device)
        return _copy_float01(flat.view(n, h, w, c).permute(0, 3, 1, 2), v)

    def float01(self) -> torch.Tensor:
        """(n, 3, H, W) float32 in [0, 1] (the input itself when it already is float32)."""
        if self._f32 is None:
            v = self.view
            if v.dtype == torch.float32:
                self._f32 = v
            else:
                self._f32 = _copy_float01(self._buffer("frames_f32", torch.float32), v)
        return self._f32
