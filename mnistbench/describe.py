"""Plain-data descriptions of the registered models and of a loaded dataset, as ``--json`` prints them."""

from __future__ import annotations

from dataclasses import asdict


def describe_models(detail: bool = False) -> dict:
    """Every registered model, in registry order: name, parameters, forward FLOPs per sample, description;
    with ``detail``, also its layers (weights, biases, parameters each)."""
    from .models import MODELS, count_params, create_model, forward_flops, layer_params

    models = []
    for name in MODELS.names():
        m = create_model(name)
        entry = {
            "name": name,
            "parameters": count_params(m),
            "forward_flops": forward_flops(m),
            "description": MODELS.get(name).description,
        }
        if detail:
            entry["layers"] = [{**asdict(layer), "parameters": layer.total} for layer in layer_params(m)]
        models.append(entry)
    return {"models": models}


def describe_dataset(ds) -> dict:
    """A loaded dataset: where it is, its sample counts, and each file's hashes and official status.

    ``official`` is True only when all four files are the official ones; a file's own ``official``
    is None for a raw (un-gzipped) file, which the official checksums cannot vouch for.
    """
    return {
        "dataset": ds.info.name,
        "title": ds.info.title,
        "folder": str(ds.folder),
        "train_samples": len(ds.train),
        "test_samples": len(ds.test),
        "official": ds.official,
        "files": [f.to_dict() for f in ds.files],
    }
