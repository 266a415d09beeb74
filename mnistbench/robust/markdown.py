"""The robustness summary as Markdown: per-model table, Welch differences, corruption and attack tables."""

from __future__ import annotations

import math

from tabulate import tabulate

from .corruptions import CORRUPTIONS
from .summary import DEG, METRICS, PX, Difference, cell, differences, groups, mean_corruption_accuracy

MNIST_C = "Mu & Gilmer (2019), MNIST-C: A Robustness Benchmark for Computer Vision, arXiv:1906.02337"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _pp(d: Difference) -> str:
    c = d.comparison
    if math.isnan(c.ci_low):
        return f"{100 * c.difference:+.2f}"
    return f"{100 * c.difference:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]"


def _settings_line(results: list[dict]) -> str:
    s = results[0]["settings"]
    adv = results[0].get("adversarial", {})
    shifts, angles = s["shifts"], s["angles"]
    line = (f"{results[0]['test_images']:,} test images; shifts 0-{max(shifts)} px in 8 directions "
            f"(4 axes, 4 diagonals; zero fill), rotations {min(angles)}° to {max(angles)}°, corruptions seeded {s['corruption_seed']}")
    if adv.get("status") == "ok":
        a = s["attacks"]
        line += (f"; attacks on the first {adv['subset']} test images (foolbox {adv['foolbox']}): FGSM, and L∞ PGD with "
                 f"{a['steps']} steps of 2.5·ε/{a['steps']}, {a['restarts']} random start(s), seed {a['seed']}")
    else:
        line += f"; attacks: {adv.get('status', 'not run')}"
    return line + "."


def main_table(by_label) -> str:
    rows = [[name, len(runs), *(cell(runs, get).text() for get in METRICS.values())] for name, runs in by_label.items()]
    return tabulate(rows, headers=["model", "seeds", *METRICS], tablefmt="github")


def difference_table(by_label) -> str:
    rows = [[d.metric, f"{d.a} − {d.b}", _pp(d), _p(d.comparison.p_value)] for d in differences(by_label)]
    return tabulate(rows, headers=["metric", "models", "difference (pp) [95% CI]", "Welch p"], tablefmt="github")


def corruption_table(by_label) -> str:
    """Test error (%) per corruption and the mean corruption error (unnormalized mean of the 15 errors)."""
    rows = [[name.replace("_", " "), *(cell(runs, lambda r, n=name: 1 - r["corruptions"][n]).text()
                                       for runs in by_label.values())] for name in CORRUPTIONS]
    rows.append(["**mean corruption error**", *(cell(runs, lambda r: 1 - mean_corruption_accuracy(r)).text()
                                                for runs in by_label.values())])
    return tabulate(rows, headers=["corruption (test error %)", *by_label], tablefmt="github")


def attack_table(by_label) -> str:
    rows = []
    for name, runs in by_label.items():
        adv = runs[0].get("adversarial", {})
        if adv.get("status") != "ok":
            rows.append([name, "–", adv.get("status", "not run")])
            continue
        for kind in ("fgsm", "pgd"):
            for eps in adv[kind]:
                rows.append([name, adv["subset"], f"{kind.upper()} ε={eps}",
                             cell(runs, lambda r, k=kind, e=eps: r["adversarial"][k][e]).text()])
    return tabulate(rows, headers=["model", "images", "attack", "accuracy %"], tablefmt="github")


def render(title: str, results: list[dict]) -> str:
    by_label = groups(results)
    return "\n\n".join([
        f"# Robustness: {title}",
        "Accuracy in %, mean over seeds with its 95% Student-t interval [low, high] (none below 2 seeds). "
        + _settings_line(results) + " Definitions: docs/robustness-eval.md.",
        "## Summary\n\n" + main_table(by_label)
        + f"\n\n±{PX} px: mean over the 8 directions of a {PX}-pixel shift; ±{DEG}°: mean of +{DEG}° and −{DEG}°.",
        "## Differences between models (Welch's t-test)\n\n" + difference_table(by_label),
        "## MNIST-C-style corruptions\n\n" + corruption_table(by_label)
        + f"\n\nCorruptions after {MNIST_C}, re-implemented (docs/robustness-eval.md says where they may differ). "
        "The paper's own per-corruption CNN error could not be found verbatim here, so no column lays it beside ours.",
        "## Adversarial accuracy\n\n" + attack_table(by_label),
        "Figures: translation.png, rotation.png, corruptions.png, adversarial.png.",
    ]) + "\n"
