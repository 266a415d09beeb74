"""Canny edges of a batch of images in [0, 1] with scipy, following scikit-image's ``feature.canny`` defaults
(sigma 1, low threshold 0.1, high 0.2 on the Sobel magnitude, 8-connected hysteresis, a one-pixel border left out).

Non-maximum suppression compares each pixel with its two neighbours along the gradient direction rounded to
0, 45, 90 or 135 degrees; scikit-image interpolates between neighbours instead, so a few edge pixels may differ.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# (row, col) steps of the neighbour along each rounded gradient direction
_STEPS = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}


def _smooth(u: np.ndarray, sigma: float) -> np.ndarray:
    # As scikit-image: blur with zeros outside, then divide by the blurred mask so borders are not darkened.
    ones = np.ones(u.shape[1:])
    weight = ndimage.gaussian_filter(ones, sigma, mode="constant")
    return ndimage.gaussian_filter(u, (0, sigma, sigma), mode="constant") / weight


def _thin(magnitude: np.ndarray, gr: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """Pixels that are a maximum of the magnitude along their (rounded) gradient direction."""
    sector = np.round(np.arctan2(gr, gc) / (np.pi / 4)).astype(int) % 4
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    n, h, w = magnitude.shape
    keep = np.zeros(magnitude.shape, dtype=bool)
    for s, (dr, dc) in _STEPS.items():
        ahead = padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        behind = padded[:, 1 - dr : 1 - dr + h, 1 - dc : 1 - dc + w]
        keep |= (sector == s) & (magnitude >= ahead) & (magnitude >= behind)
    return keep


def canny(u: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Edge maps (N x H x W, 0.0 or 1.0) of images ``u`` (N x H x W in [0, 1])."""
    smooth = _smooth(np.asarray(u, dtype=np.float64), sigma)
    gr, gc = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=2)
    magnitude = np.hypot(gr, gc)
    inner = np.zeros(magnitude.shape[1:], dtype=bool)
    inner[1:-1, 1:-1] = True
    candidates = _thin(magnitude, gr, gc) & inner & (magnitude >= low)
    # Hysteresis: keep the 8-connected pieces of candidates that hold a pixel above the high threshold.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # connect within an image, never across the batch
    labels, count = ndimage.label(candidates, structure=structure)
    strong = np.zeros(count + 1, dtype=bool)
    strong[np.unique(labels[candidates & (magnitude >= high)])] = True
    strong[0] = False
    return strong[labels].astype(np.float64)
