"""MNIST-C-style corruptions of a batch of digits, following Mu & Gilmer (2019), "MNIST-C: A Robustness Benchmark for
Computer Vision" (arXiv:1906.02337) and the parameters of their code (github.com/google-research/mnist-c,
``corruptions.py``, each function's default severity, which is the one the released dataset uses).

Written here with numpy, scipy and torch (no ImageMagick, OpenCV or scikit-image); docs/robustness-eval.md says
where each may differ from the original. Every function takes float32 images N x 28 x 28 in [0, 255] and a numpy
``Generator``, and returns new images of the same shape in [0, 255]; labels are untouched.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from .shifts import SIZE, affine, shift_pixels

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _back(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.float32)


def _blur(x: np.ndarray, sigma: float, mode: str = "nearest") -> np.ndarray:
    # skimage.filters.gaussian per image: sigma on both image axes, none across the batch, truncate 4.
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode=mode, truncate=4.0)


def shot_noise(x, rng):
    c = 3  # severity 5
    return _back(rng.poisson(_unit(x) * c) / c)


def impulse_noise(x, rng):
    amount = 0.17  # severity 4; salt and pepper in equal parts, as skimage's random_noise(mode="s&p")
    u = _unit(x)
    hit = rng.random(u.shape) < amount
    salt = rng.random(u.shape) < 0.5
    return _back(np.where(hit, salt.astype(np.float64), u))


def glass_blur(x, rng):
    sigma, delta, iterations = 0.7, 1, 2  # severity 1
    u = np.floor(_blur(_unit(x), sigma) * 255).astype(np.uint8)  # np.uint8(...) truncates, as MNIST-C
    rows = np.arange(len(u))
    for _ in range(iterations):
        # Local shuffle in MNIST-C's scan order; each image draws its own coin and offset at every pixel.
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                swap = rng.random(len(u)) < 0.5
                dx, dy = rng.integers(-delta, delta, size=(2, len(u)))
                n, h2, w2 = rows[swap], h + dy[swap], w + dx[swap]
                here = u[n, h, w].copy()
                u[n, h, w] = u[n, h2, w2]
                u[n, h2, w2] = here
    return _back(_blur(u / 255.0, sigma))


def motion_blur(x, rng):
    radius, sigma = 10, 3  # severity 1; ImageMagick's one-sided Gaussian kernel of 2*radius+1 taps
    angles = np.deg2rad(rng.uniform(-45, 45, len(x)))
    taps = np.arange(2 * radius + 1)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    n = np.arange(len(x))[:, None, None]
    out = np.zeros(x.shape, dtype=np.float64)
    for i, w in zip(taps, weights):
        dc = np.rint(i * np.cos(angles))[:, None, None].astype(int)
        dr = np.rint(i * np.sin(angles))[:, None, None].astype(int)
        # Pixels beyond the border repeat the edge, as ImageMagick's default virtual-pixel method.
        out += w * x[n, np.clip(rows + dr, 0, SIZE - 1), np.clip(cols + dc, 0, SIZE - 1)]
    return np.clip(out, 0, 255).astype(np.float32)


def _signs(rng, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], n)


def shear(x, rng):
    c = 0.4 * _signs(rng, len(x))  # severity 2, direction drawn per image
    m = np.zeros((len(x), 2, 2))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 1] = 1, -np.sin(c), np.cos(c)  # skimage AffineTransform(shear=c)
    return affine(x, m)


def scale(x, rng):
    m = np.tile(np.eye(2) / 0.7, (len(x), 1, 1))  # severity 3: reading at 1/0.7 shrinks the digit to 70%
    return affine(x, m)


def rotate(x, rng):
    c = 0.4 * _signs(rng, len(x))  # severity 2: 0.4 rad (about 23 degrees), direction drawn per image
    m = np.stack([np.stack([np.cos(c), -np.sin(c)], -1), np.stack([np.sin(c), np.cos(c)], -1)], 1)
    return affine(x, m)


def brightness(x, rng):
    # severity 5: +0.5 on HSV's value; for a grey pixel value is the intensity and the round trip is the identity.
    return _back(_unit(x) + 0.5)


def translate(x, rng):
    d = 3 * rng.choice([-1, 1], (len(x), 2))  # severity 3: 3 pixels on each axis, signs drawn per image
    return np.stack([shift_pixels(img, int(-dx), int(-dy)) for img, (dx, dy) in zip(x, d)])


def stripe(x, rng):
    out = x.astype(np.float32).copy()
    out[:, :, :7] = 255 - out[:, :, :7]
    out[:, :, 21:] = 255 - out[:, :, 21:]
    return out


def fog(x, rng):
    strength, decay = 3.0, 1.4  # severity 5
    u = _unit(x)
    peak = u.max(axis=(1, 2), keepdims=True)
    cloud = np.concatenate([plasma(rng, min(256, len(u) - i), decay) for i in range(0, len(u), 256)])
    return _back((u + strength * cloud) * peak / (peak + strength))


def plasma(rng, n: int, decay: float, size: int = 256) -> np.ndarray:
    """n diamond-square height maps of ``size``² in [0, 1] (MNIST-C's plasma_fractal), their top-left 28 x 28."""
    grid = np.zeros((n, size, size), dtype=np.float32)  # float32: half the memory traffic of 256² maps
    step, wibble = size, 100.0

    def noisy_mean(a):
        return a / 4 + np.float32(wibble * wibble) * (2 * rng.random(a.shape, dtype=np.float32) - 1)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        grid[:, half:size:step, half:size:step] = noisy_mean(square)
        dr, ul = grid[:, half:size:step, half:size:step], grid[:, 0:size:step, 0:size:step]
        grid[:, 0:size:step, half:size:step] = noisy_mean(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        grid[:, half:size:step, 0:size:step] = noisy_mean(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= decay
    grid -= grid.min(axis=(1, 2), keepdims=True)
    grid /= grid.max(axis=(1, 2), keepdims=True)
    return grid[:, :SIZE, :SIZE].astype(np.float64)


def spatter(x, rng):
    loc, spread, sigma, threshold, mud_sigma = 0.65, 0.3, 1, 0.65, 1.5  # severity 4 (mud)
    u = _unit(x)
    liquid = _blur(rng.normal(loc, spread, u.shape), sigma)
    liquid[liquid < threshold] = 0
    mud = _blur((liquid > threshold).astype(np.float64), mud_sigma)
    mud[mud < 0.8] = 0
    return _back(u * (1 - mud) + 63 / 255 * mud)


def line(c0, r0, c1, r1) -> np.ndarray:
    """MNIST-C's line_from_points: intensity log(1 - d/2.3) + 1 at row distance d from the line, between its columns."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cc, rr = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), sparse=True)
    dist = np.clip(np.abs(rr - ((r1 - r0) / (c1 - c0) * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    out = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    out[:, : int(np.floor(c0))] = 0
    out[:, int(np.ceil(c1)):] = 0
    return out


def dotted_line(x, rng):
    u = _unit(x)
    ends = rng.integers(0, 27, (len(u), 2))
    gaps = np.zeros(SIZE, dtype=bool)
    for start in range(0, SIZE, 4):
        gaps[start : start + 2] = True  # columns 0-1, 4-5, ... are off
    marks = np.stack([line(0, r0, 27, r1) for r0, r1 in ends])
    marks[:, :, gaps] = 0
    return _back(u + marks)


def zigzag_marks(r0: int, r1: int) -> np.ndarray:
    """MNIST-C's zigzag: segments of length 2 and amplitude 2 along a line from column 2 to 25, its quirks kept."""
    a = b = 2.0
    c0, c1 = 2, 25
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_i))
    last = (2 * a) * (d // (2 * a))
    if d != last:
        points.append((d, r_i / (2 * (d - last))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ np.array(points).T
    cs, rs = cs + c0, rs + r0
    marks = np.zeros((SIZE, SIZE))
    for i in range(1, len(cs)):
        marks = np.clip(marks + line(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
    return marks


def zigzag(x, rng):
    u = _unit(x)
    r0 = rng.integers(0, 27, len(u))
    r1 = r0 + rng.integers(-5, 5, len(u))
    shapes = {pair: zigzag_marks(*pair) for pair in set(zip(r0.tolist(), r1.tolist()))}  # at most 27 x 10 distinct
    return _back(u + np.stack([shapes[pair] for pair in zip(r0.tolist(), r1.tolist())]))


def canny_edges(x, rng):
    from .canny import canny

    return (canny(_unit(x)) * 255).astype(np.float32)


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness, "translate": translate,
    "stripe": stripe, "fog": fog, "spatter": spatter, "dotted_line": dotted_line, "zigzag": zigzag,
    "canny_edges": canny_edges,
}


def corrupt(images: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``images`` (N x 28 x 28, [0, 255]) under corruption ``name``; the same images, name and seed give the same output."""
    index = list(CORRUPTIONS).index(name)
    rng = np.random.default_rng([seed, index])  # one stream per corruption: adding one never changes the others
    return CORRUPTIONS[name](np.asarray(images, dtype=np.float32), rng)
