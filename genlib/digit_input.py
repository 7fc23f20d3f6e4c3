"""A digit drawn by hand, prepared as MNIST's digits were (LeCun, Bottou, Bengio & Haffner 1998; the MNIST page):
the ink's bounding box scaled, aspect ratio kept, to fit a 20x20 box with anti-aliasing, then placed in a 28x28
field so that its centre of mass sits at the field's centre.

The dashboard's canvas hands over an RGBA picture (white strokes on black, a few hundred pixels wide); the models
take (1, 1, 28, 28) images in [0, 1]. Nothing here knows about Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genlib.config import check, check_number, is_int


@dataclass(frozen=True, kw_only=True)
class DigitPrep:
    """How a drawing becomes an MNIST-like image; the defaults are MNIST's."""

    size: int = 28  # side of the output field
    box: int = 20  # the ink's longer side after scaling (MNIST: 20 of 28, a 4-pixel margin)
    ink_threshold: float = 0.05  # intensities above this count as ink when finding the bounding box

    def __post_init__(self) -> None:
        check(is_int(self.size) and is_int(self.box) and 1 <= self.box <= self.size,
              f"need integers 1 <= box <= size, got box={self.box!r}, size={self.size!r}")
        check_number("ink_threshold", self.ink_threshold, 0.0, 1.0, hi_open=True)


class EmptyDrawing(ValueError):
    """The drawing has no ink; the message says what to do."""


def to_gray(picture: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A picture (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 in [0, 255] or float in [0, 1] -> (H, W)
    float32 ink intensity in [0, 1] (white ink on black is 1 on 0).

    RGBA is weighted by its alpha, so strokes on a transparent canvas count the same as on a black one."""
    x = torch.as_tensor(np.asarray(picture))
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] not in (3, 4)):
        raise ValueError(f"expected a picture (H, W), (H, W, 3) or (H, W, 4), got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        rgb = x[..., :3]
        gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]  # ITU-R BT.601 luma
        if x.shape[2] == 4:
            gray = gray * x[..., 3]
        x = gray
    return x.clamp(0.0, 1.0)


def center_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre of an (H, W) image, in pixel-index coordinates."""
    total = image.sum()
    if total <= 0:
        raise EmptyDrawing("the image has no ink, so it has no centre of mass")
    rows = torch.arange(image.shape[0], dtype=image.dtype)
    cols = torch.arange(image.shape[1], dtype=image.dtype)
    return float((image.sum(1) * rows).sum() / total), float((image.sum(0) * cols).sum() / total)


def prepare_digit(picture: np.ndarray | torch.Tensor, prep: DigitPrep = DigitPrep()) -> torch.Tensor:
    """A drawing (see `to_gray` for the accepted forms) -> one MNIST-like image (1, 1, size, size) in [0, 1].

    1. crop the ink's bounding box (pixels above `ink_threshold`);
    2. scale it, aspect ratio kept, so its longer side is `box` pixels (bilinear with anti-aliasing, which turns a
       thick pen into MNIST's grey edges);
    3. paste it into a size x size field and shift it by whole pixels so its centre of mass lands on the field's
       centre (size / 2 in pixel-index coordinates, where MNIST's lie), as MNIST's preparation did, as far as the
       field allows (a box whose mass sits far to one side is stopped at the border rather than cut).
    Raises EmptyDrawing when there is no ink.
    """
    gray = to_gray(picture)  # (H, W)
    ink = gray > prep.ink_threshold
    if not bool(ink.any()):
        raise EmptyDrawing("The drawing is empty: draw a digit with the mouse (or a finger) first.")
    rows = torch.nonzero(ink.any(1)).flatten()
    cols = torch.nonzero(ink.any(0)).flatten()
    crop = gray[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]  # (h, w)
    h, w = crop.shape
    scale = prep.box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(crop[None, None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=True)[0, 0].clamp(0.0, 1.0)  # (new_h, new_w), longer side == box
    # where the centre of mass must go, then the whole-pixel offset of the box's top-left corner
    cy, cx = center_of_mass(small)
    centre = prep.size / 2.0  # MNIST's convention: its test digits' centres of mass average (13.98, 14.01)
    top = int(np.clip(round(centre - cy), 0, prep.size - new_h))
    left = int(np.clip(round(centre - cx), 0, prep.size - new_w))
    out = torch.zeros(prep.size, prep.size)
    out[top:top + new_h, left:left + new_w] = small
    return out[None, None]  # (1, 1, size, size)
