from __future__ import annotations


def write_plots(results_dir, spec, records):
    return []
