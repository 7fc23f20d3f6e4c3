"""genlib.digit_input: a hand drawing prepared like MNIST (20x20 box, centre of mass at the centre of 28x28)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genlib.digit_input import DigitPrep, EmptyDrawing, center_of_mass, prepare_digit, to_gray

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _canvas(size: int = 280) -> np.ndarray:
    """A black RGBA canvas, as the drawing component returns it (opaque black background)."""
    c = np.zeros((size, size, 4), dtype=np.uint8)
    c[..., 3] = 255
    return c


def _seven(canvas: np.ndarray, top: int, left: int, scale: int = 1) -> np.ndarray:
    """A thick '7' (a bar and a slanted stem) in white, drawn at (top, left)."""
    for t in range(16 * scale):
        canvas[top + t, left:left + 90 * scale, :3] = 255  # the bar, 16*scale thick
    for r in range(16 * scale, 140 * scale):
        c = left + 90 * scale - (r * 50) // (140)
        canvas[top + r, max(left, c - 8 * scale):c + 8 * scale, :3] = 255
    return canvas


def _ink_box(img: torch.Tensor, threshold: float = 0.05) -> tuple[int, int]:
    ink = img[0, 0] > threshold
    rows = torch.nonzero(ink.any(1)).flatten()
    cols = torch.nonzero(ink.any(0)).flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_empty_drawing_says_what_to_do():
    with pytest.raises(EmptyDrawing, match="draw a digit"):
        prepare_digit(_canvas())
    assert issubclass(EmptyDrawing, ValueError)


def test_bad_shapes_and_settings_are_refused():
    with pytest.raises(ValueError, match="expected a picture"):
        to_gray(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="box <= size"):
        DigitPrep(size=28, box=30)
    with pytest.raises(ValueError, match="ink_threshold"):
        DigitPrep(ink_threshold=1.5)


def test_rectangle_fills_a_20_pixel_box_keeps_its_aspect_and_is_centred_by_mass():
    c = _canvas()
    c[30:130, 200:250, :3] = 255  # 100 tall, 50 wide, far from the centre
    x = prepare_digit(c)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    h, w = _ink_box(x)
    assert h == 20 and w == 10
    cy, cx = center_of_mass(x[0, 0])
    assert abs(cy - 14.0) <= 0.5 and abs(cx - 14.0) <= 0.5


def test_a_seven_lands_centred_by_mass_not_by_box():
    x = prepare_digit(_seven(_canvas(), 40, 60))
    cy, cx = center_of_mass(x[0, 0])
    assert abs(cy - 14.0) <= 0.5 and abs(cx - 14.0) <= 0.5
    h, w = _ink_box(x)
    assert max(h, w) == 20
    # the bar is at the top-right of the ink: the mass is right of the box's middle, so the box sits left of centre
    ink_cols = torch.nonzero((x[0, 0] > 0.05).any(0)).flatten()
    assert (ink_cols[0] + ink_cols[-1]) / 2 < 13.5


def test_where_the_digit_is_drawn_does_not_matter():
    a = prepare_digit(_seven(_canvas(), 10, 10))
    b = prepare_digit(_seven(_canvas(), 120, 170))
    torch.testing.assert_close(a, b)


def test_how_large_the_digit_is_drawn_barely_matters():
    small = prepare_digit(_seven(_canvas(), 20, 20))
    large = prepare_digit(_seven(_canvas(600), 20, 20, scale=2))
    assert (small - large).abs().mean() < 0.03


def test_grey_rgb_rgba_and_transparent_background_agree():
    rgba = _seven(_canvas(), 30, 30)
    x = prepare_digit(rgba)
    torch.testing.assert_close(prepare_digit(rgba[..., :3]), x)
    torch.testing.assert_close(prepare_digit(rgba[..., 0]), x)
    torch.testing.assert_close(prepare_digit(rgba[..., 0].astype(np.float32) / 255.0), x)
    transparent = rgba.copy()
    transparent[..., 3] = np.where(rgba[..., 0] > 0, 255, 0)
    transparent[..., :3] = np.where(rgba[..., :3] > 0, 255, 37)  # colour under zero alpha must not count
    torch.testing.assert_close(prepare_digit(transparent), x)


def test_center_of_mass_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(9, 13, generator=g)
    total = sum(float(img[r, c]) for r in range(9) for c in range(13))
    row = sum(r * float(img[r, c]) for r in range(9) for c in range(13)) / total
    col = sum(c * float(img[r, c]) for r in range(9) for c in range(13)) / total
    cy, cx = center_of_mass(img)
    assert cy == pytest.approx(row, abs=1e-5) and cx == pytest.approx(col, abs=1e-5)


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").exists(), reason="MNIST files not found beside the repo")
def test_mnist_digits_are_nearly_fixed_points():
    """Real MNIST test digits, drawn 10x larger somewhere on a canvas, come back close to themselves: the preparation
    is MNIST's own."""
    from genlib.data import load_dataset

    data = load_dataset("mnist", root=SHARED_DATA, download=False)
    x = data.x_test[:50, 0].float() / 255.0  # (50, 28, 28)
    correlations = []
    for img in x:
        canvas = np.zeros((330, 330), dtype=np.float32)
        canvas[20:300, 35:315] = np.kron(img.numpy(), np.ones((10, 10), np.float32))
        y = prepare_digit(canvas)[0, 0]
        correlations.append(float(torch.corrcoef(torch.stack([y.flatten(), img.flatten()]))[0, 1]))
    assert np.median(correlations) > 0.9 and min(correlations) > 0.6, correlations
