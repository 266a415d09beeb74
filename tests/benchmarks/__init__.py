"""pytest-benchmark micro-benchmarks; a package so its conftest does not shadow tests/conftest.py."""
