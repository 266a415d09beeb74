"""Canny edges of a batch of images in [0, 1] with scipy, following scikit-image's ``feature.canny`` defaults
(sigma 1, low threshold 0.1, high 0.2 on the Sobel magnitude, 8-connected hysteresis, a one-pixel border left out).

Non-maximum suppression interpolates the magnitude between the two neighbours on each side of the gradient, by
octant, as scikit-image does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# scikit-image's bilinear non-maximum suppression, by octant of the gradient (gr along rows, gc along columns):
# (same signs?, |gr| >= |gc|?) -> (row, col) steps to the axis neighbour and the diagonal neighbour on the + side.
_OCTANTS = {(True, True): ((1, 0), (1, 1)), (True, False): ((0, 1), (1, 1)),
            (False, False): ((0, 1), (-1, 1)), (False, True): ((-1, 0), (-1, 1))}


def _at(padded: np.ndarray, dr: int, dc: int) -> np.ndarray:
    h, w = padded.shape[1] - 2, padded.shape[2] - 2
    return padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]


def _thin(magnitude: np.ndarray, gr: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """Pixels whose magnitude is at least the magnitudes interpolated on both sides along the gradient."""
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    ar, ac = np.abs(gr), np.abs(gc)
    same = ((gr >= 0) & (gc >= 0)) | ((gr <= 0) & (gc <= 0))
    keep = np.zeros(magnitude.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for (same_sign, rows_major), ((r1, c1), (r2, c2)) in _OCTANTS.items():
            part = (same if same_sign else ~same) & ((ar >= ac) if rows_major else (ac >= ar))
            w = ac / ar if rows_major else ar / ac
            plus = _at(padded, r2, c2) * w + _at(padded, r1, c1) * (1 - w) <= magnitude
            minus = _at(padded, -r2, -c2) * w + _at(padded, -r1, -c1) * (1 - w) <= magnitude
            keep |= part & plus & minus
    return keep


def _smooth(u: np.ndarray, sigma: float) -> np.ndarray:
    # As scikit-image: blur with zeros outside, then divide by the blurred mask so borders are not darkened.
    weight = ndimage.gaussian_filter(np.ones(u.shape[1:]), sigma, mode="constant") + np.finfo(np.float64).eps
    return ndimage.gaussian_filter(u, (0, sigma, sigma), mode="constant") / weight


def _sobel(x: np.ndarray, axis: int) -> np.ndarray:
    """scipy's Sobel along image axis ``axis`` (1 rows, 2 columns), smoothing only the other image axis, never
    across the batch (ndimage.sobel on a 3-D array would smooth over neighbouring images too)."""
    diff = ndimage.correlate1d(x, [-1, 0, 1], axis=axis, mode="reflect")
    return ndimage.correlate1d(diff, [1, 2, 1], axis=3 - axis, mode="reflect")


def canny(u: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Edge maps (N x H x W, 0.0 or 1.0) of images ``u`` (N x H x W in [0, 1])."""
    smooth = _smooth(np.asarray(u, dtype=np.float64), sigma)
    gr, gc = _sobel(smooth, 1), _sobel(smooth, 2)
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
