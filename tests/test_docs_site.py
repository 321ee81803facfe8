"""The docs site (`make docs`: docs/build.py, MkDocs Material) built from the notebooks' saved outputs and read in a
real browser: Debian's Chromium, headless, driven by Selenium with the system chromedriver, the network cut off.

Every page loads from file:// with no console message and no request outside the site; every internal link and
anchor resolves; every image and figure has a rendered size; the sidebar follows nbs/sidebar.yml; the API page has
every name of every module's `__all__`; search finds a page; the home page's screenshot is not blank.
`PV_DOCS_SCREENSHOTS=nbs` rewrites the committed screenshots (nbs/docs_home.png, nbs/docs_notebook.png)."""
import ast, json, os, re, subprocess, sys, time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest
from test_report_page import browser, open_page  # the same offline Chromium (a module-scoped fixture)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built once for this file by what `make docs` runs, into a temporary folder."
    try: import mkdocs, material  # noqa: F401
    except ImportError as e:
        if os.environ.get("PV_REQUIRE_BROWSER"): pytest.fail(f"the docs extra is not installed ({e}): make docs")
        pytest.skip(f"the docs extra is not installed ({e}): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")/"_docs"
    t = time.time()
    r = subprocess.run([sys.executable, str(ROOT/"docs"/"build.py"), "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=os.environ | {"NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout.strip(), f"(wall {time.time() - t:.1f} s)")
    return out


class Ids(HTMLParser):
    "Every id (and a[name]) of a page: the anchors a link may point to."
    def __init__(self, text):
        super().__init__(); self.ids = set(); self.feed(text)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag == "a" and a.get("name"): self.ids.add(a["name"])


def pages(site):
    return [site/p for p in json.loads((site/"build.json").read_text())["html"]]


def test_every_notebook_and_report_is_a_page(site):
    info = json.loads((site/"build.json").read_text())
    nbs = sorted(p.stem for p in (ROOT/"nbs").glob("*.ipynb"))
    assert {f"{n}.html" for n in nbs} <= set(info["html"]) and "api.html" in info["html"]
    for run in ("demo_run", "gap_run", "monitor_run", "shape_run", "shift_run"):
        assert (site/run/"index.html").exists(), run  # its report.md
        if (ROOT/"nbs"/run/"report.html").exists():
            assert (site/run/"report.html").read_bytes() == (ROOT/"nbs"/run/"report.html").read_bytes()
    assert info["pages"] == len(info["html"]) >= len(nbs) + 6
    assert not list(site.rglob("*.ipynb")) and not (site/"index.md").exists()
    for n in nbs:  # nbdev's directives never reach a page's code (pygments marks a comment c1)
        assert not re.search(r'class="c1?">#\|', (site/f"{n}.html").read_text()), n


def test_pages_in_chromium(site, browser):
    """Each page: no console message, nothing loaded from outside the site, every image and figure drawn with a size,
    every link inside the site to a file that exists and an anchor that exists on it."""
    ids, checked, t0 = {}, 0, time.time()
    def anchors(f: Path):
        if f not in ids: ids[f] = Ids(f.read_text(errors="replace")).ids
        return ids[f]
    for page in pages(site):
        name = page.relative_to(site).as_posix()
        logs = open_page(browser, page)
        assert not logs, (name, logs)
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith(("file:", "data:", "blob:")) for u in loaded), (name, [u for u in loaded if not u.startswith("file:")])
        head = browser.execute_script("return Array.from(document.querySelectorAll('script[src], link[href]:not([rel=canonical]), iframe[src], img[src], source[src]'))"
                                      ".map(e => e.src || e.href)")
        assert not [u for u in head if urlsplit(u).scheme in ("http", "https")], (name, head)
        sizes = browser.execute_script("""return Array.from(document.querySelectorAll('article img, figure, .nb-image svg')).map(e => {
            e.scrollIntoView(); const r = e.getBoundingClientRect();
            return [e.tagName, e.currentSrc || e.id || '', r.width, r.height, e.tagName != 'IMG' || (e.complete && e.naturalWidth > 0)]})""")
        bad = [s for s in sizes if not (s[2] > 10 and s[3] > 10 and s[4])]
        assert not bad, (name, bad)
        links = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for url in links:
            u = urlsplit(url)
            if u.scheme != "file": continue  # a link out of the site (GitHub, papers): not a request, not checked
            target = Path(unquote(u.path))
            if target.is_dir(): target = target/"index.html"
            assert target.is_file() and target.resolve().is_relative_to(site.resolve()), (name, url)
            if u.fragment and target.suffix == ".html":
                assert unquote(u.fragment) in anchors(target), (name, url)
            checked += 1
        assert not browser.get_log("browser"), name
    print(f"{len(pages(site))} pages, {checked} internal links checked in {time.time() - t0:.1f} s")
    assert checked > 500


def test_sidebar_order_and_home(site, browser, tmp_path):
    import yaml
    side = yaml.safe_load((ROOT/"nbs"/"sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    want = [Path(s).stem + ".html" for s in side if isinstance(s, str)]
    open_page(browser, site/"index.html")
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]'))"
                                   ".map(a => a.getAttribute('href'))")
    got = [h for h in hrefs if h.endswith(".html") and "/" not in h and not h.startswith("api")]
    got = [h for i, h in enumerate(got) if h not in got[:i]]
    assert got[:len(want)] == ["index.html" if w == "index.html" else w for w in want], got
    # the home page shows the results table the notebook holds and links to the reports
    text = browser.find_element("css selector", "article").text
    assert "persona_vectors" in text and browser.find_elements("css selector", "article .nb-markdown table")
    assert browser.find_elements("css selector", "article a[href='demo_run/report.html']")
    # a screenshot of the top of the page, not blank
    from PIL import Image
    shots = {"docs_home.png": site/"index.html", "docs_notebook.png": site/"06_steering.html"}
    for name, page in shots.items():
        open_page(browser, page)
        shot = tmp_path/name; assert browser.save_screenshot(str(shot))
        img = Image.open(shot).convert("RGB")
        assert img.size[0] >= 1000 and len(img.getcolors(1 << 20) or range(1 << 20)) > 50, f"{name} looks blank"
        if os.environ.get("PV_DOCS_SCREENSHOTS"):
            img.resize((img.width // 2, img.height // 2), Image.LANCZOS).quantize(64).save(ROOT/os.environ["PV_DOCS_SCREENSHOTS"]/name, optimize=True)


def test_api_page_lists_every_name(site, browser):
    open_page(browser, site/"api.html")
    heads = dict(browser.execute_script("return Array.from(document.querySelectorAll('article [id]')).map(e => [e.id, e.textContent])"))
    ids = set(heads)
    missing, n = [], 0
    for f in sorted((ROOT/"persona_vectors").glob("*.py")):
        if f.stem.startswith("_"): continue
        names = next((ast.literal_eval(a.value) for a in ast.parse(f.read_text()).body
                      if isinstance(a, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in a.targets)), [])
        assert f.stem in ids, f.stem
        for nm in names:
            n += 1
            if nm not in heads.get(f"{f.stem}.{nm}", ""): missing.append(f"{f.stem}.{nm}")
    assert n > 300 and not missing, missing
    # a function's entry: its signature with the docments (the comment after each parameter)
    sig = browser.find_element("xpath", "//*[@id='steering.Steering']/following::pre[1]").text
    assert "def Steering(" in sig and "alpha:float=1.0, # steering coefficient" in sig.replace(" ,", ",")


def test_search_finds_a_page(site, browser):
    "The search box works offline (the index is bundled): a word from one notebook finds that notebook."
    from selenium.webdriver.support.ui import WebDriverWait
    open_page(browser, site/"index.html")
    box = browser.find_element("css selector", "input.md-search__input")  # in the header at this window's width
    box.click()
    box.send_keys("kernelize")
    hits = WebDriverWait(browser, 10).until(lambda d: d.find_elements("css selector", ".md-search-result__item a"))
    assert any("02_models.html" in h.get_attribute("href") for h in hits), [h.get_attribute("href") for h in hits]
    assert not browser.get_log("browser")


def load_builder():
    import importlib.util
    spec = importlib.util.spec_from_file_location("docs_build", ROOT/"docs"/"build.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_missing_outputs_are_named(tmp_path):
    """Notebooks saved without their outputs are named by the build, cell by cell (and the page says so under the
    cell); with their outputs, the same pages pass. The check reads code, so it finds most such cells, not all."""
    b = load_builder()
    shown = flagged = 0
    for name in ("03_artifacts.ipynb", "04_judge.ipynb", "07b_kl_losses.ipynb"):
        nb = json.loads((ROOT/"nbs"/name).read_text())
        has = {i for i, c in enumerate(nb["cells"]) if c.get("outputs")}
        missing = []; b.notebook_page(ROOT/"nbs"/name, tmp_path, missing)
        assert has and not missing, missing
        for c in nb["cells"]:
            if c["cell_type"] == "code": c["outputs"] = []
        bare = tmp_path/name; bare.write_text(json.dumps(nb))
        md = b.notebook_page(bare, tmp_path, missing)
        cells = {int(m.split("cell ")[1].split(":")[0]) for m in missing}
        assert all(m.startswith(f"{name} cell ") for m in missing) and cells <= has, (missing, has)
        assert md.count('!!! warning "No saved output"') == len(cells)
        shown, flagged = shown + len(has), flagged + len(cells)
    assert flagged >= 0.75 * shown, (flagged, shown)


def test_directives_as_nbdev_applies_them(tmp_path):
    "`#| hide` cells and `#| export` sources are not on the page, directive lines never; show_doc follows each export."
    b = load_builder()
    nb = {"cells": [
        {"cell_type": "markdown", "source": "# T\n> d\n\n- skip_exec: true", "metadata": {}},
        {"cell_type": "code", "source": "#| default_exp records", "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": "#| hide\nsecret_hidden = 1", "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": "#| export\ndef atomic_write(): 'src hidden'", "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": "#| echo: false\nprint('only the output')", "metadata": {},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "0%\r50%\r100% done\n"}]},
        {"cell_type": "code", "source": "#| output: false\nprint('x')", "metadata": {},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "not shown\n"}]},
        {"cell_type": "markdown", "source": "See [the pipeline](14_pipeline.ipynb#stages).", "metadata": {}}]}
    f = tmp_path/"t.ipynb"; f.write_text(json.dumps(nb))
    missing = []; md = b.notebook_page(f, tmp_path, missing)
    assert not missing and "#|" not in md and "skip_exec" not in md
    assert "secret_hidden" not in md and "src hidden" not in md and "only the output" not in md and "not shown" not in md
    assert "### atomic_write" in md and "100% done" in md and "50%" not in md
    assert "](14_pipeline.md#stages)" in md
