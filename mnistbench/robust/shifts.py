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

SIZE = 28
CENTRE = (SIZE - 1) / 2  # 13.5: MNIST-C's affine maps keep this point fixed


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
    t = np.deg2rad(degrees)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return affine(images, np.broadcast_to(m, (len(images), 2, 2)))


def affine(x: np.ndarray, matrices: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """skimage ``warp(x, inverse_map=A)`` with A fixing the centre: output pixel p (col, row) reads input
    ``M @ (p - centre) + centre + shift`` (bilinear, zero outside); ``matrices`` is N x 2 x 2."""
    import torch
    import torch.nn.functional as F

    theta = np.zeros((len(x), 2, 3))
    theta[:, :, :2] = matrices
    if shift is not None:
        theta[:, :, 2] = shift / CENTRE  # pixels -> grid units (align_corners: 13.5 px = 1)
    grid = F.affine_grid(torch.from_numpy(theta).float(), [len(x), 1, SIZE, SIZE], align_corners=True)
    out = F.grid_sample(torch.from_numpy(x).float().unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out.squeeze(1).clamp(0, 255).numpy()
