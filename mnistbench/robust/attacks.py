"""FGSM and L∞ PGD through foolbox (Rauber et al., 2017/2020) on [0, 1] pixels, the normalization inside the model.

PGD follows Madry et al. (2018): a random start in the ε-ball, ``steps`` signed-gradient steps of 2.5·ε/steps,
projected back into the ball; with several restarts an image counts as robust only if every restart fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class AttackSettings:
    epsilons: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    steps: int = 40
    restarts: int = 1
    subset: int = 1000  # the first images of the test set
    seed: int = 0


def foolbox_version() -> Optional[str]:
    try:
        import foolbox
    except ImportError:
        return None
    return foolbox.__version__


def robust_accuracy(model01, x01, y, settings: AttackSettings, batch: int = 500) -> dict[str, dict[str, float]]:
    """{"fgsm": {ε: accuracy}, "pgd": {ε: accuracy}} of ``model01`` (takes [0, 1] pixels) on ``x01``, ``y``."""
    import foolbox as fb
    import torch

    fmodel = fb.PyTorchModel(model01.eval(), bounds=(0, 1))
    eps = list(settings.epsilons)
    attacks = {"fgsm": (fb.attacks.FGSM(), 1),
               "pgd": (fb.attacks.LinfPGD(steps=settings.steps, rel_stepsize=2.5 / settings.steps), settings.restarts)}
    out = {}
    for name, (attack, restarts) in attacks.items():
        robust = torch.ones(len(eps), len(y), dtype=torch.bool)
        for r in range(restarts):
            torch.manual_seed(settings.seed * 1000 + r)  # foolbox draws the random start from torch's generator
            for lo in range(0, len(y), batch):
                _, _, success = attack(fmodel, x01[lo : lo + batch], y[lo : lo + batch], epsilons=eps)
                robust[:, lo : lo + batch] &= ~success.cpu()
        out[name] = {f"{e:g}": robust[i].float().mean().item() for i, e in enumerate(eps)}
    return out
