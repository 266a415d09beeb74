"""The results pages in a real browser (headless Chromium driven by Selenium), built from the committed results folders:
no console errors, every figure drawn with its traces, sorting a column reorders rows, a legend click hides a seed,
every link resolves. A screenshot of each page goes to $MNISTBENCH_ARTIFACTS (or the test's temporary folder).

Chromium comes from `make browser` (Debian's chromium and chromium-driver); without it these tests skip in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from mnistbench.report.groups import build_report
from mnistbench.report.site import write_page
from mnistbench.report.site.overview import build_site, discover

pytestmark = [pytest.mark.slow, pytest.mark.figures]
ROOT = Path(__file__).resolve().parents[1]


def committed_folders() -> list[Path]:
    """The shipped results folders: reference/ once results move there, else results/ (only what git tracks)."""
    for root in ("reference", "results"):
        found = [f for f in discover(ROOT, (root,)) if any((f / "runs").glob("*.json"))]
        if found:
            return found
    return []


FOLDERS = committed_folders()


def _binary(*names: str) -> str | None:
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = _binary("chromium", "chromium-browser", "google-chrome"), _binary("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("no browser test: selenium is not installed (make install installs the dev extra)")
    if not chromium or not chromedriver:
        pytest.skip("no browser test: headless Chromium is not installed (make browser: Debian's chromium and chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(chromedriver), options=options)
    d.set_page_load_timeout(110)  # below Selenium's own 120 s, so a starved browser fails with a clear timeout
    yield d
    d.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MNISTBENCH_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Copies of the committed folders with their pages built, and the site index over them (the originals stay as
    committed)."""
    if not FOLDERS:
        pytest.skip("no committed results folder (reference/ or results/) to build pages from")
    base = tmp_path_factory.mktemp("pages")
    copies = []
    for folder in FOLDERS:
        copy = shutil.copytree(folder, base / folder.relative_to(ROOT),
                               ignore=shutil.ignore_patterns("*.safetensors", "checkpoints"))
        write_page(copy, build_report(copy))
        copies.append(copy)
    build_site(copies, base / "site")
    return base / "site", copies


def open_page(driver, path: Path, timeout: float = 30) -> float:
    """Load ``path`` and wait until every figure is drawn; return the seconds it took."""
    start = time.perf_counter()
    driver.get(path.as_uri())
    deadline = start + timeout
    while driver.execute_script(
            "return document.readyState !== 'complete' || document.querySelectorAll('.js-plotly-plot').length"
            " < document.querySelectorAll('script.figure-data').length"):
        assert time.perf_counter() < deadline, f"{path}: figures not drawn after {timeout} s"
        time.sleep(0.05)
    return time.perf_counter() - start


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def dead_links(driver) -> list[str]:
    """Links of the open page whose file or anchor is missing."""
    dead = []
    for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
        url = urlparse(href)
        if url.scheme != "file":
            dead.append(f"{href} (not a local file: the pages work offline)")
        elif not Path(unquote(url.path)).exists():
            dead.append(href)
        elif url.fragment and unquote(url.path) == unquote(urlparse(driver.current_url).path) and not driver.execute_script(
                "return !!document.getElementById(arguments[0])", url.fragment):
            dead.append(href)
    return dead


@pytest.mark.parametrize("name", [f.relative_to(ROOT).as_posix() for f in FOLDERS] or ["none"])
def test_page_draws_every_figure_without_errors_and_its_links_resolve(driver, site, artifacts, name):
    index, copies = site
    folder = index.parent / name
    seconds = open_page(driver, folder / "index.html")
    assert console_errors(driver) == []
    drawn = driver.execute_script("""
        return Array.from(document.querySelectorAll('script.figure-data')).map(s => {
            const gd = document.getElementById(s.dataset.target);
            return [JSON.parse(s.textContent).data.length, gd.data.length, gd._fullData.length,
                    gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length];
        })""")
    assert drawn and all(n == data == full == svg and n > 0 for n, data, full, svg in drawn), drawn
    assert dead_links(driver) == []
    driver.save_screenshot(str(artifacts / f"{name.replace('/', '-')}.png"))
    with open(artifacts / "page-open-seconds.txt", "a") as f:  # a record, not a pass mark: machines differ
        f.write(f"{name} {seconds:.2f} s, {(folder / 'index.html').stat().st_size} bytes + plotly.min.js\n")


def test_site_index_links_every_page(driver, site, artifacts):
    index, copies = site
    open_page(driver, index / "index.html")
    assert console_errors(driver) == [] and dead_links(driver) == []
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('#folder-table a')).map(a => a.href)")
    assert sorted(unquote(urlparse(h).path) for h in hrefs) == sorted(str((c / "index.html").resolve()) for c in copies)
    driver.save_screenshot(str(artifacts / "site-index.png"))


def _column(driver, table: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelector(arguments[0]).tBodies[0].rows).map(r => r.cells[arguments[1]].textContent.trim())",
        table, index)


def test_clicking_a_header_sorts_the_rows(driver, site):
    index, _ = site
    open_page(driver, index / "index.html")
    header = driver.find_element("css selector", "#headline-table thead th:nth-child(5)")  # final test acc %
    before = _column(driver, "#headline-table", 4)
    header.click()
    ascending = _column(driver, "#headline-table", 4)
    numbers = [float(v.split()[0]) for v in ascending if v and v[0].isdigit()]
    assert numbers == sorted(numbers) and sorted(ascending) == sorted(before)
    header.click()
    assert [float(v.split()[0]) for v in _column(driver, "#headline-table", 4) if v and v[0].isdigit()] == sorted(numbers, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"


def test_clicking_a_seed_in_the_legend_hides_its_lines(driver, site):
    _, copies = site
    folder = next(c for c in copies if c.name == "cpu") if any(c.name == "cpu" for c in copies) else copies[0]
    open_page(driver, folder / "index.html")
    figure = "fig-learning-curves"
    traces = json.loads(driver.execute_script(f"return document.querySelector('script[data-target={figure}]').textContent"))["data"]
    seed = next(t for t in traces if " · seed " in t["name"])
    indices = [i for i, t in enumerate(traces) if t["legendgroup"] == seed["legendgroup"]]
    drawn = f"return document.getElementById('{figure}').querySelectorAll('.scatterlayer .trace').length"
    before = driver.execute_script(drawn)
    items = driver.find_elements("css selector", f"#{figure} .legend .traces")
    item = next(i for i in items if i.find_element("css selector", "text.legendtext").text == seed["name"])
    item.find_element("css selector", "rect.legendtoggle").click()
    deadline = time.perf_counter() + 5  # Plotly waits out a possible double click before acting
    state = "return arguments[0].map(i => document.getElementById(arguments[1]).data[i].visible)"
    while driver.execute_script(state, indices, figure) != ["legendonly"] * len(indices):
        assert time.perf_counter() < deadline, driver.execute_script(state, indices, figure)
        time.sleep(0.1)
    assert driver.execute_script(drawn) == before - len(indices)  # its line gone from both panels
