"""Robustness of trained models from their saved weights: shifts, rotations, MNIST-C-style corruptions, FGSM/PGD.

``evaluate_folder`` measures every finished run of a results folder, ``write_summary`` writes its tables and
figures under ``<folder>/robustness/``; ``shift_sentence`` answers the founding claim in one README paragraph.
"""

from .attacks import AttackSettings
from .evaluate import Settings, evaluate_folder
from .readme import shift_sentence
from .report import load_summary, readme_block, write_summary

__all__ = ["AttackSettings", "Settings", "evaluate_folder", "load_summary", "readme_block", "shift_sentence", "write_summary"]
