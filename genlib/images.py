"""Image helpers at the display boundary: (N, C, H, W) tensors in [0, 1] to grids, PNG bytes and animated GIFs."""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch

from genlib.work_budget import gif_frames


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> (N, H, W) uint8 on the host."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected grey images (N, 1, H, W), got shape {tuple(images.shape)}")
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x[:, 0].cpu().numpy()


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile (N, 1, H, W) images into one (rows*(H+pad)+pad, cols*(W+pad)+pad) uint8 array."""
    x = to_uint8(images)
    n, h, w = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + h, left:left + w] = x[i]
    return out


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so pixels stay crisp on a projector."""
    if factor <= 1:
        return img
    return np.kron(img, np.ones((factor, factor), dtype=img.dtype))


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def read_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def gif_bytes(count: int, frame: Callable[[int], np.ndarray], *, width: int | None = None, duration_ms: int = 300,
              max_frames: int | None = None) -> tuple[bytes, str]:
    """Every animation the dashboard shows or offers (the seed's generation movie, a Gibbs chain played): a looping GIF
    of `count` uint8 frames (H, W), `frame(i)` giving the i-th (asked only for the frames shown), each upscaled to at
    most `width` px (None: twice its size), the last held longer; and a note when frames were left out.

    The frames shown are genlib.work_budget.gif_frames': evenly spaced, the first and the last always, at most
    `max_frames` (the server's cap unless given) and the server's pixels over all frames, so no request builds more."""
    from PIL import Image

    if count < 1:
        raise ValueError("a GIF needs at least one frame")
    first = frame(0)
    h, w = first.shape
    scale = 2 if width is None else max(1, width // w)
    idx, note = gif_frames(count, h * scale, w * scale, max_frames=max_frames)
    pil = [Image.fromarray(upscale(first if i == 0 else frame(i), scale)) for i in idx]
    durations = [duration_ms] * (len(pil) - 1) + [max(duration_ms, 1500)]
    buf = io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=durations, loop=0)
    return buf.getvalue(), note
