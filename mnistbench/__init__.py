"""mnistbench: a reproducible benchmark of LeNet-5 and comparable MLPs on MNIST, on the machine it runs on.

The public surface, as timm exposes ``create_model`` / ``list_models``: everything a script or a notebook needs
to run a spec and read its results, without reaching into the stage subpackages. Names load on first use, so
``import mnistbench`` stays light (no torch until a model, a dataset or a run needs it)::

    import mnistbench
    spec = mnistbench.load_spec("bench/smoke.yaml")
    mnistbench.run_spec(spec, results_root=Path("results"))
    report = mnistbench.build_report(Path("results/smoke"))
    mnistbench.compare_folders(Path("reference/smoke"), Path("results/smoke"))
    model = mnistbench.create_model("lenet5"); mnistbench.MODELS.names()
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that owns it (one owner each; the stage subpackages are the implementation)
_PUBLIC = {
    "load_spec": "mnistbench.spec.schema",
    "Spec": "mnistbench.spec.schema",
    "run_spec": "mnistbench.run.runner",
    "build_report": "mnistbench.report.groups",
    "write_report": "mnistbench.report.build",
    "compare_folders": "mnistbench.report.compare",
    "load_records": "mnistbench.results",
    "RunRecord": "mnistbench.results",
    "create_model": "mnistbench.models.factory",
    "MODELS": "mnistbench.models.zoo",
    "load_dataset": "mnistbench.data.datasets",
    "DATASETS": "mnistbench.data.datasets",
    "MnistbenchError": "mnistbench.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name's owner on first use (PEP 562), so the package imports nothing heavy up front."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mnistbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
