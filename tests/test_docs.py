"""The documentation site (SPEC §19): it builds strictly with no warning, every public name
has a reference entry, every page of the nav exists, the built site fetches nothing from
another host and its links resolve, and every ```python block of the pages runs.

The build (``mkdocs build --strict``, what ``make docs`` runs) goes to a temporary folder,
once for the module; it takes about 8 s (the ten notebooks are rendered from their
committed outputs, not executed)."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

import orchkit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ the build


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str, float]:
    """The site built as ``make docs`` builds it: (site folder, the build's log, seconds)."""
    pytest.importorskip("mkdocs", reason="the docs extra is missing: pip install 'orchkit[docs]'")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    seconds = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    return site, log, seconds


def test_the_site_builds_strictly_with_no_warning(build):
    site, log, seconds = build
    noise = [ln for ln in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", ln)]
    assert not noise, "\n".join(noise)
    assert "Documentation built" in log
    assert (site / "index.html").is_file() and (site / "404.html").is_file()
    print(f"mkdocs build --strict: {seconds:.1f} s")


# ------------------------------------------------------------------ the nav and its pages


def nav_files(nav) -> list[str]:
    """Every file the nav names (``docs/``-relative), in order."""
    out: list[str] = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(nav_files(value) if isinstance(value, list) else [value])
    return out


NAV = nav_files(CONFIG["nav"])


def source_of(path: str) -> Path:
    """Where a nav entry's source lives: the course is ``notebooks/`` (docs/hooks.py)."""
    if path.startswith("course/") and path.endswith(".ipynb"):
        return ROOT / "notebooks" / path.removeprefix("course/")
    return DOCS / path


def built_page(site: Path, path: str) -> Path:
    stem = re.sub(r"\.(md|ipynb)$", "", path)
    if stem == "index" or stem.endswith("/index"):
        return site / stem.removesuffix("index") / "index.html"
    return site / stem / "index.html"


def test_every_page_in_the_nav_exists_and_is_built(build):
    site = build[0]
    assert len(NAV) == len(set(NAV)), "a page is in the nav twice"
    for path in NAV:
        assert source_of(path).is_file(), f"nav names {path}, which does not exist"
        assert built_page(site, path).is_file(), f"{path} was not built"


def test_every_page_and_notebook_is_in_the_nav():
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    notebooks = {f"course/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert len(notebooks) >= 10
    assert pages | notebooks == set(NAV)


# -------------------------------------------------------------------- the API reference


def reference_entries() -> dict[str, str]:
    """``::: identifier`` lines of the reference pages -> the page holding each."""
    entries: dict[str, str] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for ident in re.findall(r"^:::\s+(\S+)", page.read_text(encoding="utf-8"), re.M):
            assert ident not in entries, f"{ident} is documented twice"
            entries[ident] = page.name
    return entries


def test_every_public_name_has_a_reference_entry():
    entries = reference_entries()
    missing = [n for n in orchkit.__all__ if f"orchkit.{n}" not in entries]
    assert not missing, (
        f"public names without an entry in docs/reference/*.md: {missing}; add "
        f"`::: orchkit.<Name>` to the page of its area (and the area's row in reference/index.md)"
    )


def test_every_reference_entry_is_rendered(build):
    """Each entry resolved (strict mode fails otherwise) and its heading is on its page."""
    site = build[0]
    for ident, page in reference_entries().items():
        html = (site / "reference" / page.removesuffix(".md") / "index.html").read_text()
        assert f'id="{ident}"' in html, f"{ident} has no heading on reference/{page}"


# ------------------------------------------------------------------------------ offline

# Elements that make a browser fetch (not a link the reader clicks): tag -> attributes.
FETCHING = {
    "script": ("src",),
    "link": ("href",),  # stylesheets, icons, preconnect, preload, manifest: all fetch
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "track": ("src",),
}
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
# an inline script or style that loads from another host: an import, a src/href set in
# code, a CSS import or url(), or a CDN the notebook template knows
INLINE_REMOTE = re.compile(
    r"""import\s*\(\s*["'`](https?:)?//|from\s+["'](https?:)?//|"""
    r"""\.(src|href)\s*=\s*["'`](https?:)?//|@import|url\(\s*["']?(https?:)?//|"""
    r"""unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|fonts\.googleapis\.com|cdn\.plot\.ly""",
    re.I,
)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetches: list[tuple[str, str]] = []  # (tag, url)
        self.links: list[str] = []  # <a href>
        self.inline: list[str] = []  # bodies of <script> and <style>
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for attr in FETCHING.get(tag, ()):
            for url in re.split(r",\s*", values.get(attr) or ""):
                if url.strip():
                    self.fetches.append((tag, url.strip().split()[0]))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag in ("script", "style"):
            self._in = tag
        for name, value in attrs:  # style="background: url(https://...)"
            if name == "style" and value and INLINE_REMOTE.search(value):
                self.inline.append(value)

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self.inline.append(data)


def remote_loads(html: str) -> list[str]:
    """What a page would fetch from another host: fetching elements pointed at one, and
    inline scripts or styles that load from one."""
    page = _Page()
    page.feed(html)
    found = [f"<{tag}> {url}" for tag, url in page.fetches if REMOTE.match(url)]
    found += [
        f"inline: ...{m.group(0)}..." for body in page.inline if (m := INLINE_REMOTE.search(body))
    ]
    return found


def test_the_offline_check_catches_what_it_must():
    """The scanner itself: each way a page could reach another host is caught; a link the
    reader clicks, a local script and a plain inline script are not."""
    caught = [
        '<script src="https://cdn.example.org/x.js"></script>',
        '<script src="//cdn.example.org/x.js"></script>',
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>',
        '<img src="http://example.org/a.png">',
        '<img srcset="a.png 1x, https://example.org/b.png 2x">',
        '<script type="module">const m = (await import("https://cdnjs.cloudflare.com/'
        'ajax/libs/mermaid/11.10.0/mermaid.esm.min.mjs")).default;</script>',
        "<script>var s = document.createElement('script'); s.src = 'https://unpkg.com/"
        "@jupyter-widgets/html-manager@^1.0.1/dist/embed-amd.js';</script>",
        "<style>@import url(https://fonts.googleapis.com/css2?family=Inter);</style>",
        '<div style="background: url(https://example.org/bg.png)"></div>',
    ]
    for html in caught:
        assert remote_loads(html), html
    fine = [
        '<a href="https://squidfunk.github.io/mkdocs-material/">Material</a>',
        '<script src="../assets/javascripts/plotly.min.js"></script>',
        "<script>Plotly.newPlot('x', [], {})</script>",
        '<link rel="stylesheet" href="../stylesheets/extra.css">',
    ]
    for html in fine:
        assert not remote_loads(html), html


def site_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_the_site_fetches_nothing_from_another_host(build):
    site = build[0]
    pages = site_pages(site)
    assert len(pages) >= len(NAV)
    bad = {p.relative_to(site).as_posix(): r for p in pages if (r := remote_loads(p.read_text()))}
    assert not bad, bad
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text), css


def test_the_course_is_rendered_with_its_outputs_offline(build):
    """Each notebook's page shows its committed outputs, its plotly figures drawn by the
    site's own plotly.js, and none of the template's CDN loaders (mermaid, ipywidgets,
    MathJax)."""
    site = build[0]
    assert (site / "assets/javascripts/plotly.min.js").stat().st_size > 1_000_000
    figures = 0
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "course" / nb.stem / "index.html").read_text()
        assert "jp-OutputArea-output" in html, f"{nb.name}: no outputs shown"
        for loader in ("mermaid.esm", "addWidgetsRenderer", "unpkg.com", "cdnjs", "MathJax.Hub"):
            assert loader not in html, f"{nb.name}: {loader} left in the page"
        n = html.count("Plotly.newPlot(")
        if n:
            assert '<script src="../../assets/javascripts/plotly.min.js">' in html
        figures += n
    assert figures == sum(
        nb.read_text().count('"application/vnd.plotly.v1+json"')
        for nb in (ROOT / "notebooks").glob("*.ipynb")
    )


def test_every_link_in_the_site_resolves(build):
    """Relative links and images of every page (notebooks included, which mkdocs does not
    check) point at files of the site."""
    site = build[0]
    broken = []
    for page in site_pages(site):
        parser = _Page()
        parser.feed(page.read_text())
        urls = parser.links + [u for _, u in parser.fetches]
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme or url.startswith(("//", "#")) or not parts.path:
                continue
            path = unquote(parts.path)  # 404.html links from the site's root
            target = (
                site / path.lstrip("/") if path.startswith("/") else page.parent / path
            ).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {url}")
    assert not broken, broken


# -------------------------------------------------------------------- the pages' examples

NO_RUN = re.compile(r"<!--\s*no-run:\s*\S.*?-->\s*\n$")


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks as (line, source), except those right after an
    ``<!-- no-run: reason -->`` comment (a block that needs a server, say)."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(r"^```python[^\n]*\n(.*?)^```", text, re.S | re.M):
        if NO_RUN.search(text[: m.start()][-300:]):
            continue
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


PAGES_WITH_CODE = [p for p in sorted(DOCS.rglob("*.md")) if python_blocks(p)]


def test_the_pages_have_examples_to_run():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES_WITH_CODE}
    assert {"quickstart.md", "guides/plans.md", "guides/live.md"} <= names


@pytest.fixture
def quiet(tmp_path, monkeypatch):
    """An empty folder as the working directory; figures print instead of opening."""
    import plotly.io as pio

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pio.renderers, "default", "json")
    monkeypatch.delenv("ORCHKIT_LLM_BASE_URL", raising=False)
    return tmp_path


# (not "page": pytest-playwright owns that fixture name)
@pytest.mark.parametrize("doc", PAGES_WITH_CODE, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_the_python_blocks_of_a_page_run(doc, quiet):
    """A page's blocks run in order in one namespace and one event loop, as a notebook's
    cells do (top-level ``await`` included), from an empty folder."""
    namespace: dict = {}
    loop = asyncio.new_event_loop()
    try:
        for line, source in python_blocks(doc):
            name = f"{doc.relative_to(ROOT)}:{line}"
            code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)  # a coroutine when the block awaits at top level
            if asyncio.iscoroutine(result):
                loop.run_until_complete(result)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
