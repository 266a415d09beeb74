"""The browsable results: one offline HTML page per results folder (``index.html``, written by ``mnistbench report``)
and a site index over many folders (``mnistbench site``). Renderers only: every number comes from ``groups.py``."""

from .extras import page_input_files
from .page import ASSET, PAGE, render_page, write_page

__all__ = ["ASSET", "PAGE", "page_input_files", "render_page", "write_page"]
