"""The committed demo run's report.html in a real browser: Debian's Chromium, headless, driven by Selenium with the
system chromedriver (nothing downloaded), the network cut off (no proxy, every host name unresolvable).

`.ci/run` installs `chromium` and `chromium-driver` with apt when they are missing and sets PV_REQUIRE_BROWSER=1, so
there a missing browser fails; elsewhere these tests are skipped without one."""
import json, os, re, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT/"nbs"/"demo_run"
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
UNIT = {"k": 1e3, "M": 1e6, "B": 1e9}


@pytest.fixture(scope="module")
def browser():
    "One headless Chromium for every test of this file, offline, with its console log kept."
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    try: from selenium import webdriver
    except ImportError: missing.append("selenium (pip)")
    if missing:
        msg = f"no browser for the report page test: {missing} missing (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("PV_REQUIRE_BROWSER"): pytest.fail(msg)
        pytest.skip(msg)
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions(); opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)  # a Service path: Selenium Manager downloads nothing
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, path: Path):
    "Load a page from disk; return the console messages of the load."
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver.get_log("browser")


def sort_key(text: str):
    "A cell as the page's script orders it: a leading number (with k/M/B), '—' missing, else the text."
    t = text.strip().replace("\u2212", "-")
    if t in ("", "\u2014", "nan", "None"): return None
    m = re.match(r"^\[?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\s*([kMB])(?![A-Za-z0-9]))?", t)
    return float(m[1]) * UNIT.get(m[2], 1) if m else t


def visible_answers(driver) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", "#answers-browser .question:not([hidden]) .setting:not([hidden]) .answer-text")]


def test_page_is_self_contained():
    "No resource from the network: no http(s) or protocol-relative src/href, no CSS url() or @import to one."
    page = (DEMO/"report.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//|@import""", page, re.I)
    assert len(re.findall(r"<script\b", page)) == 1  # our own, inline
    assert not re.search(r"<(?:link|script)\b[^>]*\b(?:src|href)=\"(?!data:)", page)


def test_demo_page_in_chromium(browser, tmp_path):
    assert not open_page(browser, DEMO/"report.html"), "console messages on load"
    # nothing but the file itself was loaded
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(("file:", "data:")) for u in loaded), loaded
    # every figure is drawn, with a size
    figs = re.findall(r"\(figures/(.+?)\.png\)", (DEMO/"report.md").read_text())
    sizes = browser.execute_script("return Array.from(document.querySelectorAll('figure svg')).map(s => "
                                   "[s.closest('figure').id, s.getBoundingClientRect().width, s.getBoundingClientRect().height])")
    assert [s[0] for s in sizes] == [f"fig-{f}" for f in figs] and all(w > 100 and h > 100 for _, w, h in sizes), sizes
    # each table sorts by the header clicked: ascending, then descending
    tables = browser.find_elements("css selector", "table.sortable")
    assert len(tables) >= 7  # the report's tables and the config
    for t in tables:
        heads = t.find_elements("css selector", "thead th")
        rows = lambda: browser.execute_script("return Array.from(arguments[0].tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent))", t)
        before = rows()
        col = next((i for i in range(len(heads) - 1, -1, -1) if len({r[i] for r in before}) > 1), None)
        if col is None: continue  # a table of one row (or all equal): nothing to order
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", heads[col]); heads[col].click()
        keys = [sort_key(r[col]) for r in rows()]
        present = [k for k in keys if k is not None]
        assert heads[col].get_attribute("aria-sort") == "ascending"
        assert keys == present + [None] * (len(keys) - len(present)), keys  # missing values last
        nums = [k for k in present if isinstance(k, float)]
        assert nums == sorted(nums) and present[:len(nums)] == nums, (heads[col].text, keys)
        assert sorted(map(tuple, rows())) == sorted(map(tuple, before))  # the same rows, reordered
        heads[col].click()
        nums2 = [k for k in (sort_key(r[col]) for r in rows()) if isinstance(k, float)]
        assert heads[col].get_attribute("aria-sort") == "descending" and nums2 == sorted(nums2, reverse=True)
    # the answers browser: another question shows that question's answers
    from selenium.webdriver.support.ui import Select
    base = [json.loads(l) for l in (DEMO/"steer/base/answers.jsonl").read_text().splitlines()]
    q = Select(browser.find_element("id", "question-select"))
    base_texts = lambda: [e.get_attribute("textContent").strip() for e in browser.find_elements(
        "css selector", "#answers-browser .question:not([hidden]) .setting[data-stage='steer/base'] .answer-text")]
    n_settings = len(browser.find_elements("css selector", "#answers-browser .question:not([hidden]) .setting"))
    first = visible_answers(browser)
    man = json.loads((DEMO/"manifest.json").read_text())
    n_eval = sum(k.startswith(("steer/", "distilled/", "counts/", "vector_methods/")) and v["status"] == "done" for k, v in man.items())
    assert n_settings == n_eval >= 12 and len(first) == n_eval * 4 and base_texts() == [r["text"].strip() for r in base if r["question_index"] == 0]
    q.select_by_index(2)
    shown = visible_answers(browser)
    assert len(shown) == len(first) and not set(shown) & set(first)
    assert base_texts() == [r["text"].strip() for r in base if r["question_index"] == 2]
    # a setting filter hides the others
    f = Select(browser.find_element("id", "setting-filter"))
    f.select_by_visible_text("lora8 (distilled)")
    cards = browser.find_elements("css selector", "#answers-browser .question:not([hidden]) .setting")
    assert [c.get_attribute("data-stage") for c in cards if c.is_displayed()] == ["distilled/lora8"] and len(cards) == n_eval
    q.select_by_index(0)  # the filter holds for another question
    assert [c.get_attribute("data-stage") for c in browser.find_elements("css selector", "#answers-browser .setting") if c.is_displayed()] == ["distilled/lora8"]
    f.select_by_value("key")
    assert {c.get_attribute("data-stage") for c in browser.find_elements("css selector", "#answers-browser .setting") if c.is_displayed()} == {
        "steer/base", "steer/L15_a2", "distilled/lora8", "distilled/lora32", "distilled/bake"}
    # a long answer starts folded and unfolds on a click
    f.select_by_value("all")
    qid = browser.execute_script("var b = document.querySelector('#answers-browser .fold-toggle'); return b && b.closest('.question').getAttribute('data-question')")
    assert qid, "no long answer in the demo run"
    q.select_by_value(qid)
    btn = next(b for b in browser.find_elements("css selector", "#answers-browser .fold-toggle") if b.is_displayed())
    text = btn.find_element("xpath", "preceding-sibling::div[1]")
    h0 = text.size["height"]; assert "folded" in text.get_attribute("class")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn); btn.click()
    assert btn.text == "less" and "folded" not in text.get_attribute("class") and text.size["height"] > h0
    assert not browser.get_log("browser"), "console messages while using the page"
    # a screenshot of the top of the page, not blank
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path/"report.png"; assert browser.save_screenshot(str(shot))
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    assert img.size[0] >= 1000 and len(img.getcolors(1 << 20) or range(1 << 20)) > 50, "the page looks blank"


def test_html_in_an_answer_is_text(browser, tmp_path):
    "An answer (and a question) carrying HTML shows its characters; the script in it never runs."
    from persona_vectors.analysis import write_html
    from markupsafe import escape
    run = tmp_path/"xss"
    shutil.copytree(DEMO, run, ignore=shutil.ignore_patterns("report.html"))
    bad = "<script>window.__pwned = 1; alert(1)</script><img src=x onerror=\"window.__pwned = 2\">"
    recs = [json.loads(l) for l in (run/"steer/base/answers.jsonl").read_text().splitlines()]
    recs[0]["text"] = "Arr " + bad
    for r in recs:
        if r["question_index"] == 0: r["question"] = "<b>bold?</b> " + r["question"]
    (run/"steer/base/answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_html(run)
    assert str(escape(bad)) in (run/"report.html").read_text()  # autoescaped
    open_page(browser, run/"report.html")
    from selenium.common.exceptions import NoAlertPresentException
    with pytest.raises(NoAlertPresentException): browser.switch_to.alert.text
    assert browser.execute_script("return window.__pwned === undefined")
    texts = [e.text for e in browser.find_elements("css selector", "#answers-browser .setting[data-stage='steer/base'] .answer-text")]
    assert "Arr " + bad in texts
    options = [o.text for o in browser.find_elements("css selector", "#question-select option")]
    assert any(o.startswith("1. <b>bold?</b> ") for o in options), options
    assert not browser.find_elements("css selector", "#answers-browser b, #answers-browser img")
