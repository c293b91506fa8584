"""The front door: README.md is nbs/index.ipynb as Markdown, and `make docs` builds a site of every notebook and page that reads
in a real headless Chromium (Debian's package)."""
import re, shutil, subprocess
from pathlib import Path
import pytest
import yaml
from conftest import ROOT, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_readme_is_the_index_notebook():
    res = run(["make", "-s", "--no-print-directory", "readme-check"], ROOT, check=False)
    assert res.returncode == 0, "README.md is not what `make readme` writes from nbs/index.ipynb: edit the notebook, then run `make readme`\n" + res.stdout[-3000:]


@pytest.fixture(scope="module")
def site():
    run(["make", "-s", "--no-print-directory", "docs"], ROOT, timeout=1200)
    return ROOT / "_docs"


def nav_pages(nav) -> list[str]:
    "Every page mkdocs.yml's nav names, depth first."
    out = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_notebook_and_page_is_in_the_site(site):
    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    sources = {str(p.relative_to(ROOT / "nbs")) for p in (ROOT / "nbs").rglob("*") if p.suffix in (".ipynb", ".md") and ".ipynb_checkpoints" not in p.parts}
    assert sources == set(pages), f"in nbs/ but not in the nav: {sorted(sources - set(pages))}; in the nav but not in nbs/: {sorted(set(pages) - sources)}"
    for page in pages:
        html = (site / re.sub(r"\.(ipynb|md)$", ".html", page)).read_text()
        assert "<title>" in html and len(html) > 5000, page
    decoding = (site / "19_decoding.html").read_text()
    # nbdev rendered show_doc (a signature and its docstring) and dropped the export directives
    assert "calls_grammar" in decoding and "#| export" not in decoding


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `make test` installs it when run as root; otherwise `sudo apt-get install chromium`")
def test_the_site_reads_in_a_browser(site, tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        page = browser.new_page()
        page.goto((site / "index.html").as_uri())
        assert "agent-loop" in page.title()
        assert "make demo" in page.inner_text("article")
        page.get_by_role("link", name="Guide").first.click()
        page.wait_for_url("**/guide.html")
        assert "The foundation" in page.inner_text("article")
        page.goto((site / "19_decoding.html").as_uri())
        assert "calls_grammar" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "decoding.png"), full_page=False)
        browser.close()
