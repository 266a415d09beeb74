"""Faults injected into Ray worker processes for tests/test_scale_out.py, armed by marker files.

``hook(fault_dir)`` makes the workers' setup hook (the test pickles this module by value, so
workers need not import it). It wraps mnistbench functions once their module is imported, so
workers that never import mnistbench (actors, probes) do not pay for torch:

- ``die-<cell>-after-epoch-<n>``: the worker exits (as if killed) right after saving that
  epoch's checkpoint; the marker is removed, so it happens once;
- ``raise-<cell>``: training that cell raises; each attempt is logged in ``attempts-<cell>``;
- ``no-shared-folder-<cell>``: that cell's task does not see the driver's results folder (as on
  a node without a shared file system).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def patch_cell(cell, faults: Path) -> None:
    save, run = cell.save_checkpoint, cell.run_cell

    def save_then_die(path, key, state):
        save(path, key, state)
        try:
            (faults / f"die-{path.stem}-after-epoch-{len(state.epochs)}").unlink()
        except FileNotFoundError:
            return
        os._exit(1)

    def run_or_raise(config, *args, **kwargs):
        cell_id = f"{config.model}_seed-{config.seed}"
        if (faults / f"raise-{cell_id}").exists():
            with open(faults / f"attempts-{cell_id}", "a") as f:
                f.write("attempt\n")
            raise RuntimeError("injected failure")
        return run(config, *args, **kwargs)

    cell.save_checkpoint, cell.run_cell = save_then_die, run_or_raise


def patch_executors(executors, faults: Path) -> None:
    sees, run = executors.SharedProbe.sees, executors.ray_task
    hidden = {"now": False}

    def ray_task(task, *args):
        hidden["now"] = (faults / f"no-shared-folder-{task.cell.id}").exists()
        return run(task, *args)

    executors.SharedProbe.sees = lambda probe: not hidden["now"] and sees(probe)
    executors.ray_task = ray_task  # what a worker runs: Ray finds the task function by its module and name


class PatchOnImport:
    """A meta-path finder that patches a module right after it is first imported."""

    def __init__(self, patches: dict) -> None:
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        if name not in self.patches:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        load, patch = spec.loader.exec_module, self.patches.pop(name)

        def exec_module(module):
            load(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install(fault_dir: str) -> None:
    faults = Path(fault_dir)
    sys.meta_path.insert(0, PatchOnImport({
        "mnistbench.run.cell": lambda m: patch_cell(m, faults),
        "mnistbench.run.ray": lambda m: patch_executors(m, faults),
    }))


def hook(fault_dir: str):
    """The setup hook for Ray (which wants a plain function): ``install(fault_dir)``."""
    def setup() -> None:
        install(fault_dir)
    return setup
