"""Whole-pixel translations (zero fill) and rotations about the image centre (bilinear, zero fill) of a batch of
digits in raw pixel space, before normalization, so the fill is the background of every image.
"""

from __future__ import annotations

import numpy as np

# The 8 directions of a shift by k pixels: the 4 axes and the 4 diagonals (k pixels along each axis).
DIRECTIONS: dict[str, tuple[int, int]] = {
    "right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1),
    "down-right": (1, 1), "down-left": (-1, 1), "up-right": (1, -1), "up-left": (-1, -1),
}


def shift_pixels(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``images`` (... x H x W) moved ``dx`` columns right and ``dy`` rows down; what enters is 0 (background)."""
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_r, dst_r = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_c, dst_c = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[..., dst_r, dst_c] = images[..., src_r, src_c]
    return out


def rotate_degrees(images: np.ndarray, degrees: float) -> np.ndarray:
    """``images`` (N x 28 x 28) turned ``degrees`` anticlockwise (as seen) about the centre (13.5, 13.5)."""
    from .corruptions import affine

    t = np.deg2rad(degrees)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return affine(images, np.broadcast_to(m, (len(images), 2, 2)))
