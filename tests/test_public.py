"""The package's public surface (mnistbench/__init__.py): every name resolves, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import mnistbench


def test_every_public_name_resolves_to_its_owner():
    for name in mnistbench.__all__:
        assert getattr(mnistbench, name) is not None, name
    assert set(mnistbench.__all__) <= set(dir(mnistbench))


def test_an_unknown_name_is_an_attribute_error():
    try:
        mnistbench.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("an unknown name resolved")


def test_the_public_surface_runs_a_spec_and_reads_it(tmp_path, tiny_data):
    from conftest import TINY_SPEC, write_spec

    spec = mnistbench.load_spec(write_spec(tmp_path / "tiny.yaml", TINY_SPEC))
    summary = mnistbench.run_spec(spec, results_root=tmp_path / "results", data_dir=tiny_data, allow_download=False)
    folder = tmp_path / "results" / spec.name
    report = mnistbench.build_report(folder)
    assert len(mnistbench.load_records(folder)) == len(summary.ran) > 0
    assert [len(g.records) for s in report.sections for g in s.groups] == [2, 2]  # two models, two seeds each
    assert len(mnistbench.compare_folders(folder, folder).matches) == 2
    assert "lenet5" in mnistbench.MODELS.names() and "mnist" in mnistbench.DATASETS.names()
    assert sum(p.numel() for p in mnistbench.create_model("lenet5").parameters()) == 44_426


def test_importing_the_package_imports_no_torch():
    code = "import sys, mnistbench; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
