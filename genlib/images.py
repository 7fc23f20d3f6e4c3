"""Image helpers at the display boundary: (N, C, H, W) tensors in [0, 1] to grids, PNG bytes and animated GIFs."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


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


def gif_bytes(frames: list[np.ndarray], duration_ms: int = 300) -> bytes:
    """An animated GIF of uint8 frames (the seed's generation movie); the last frame is held longer."""
    from PIL import Image

    if not frames:
        raise ValueError("a GIF needs at least one frame")
    pil = [Image.fromarray(f) for f in frames]
    durations = [duration_ms] * (len(pil) - 1) + [max(duration_ms, 1500)]
    buf = io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=durations, loop=0)
    return buf.getvalue()
