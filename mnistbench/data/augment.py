"""Random affine distortions of training batches on the device: the 1998 paper's distorted training set, drawn afresh.

Each image gets its own transform, composed of a translation, a scaling, a squeezing (width
and height scaled in opposite directions), a horizontal shear and, optionally, a rotation,
each drawn uniformly within the cell's ranges (docs/paper.md). The random numbers come from a
CPU generator seeded from the cell's seed, so runs repeat and a resumed cell continues the
same sequence. A batch is resampled with one ``affine_grid`` + ``grid_sample`` (bilinear; what
comes from outside the image is background): no per-sample Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

# The distortion stream of seed s is not the shuffling stream of seed s (TensorBatches seeds that with s itself).
SEED_OFFSET = 0x9E3779B9
DRAWS_PER_IMAGE = 6  # always drawn, whichever ranges are zero, so one range never shifts another's numbers


@dataclass(frozen=True)
class AffineRanges:
    """Half-widths of the uniform distributions each image's transform is drawn from."""

    translate_px: float = 2.0
    scale: float = 0.1
    squeeze: float = 0.1
    shear_deg: float = 10.0
    rotate_deg: float = 0.0

    @classmethod
    def of(cls, config) -> "AffineRanges":
        """The ranges of a cell configuration's ``distort_*`` settings."""
        return cls(config.distort_translate, config.distort_scale, config.distort_squeeze, config.distort_shear,
                   config.distort_rotate)


def random_affine_matrices(n: int, ranges: AffineRanges, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """``n`` sampling matrices for ``affine_grid`` (n x 2 x 3, CPU float32), each the inverse of a random distortion."""
    u = torch.rand(n, DRAWS_PER_IMAGE, generator=generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1]
    tx, ty = u[:, 0] * ranges.translate_px, u[:, 1] * ranges.translate_px
    s, q = 1 + u[:, 2] * ranges.scale, 1 + u[:, 3] * ranges.squeeze
    k = torch.tan(u[:, 4] * math.radians(ranges.shear_deg))
    r = u[:, 5] * math.radians(ranges.rotate_deg)
    sx, sy, c, sn = s * q, s / q, torch.cos(r), torch.sin(r)
    # Forward map of the content, about the image centre: p' = R(r) · [[1, k], [0, 1]] · diag(sx, sy) · p + t.
    a11, a12 = c * sx, (c * k - sn) * sy
    a21, a22 = sn * sx, (sn * k + c) * sy
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    # grid_sample's coordinates run from -1 to 1 across the image: a pixel is 2 / size of them.
    bx, by = tx * 2 / size, ty * 2 / size
    theta = torch.stack([i11, i12, -(i11 * bx + i12 * by), i21, i22, -(i21 * bx + i22 * by)], dim=1)
    return theta.view(n, 2, 3).float()


def distort(x: torch.Tensor, theta: torch.Tensor, background: float) -> torch.Tensor:
    """Resample every image of ``x`` (N x C x H x W) through its own matrix; outside the image is ``background``."""
    grid = F.affine_grid(theta.to(x.device, x.dtype, non_blocking=True), list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


class DistortedBatches:
    """Training batches with every image randomly distorted; iterating them is part of the timed training loop."""

    def __init__(self, batches, ranges: AffineRanges, seed: int, background: float, device: torch.device):
        self.batches, self.ranges, self.background, self.device = batches, ranges, background, device
        self.generator = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return self.batches.num_samples

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches:
            x = x.to(self.device, non_blocking=True)
            yield distort(x, random_affine_matrices(len(x), self.ranges, self.generator, x.shape[-1]), self.background), y
