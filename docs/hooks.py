"""MkDocs hooks for orchkit's site (``mkdocs.yml`` → ``hooks``): the notebook course, offline.

- The course is ``notebooks/*.ipynb`` (one copy, tested by nbval), published under
  ``course/``: each notebook is read with its committed outputs and handed to
  mkdocs-jupyter (``execute: false``) as a copy in which every plotly figure (the
  ``application/vnd.plotly.v1+json`` output, which nbconvert does not draw) is a
  ``plotly.io.to_html`` div, and the ipywidgets designer's widget view is a note saying to
  run the notebook in JupyterLab (a static page has no kernel behind its sliders).
- plotly.js comes from the plotly wheel (``plotly/package_data/plotly.min.js``), copied to
  ``assets/javascripts/``, and is loaded only by pages that draw a figure.
- mkdocs-jupyter's pages carry loaders that fetch from other hosts: mermaid (an ES module
  imported from cdnjs), the ipywidgets renderer (a script element pointed at unpkg) and
  MathJax. They are removed, so the built site works offline (SPEC §19); the course has no
  Mermaid output or TeX, and a plan's Mermaid text stays a code block.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
COURSE = "course"  # where the notebooks are published in the site
PLOTLY_JS = "assets/javascripts/plotly.min.js"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# <script> elements mkdocs-jupyter (nbconvert's lab template) adds that fetch from a CDN:
# an external src (MathJax; RequireJS when enabled), an empty src, or an inline loader
# (mermaid's dynamic import, the widget renderer's script element, MathJax's config).
_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
_SRC = re.compile(r"""\bsrc\s*=\s*["']([^"']*)["']""", re.I)
_LOADERS = ("mermaid", "addWidgetsRenderer", "MathJax", "mathjax")

_scratch: Path | None = None


def _figure_html(figure: dict[str, Any], div_id: str) -> str:
    """A plotly figure as a div and the script that draws it (plotly.js loaded apart)."""
    import plotly.io as pio

    html = pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        default_height="520px",
        validate=False,
        config={"displaylogo": False, "responsive": True},
    )
    # plotly's "edit in Chart Studio" base URL: nothing here calls it, so leave it out
    return html.replace("window.PLOTLYENV.BASE_URL='https://plot.ly';", "")


def offline_notebook(path: Path) -> dict[str, Any]:
    """The notebook at ``path`` as the site shows it (see the module's docstring)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)  # no widget state: no widget loader
    figures = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                figures += 1
                html = _figure_html(data[PLOTLY_MIME], f"{path.stem}-figure-{figures}")
                output["data"] = {"text/html": html, "text/plain": "<plotly figure>"}
            elif WIDGET_MIME in data:
                output["data"] = {
                    "text/html": (
                        '<p class="widget-note"><em>An interactive control (ipywidgets) '
                        "sits here: open the notebook in JupyterLab to use it; the "
                        "figures below show its first state.</em></p>"
                    ),
                    "text/plain": "<ipywidgets control>",
                }
    return nb


@event_priority(100)  # before mkdocs-jupyter's on_files wraps .ipynb files as pages
def on_files(files: Files, config: Any) -> Files:
    global _scratch
    _cleanup()
    _scratch = Path(tempfile.mkdtemp(prefix="orchkit-docs-"))
    (_scratch / COURSE).mkdir()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        target = _scratch / COURSE / path.name
        target.write_text(json.dumps(offline_notebook(path)), encoding="utf-8")
        files.append(
            File(
                f"{COURSE}/{path.name}",
                str(_scratch),
                config["site_dir"],
                config["use_directory_urls"],
            )
        )
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    files.append(File.generated(config, PLOTLY_JS, abs_src_path=str(plotly_js)))
    return files


def strip_remote_loaders(html: str) -> str:
    """``html`` without the script elements that load code from another host."""

    def keep(match: re.Match[str]) -> str:
        attrs, body = match.group(1), match.group(2)
        src = _SRC.search(attrs)
        if src is not None and (not src.group(1) or re.match(r"(https?:)?//", src.group(1))):
            return ""
        if any(word in body for word in _LOADERS):
            return ""
        return match.group(0)

    return _SCRIPT.sub(keep, html)


@event_priority(-100)  # after mkdocs-jupyter has rendered the notebook
def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    if not page.file.src_uri.startswith(f"{COURSE}/"):
        return html
    html = strip_remote_loaders(html)
    # notebook cells are up to 100 columns wide and a DAG is drawn at its own width: the
    # page gives the table of contents' column to them
    page.meta.setdefault("hide", ["toc"])
    if "Plotly.newPlot" in html:
        src = get_relative_url(PLOTLY_JS, page.url)
        html = f'<script src="{src}"></script>\n{html}'
    return html


def on_post_build(config: Any) -> None:
    _cleanup()


def on_build_error(error: Exception) -> None:
    _cleanup()


def _cleanup() -> None:
    global _scratch
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
        _scratch = None
