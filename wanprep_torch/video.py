"""Video files: decoding in chunks and H.264 encoding with PyAV, and frame resizing.

Used by the command line and the ComfyUI nodes; knows nothing of the models.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

__all__ = ["VideoError", "target_size", "resize_frames", "VideoReader", "write_video", "one_line"]


class VideoError(ValueError):
    """A video that is missing, not decodable, or changes size mid-stream (message names it)."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def target_size(src_hw: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """(H, W) to process at: the source size, both given, or one given with the aspect kept."""
    sh, sw = src_hw
    if width is None and height is None:
        return sh, sw
    if width is not None and height is not None:
        return int(height), int(width)
    if width is not None:
        return max(int(round(sh * width / sw)), 1), int(width)
    return int(height), max(int(round(sw * height / sh)), 1)


def resize_frames(frames, hw: tuple[int, int]):
    """Bilinear resize of (n, H, W, 3) frames to ``hw`` on their device, same dtype and layout.

    Antialiased when shrinking (plain bilinear aliases badly at 2x and more). uint8 stays uint8
    on the CPU, where torch resizes it fastest; elsewhere it goes through float.
    """
    import torch
    import torch.nn.functional as F

    h, w = int(hw[0]), int(hw[1])
    if tuple(frames.shape[1:3]) == (h, w):
        return frames
    shrink = h < frames.shape[1] or w < frames.shape[2]
    x = frames.permute(0, 3, 1, 2)  # channels-last view, no copy
    u8_native = frames.dtype == torch.uint8 and frames.device.type == "cpu"
    if frames.dtype == torch.uint8 and not u8_native:
        x = x.float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    if frames.dtype == torch.uint8 and not u8_native:
        y = y.round_().clamp_(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous()


class VideoReader:
    """A video file opened with PyAV, decoded in chunks (never the whole video in memory).

    Raises VideoError when the file is missing, not a media file, or has no video stream.
    """

    def __init__(self, path):
        try:
            import av
        except ImportError:
            raise VideoError("reading videos needs PyAV: pip install av (or wanprep_torch[video])") from None
        self._av = av
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"video not found: {self.path}")
        if self.path.is_dir():
            raise VideoError(f"video path is a folder, not a file: {self.path}")
        try:
            self.container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, UnicodeDecodeError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or one_line(exc)
            raise VideoError(f"cannot decode {self.path}: not a readable video ({reason})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"cannot decode {self.path}: it has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # frame + slice threads: decoding keeps pace with the models
        ctx = self.stream.codec_context
        self.width, self.height = int(ctx.width), int(ctx.height)
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.fps = Fraction(rate) if rate else Fraction(25)
        self.frames = int(self.stream.frames or 0) or None  # container's count; 0 when unknown
        self.decode_seconds = 0.0

    def chunks(self, chunk: int, device="cpu", size: tuple[int, int] | None = None, bar=None):
        """Yield (n, H, W, 3) uint8 tensors of ``chunk`` frames on ``device``, resized to ``size``."""
        import numpy as np
        import torch

        av = self._av
        buf: list = []
        it = self.container.decode(self.stream)
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(it, None)
                if frame is not None:
                    buf.append(frame.to_ndarray(format="rgb24"))
            except av.FFmpegError as exc:
                raise VideoError(f"cannot decode {self.path}: {one_line(exc)}") from None
            done = frame is None
            out = None
            if buf and (done or len(buf) == chunk):
                if len({a.shape for a in buf}) != 1:
                    raise VideoError(f"cannot decode {self.path}: the frame size changes mid-video")
                out = torch.from_numpy(np.stack(buf)).to(device)
                if size is not None:
                    out = resize_frames(out, size)
                if bar is not None:
                    bar.update(len(buf))
                buf = []
            self.decode_seconds += time.perf_counter() - t0
            if out is not None:
                yield out
            if done:
                return

    def close(self) -> None:
        self.container.close()


def _even(n: int) -> int:
    return n + (n % 2)


def write_video(path, chunks, fps, crf: int = 18) -> int:
    """Encode (n, H, W, 3) uint8 chunks as H.264 yuv420p at ``fps``; returns the frame count.

    yuv420p needs even sides: odd ones are padded with one black row / column.
    """
    import av
    import torch
    import torch.nn.functional as F

    codec = "libx264" if "libx264" in av.codecs_available else "h264"
    fps = Fraction(fps).limit_denominator(1_000_000)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for chunk in chunks:
            chunk = chunk.to("cpu")
            if chunk.dtype != torch.uint8:
                chunk = chunk.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
            h, w = chunk.shape[1], chunk.shape[2]
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = _even(w), _even(h)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)} if codec == "libx264" else {}
            if (h, w) != (stream.height, stream.width):
                chunk = F.pad(chunk.permute(0, 3, 1, 2), (0, stream.width - w, 0, stream.height - h)).permute(0, 2, 3, 1)
            arr = chunk.contiguous().numpy()
            for i in range(arr.shape[0]):
                frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
                frame.pts = n
                frame.time_base = 1 / fps
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n


