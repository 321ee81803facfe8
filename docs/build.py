"""Build the docs site into `_docs/` with MkDocs (Material theme) from the notebooks and their SAVED outputs.

Nothing is executed: each notebook in `nbs/` is turned into a Markdown page as nbdev prepares notebooks for Quarto
(`#|` directive lines stripped; `#| hide` and `#| include: false` cells left out; the source of `#| export` /
`#| exporti` / `#| default_exp` cells hidden, `#| exports` shown; `#| echo: false` hides the source,
`#| output: false` the outputs; after each exported cell nbdev's `show_doc` markdown of every public name it defines),
with the outputs the notebook holds: text and streams as code blocks, markdown and HTML as they are, images as
files. The only code that runs is `import persona_vectors.<module>` (for `show_doc`'s signatures and docments, the
same output nbdev's `exec_show_docs` gives). Pages come in the order of `nbs/sidebar.yml`, `index.ipynb` is the
home page, the runs' reports (`report.md`, `report.html`, figures) and every file a page links to are copied, and
`api.md` documents every name in each module's `__all__`.

A code cell that should show something (it prints, displays, or ends in a bare value) but holds no saved output is
named by the build (a warning list, also in `_docs/build.json`, and a warning box under the cell on its page); with
`--fail-on-missing` the build fails instead. A warning, not a failure, by default: the check reads the code, not the
run, so a print in a branch that did not run would otherwise stop the site from publishing.

    python docs/build.py [--out _docs]        # what `make docs` runs; MkDocs runs with --strict
"""
import argparse, ast, importlib, inspect, json, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parent.parent
NBS, PKG, CONF = ROOT/"nbs", "persona_vectors", ROOT/"docs"/"mkdocs.yml"
HIDE_SOURCE = {"export", "exporti", "default_exp"}  # nbdev's rm_export (plus `hide`, which drops the whole cell)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WIDGET = "application/vnd.jupyter.widget-view+json"


class MissingOutputs(Exception): pass


def directives(src: str) -> dict:
    "The cell's leading `#| key: value` lines, as nbdev reads them (`#| export` -> {'export': ''})."
    d = {}
    for line in src.splitlines():
        if not line.strip(): continue
        if not line.startswith("#|"): break
        k, _, v = line[2:].strip().partition(" ")
        d[k.rstrip(":")] = v.strip()
    return d


def strip_directives(src: str) -> str:
    return "\n".join(l for l in src.splitlines() if not l.startswith("#|") and not l.rstrip().endswith("#|hide_line")).strip("\n")


def fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text: ticks += "`"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def stream_text(text: str) -> str:
    "A terminal's view of a stream: ANSI codes dropped, each line what its last carriage return left."
    return "\n".join(l.rstrip("\r").split("\r")[-1] for l in ANSI.sub("", text).split("\n"))


SHOWS = {"print", "display", "show_doc", "Markdown", "HTML", "show"}  # calls that put something under a cell


def expects_output(src: str) -> bool:
    """Would running this cell show something? It calls print / display / show_doc / plt.show (outside a def or class),
    or its last statement is a bare value (no `;`)."""
    try: tree = ast.parse(src)
    except SyntaxError: return False  # magics: not judged
    if not tree.body: return False
    def calls(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)): return False
        if isinstance(node, ast.Call):
            f = node.func
            if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) in SHOWS: return True
        return any(calls(c) for c in ast.iter_child_nodes(node))
    if any(calls(n) for n in tree.body): return True
    last = tree.body[-1]
    if not isinstance(last, ast.Expr) or src.rstrip().endswith(";"): return False
    return not isinstance(last.value, (ast.Call, ast.Constant, ast.Await, ast.Yield, ast.YieldFrom))


RENAMED = {}  # report pages: 'demo_run/report.md' -> 'demo_run/index.md' (its report.html keeps its own name)


def rewrite_links(md: str) -> str:
    "A notebook link points to its page (`05_extraction.ipynb#x` -> `05_extraction.md#x`), as Quarto rewrites them."
    md = re.sub(r"\]\((?!https?:|/)([^)\s#]+)\.ipynb(#[^)\s]*)?\)", lambda m: f"]({m[1]}.md{m[2] or ''})", md)
    return re.sub(r"\]\((?!https?:|/)([^)\s#]+\.md)(#[^)\s]*)?\)", lambda m: f"]({RENAMED.get(m[1], m[1])}{m[2] or ''})", md)


def render_doc(obj, name: str, level: int = 3, anchor: str | None = None) -> str:
    "nbdev's show_doc markdown of `obj` (signature with docments, docstring), under our own heading."
    head = "#" * level + f" {name}" + (f" {{ #{anchor} }}" if anchor else "")
    if not (inspect.isclass(obj) or callable(obj)):
        r = repr(obj)
        return f"{head}\n\n" + fence(f"{name}: {type(obj).__name__} = {r if len(r) < 400 else r[:400] + ' ...'}", "python")
    if id(obj) not in _DOCS: _DOCS[id(obj)] = (obj, doc_body(obj))
    return f"{head}\n\n{_DOCS[id(obj)][1]}"


_DOCS = {}  # id -> (obj, markdown): a name documented in its notebook and in the API page is rendered once


def doc_body(obj) -> str:
    from nbdev.showdoc import BasicMarkdownRenderer
    md = BasicMarkdownRenderer(obj)._repr_markdown_()
    md = re.sub(r"^\s*---\s*\n", "", md)
    md = re.sub(r"^#{2,6} .*\n", "", md, count=1, flags=re.M)  # its heading: ours replaces it
    try: line = inspect.getsourcelines(inspect.unwrap(obj))[1]
    except (TypeError, OSError): line = None
    md = re.sub(r"#L(?:None|\d+)\)", f"#L{line})" if line else ")", md)
    md = re.sub(r"\{target=\"_blank\"[^}]*\}", '{ target="_blank" .source-link }', md)
    return md.strip()


def def_names(src: str) -> list[str]:
    "Public functions and classes a cell defines, as nbdev's add_show_docs picks them."
    from nbdev.showdoc import showdoc_nm
    try: tree = ast.parse(src)
    except SyntaxError: return []
    out = []
    for o in tree.body:
        if isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (o.name[0] != "_" or o.name[:2] == "__"):
            nm = showdoc_nm(o); out += nm if isinstance(nm, list) else [nm]
    return out


def lookup(mod, dotted: str):
    o = mod
    for part in dotted.split("."): o = getattr(o, part)
    return o


def render_outputs(outputs: list, img_dir: Path, stem: str, counter: list) -> list[str]:
    parts, streams = [], {}
    def flush():
        for name, text in streams.items():
            t = stream_text(text).strip("\n")
            if t: parts.append(f'<div class="nb-output nb-{name}" markdown="1">\n\n{fence(t, "text")}\n\n</div>')
        streams.clear()
    for o in outputs:
        kind = o["output_type"]
        if kind == "stream":
            streams[o["name"]] = streams.get(o["name"], "") + "".join(o["text"]); continue
        flush()
        if kind == "error":
            parts.append(f'<div class="nb-output nb-error" markdown="1">\n\n{fence(stream_text(chr(10).join(o["traceback"])), "text")}\n\n</div>')
            continue
        data = o.get("data", {})
        if WIDGET in data: continue  # a progress widget: its state is not saved (nbdev-clean), nothing to show
        if "image/png" in data or "image/jpeg" in data:
            ext = "png" if "image/png" in data else "jpg"
            import base64
            counter[0] += 1
            f = img_dir/f"{stem}_{counter[0]}.{ext}"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(base64.b64decode("".join(data[f"image/{ext}"])))
            parts.append(f'<div class="nb-output nb-image" markdown="1">\n\n![]({f.parent.name}/{f.name})\n\n</div>')
        elif "image/svg+xml" in data:
            parts.append(f'<div class="nb-output nb-image">\n{"".join(data["image/svg+xml"])}\n</div>')
        elif "text/markdown" in data:
            parts.append(f'<div class="nb-output nb-markdown" markdown="1">\n\n{rewrite_links("".join(data["text/markdown"]))}\n\n</div>')
        elif "text/html" in data:
            html = "".join(data["text/html"]).strip()
            parts.append(f'<div class="nb-output nb-html">\n{html}\n</div>')
        elif "text/plain" in data:
            parts.append(f'<div class="nb-output" markdown="1">\n\n{fence(ANSI.sub("", "".join(data["text/plain"])), "text")}\n\n</div>')
    flush()
    return parts


def notebook_page(nb_path: Path, out: Path, missing: list) -> str:
    "One notebook as a Markdown page; cells that should show an output but hold none are appended to `missing`."
    nb = json.loads(nb_path.read_text())
    cells, parts, counter = nb["cells"], [], [0]
    srcs = ["".join(c["source"]) for c in cells]
    exp = next((directives(s)["default_exp"] for s in srcs if "default_exp" in directives(s)), None)
    mod = importlib.import_module(f"{PKG}.{exp}") if exp else None
    shown = set(re.findall(r"^show_doc\(\s*([\w.]+)", "\n".join(srcs), re.M))  # documented by hand already
    for i, (c, src) in enumerate(zip(cells, srcs)):
        if c["cell_type"] == "markdown":
            if i == 0:  # nbdev frontmatter: '# Title', '> description', then '- key: value' lines
                src = "\n".join(l for l in src.splitlines() if not re.match(r"^- [\w-]+\s*:", l))
            parts.append(rewrite_links(src)); continue
        if c["cell_type"] != "code": continue
        d = directives(src)
        if "hide" in d or d.get("include") == "false": continue
        code = strip_directives(src)
        if code and not (d.keys() & HIDE_SOURCE) and d.get("echo") != "false":
            parts.append(fence(code, "python"))
        outs = c.get("outputs", [])
        if not outs and d.get("eval") != "false" and not (d.keys() & HIDE_SOURCE) and expects_output(code):
            missing.append(f"{nb_path.name} cell {i}: {code.splitlines()[-1][:80]}")
            parts.append('!!! warning "No saved output"\n    This cell shows something when it runs, but the notebook was saved without its output.')
        if d.get("output") != "false":
            parts += render_outputs(outs, out/"img", nb_path.stem, counter)
        if mod is not None and ({"export", "exports", "exec_doc"} & d.keys()):
            for nm in def_names(code):
                if nm in shown: continue
                try: obj = lookup(mod, nm)
                except AttributeError: print(f"  warning: {nb_path.name}: {nm} not found in {mod.__name__}", file=sys.stderr); continue
                parts.append(f'<div class="nb-showdoc" markdown="1">\n\n{render_doc(obj, nm, 3)}\n\n</div>')
    return "\n\n".join(p for p in parts if p.strip()) + "\n"


def module_all(path: Path) -> list[str]:
    "A module's `__all__`, read from its source (nbdev writes it as a literal)."
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def modules() -> list[tuple[str, str | None]]:
    "(module, notebook it is exported from) for every module of the package, in notebook order."
    out = []
    for f in sorted((ROOT/PKG).glob("*.py")):
        if f.stem.startswith("_"): continue
        m = re.search(r"from \.\./nbs/([\w./-]+?\.ipynb)", f.read_text()[:400])
        out.append((f.stem, m[1] if m else None))
    return sorted(out, key=lambda x: (x[1] or "~", x[0]))


def api_page() -> str:
    parts = ["# API reference", "Every name in each module's `__all__`: its signature with the docments "
             "(the comment after each parameter), as nbdev's `show_doc` renders them. The notebook each module "
             "is exported from explains and tests it."]
    for name, nb in modules():
        mod = importlib.import_module(f"{PKG}.{name}")
        names = module_all(ROOT/PKG/f"{name}.py")
        src = f" (from [{Path(nb).stem}]({Path(nb).stem}.md))" if nb else ""
        parts.append(f"## {PKG}.{name} {{ #{name} }}\n\n{len(names)} names{src}.")
        for n in names:
            obj = getattr(mod, n)  # a name in __all__ that the module lacks fails the build
            parts.append(f'<div class="api-entry" markdown="1">\n\n{render_doc(obj, n, 3, anchor=f"{name}.{n}")}\n\n</div>')
            if inspect.isclass(obj):
                for m, v in vars(obj).items():
                    if m.startswith("_") or not (inspect.isfunction(v) or isinstance(v, (classmethod, staticmethod, property))): continue
                    f = v.fget if isinstance(v, property) else getattr(obj, m)
                    if not (f.__doc__ or "").strip(): continue
                    parts.append(f'<div class="api-method" markdown="1">\n\n{render_doc(f, f"{n}.{m}", 4, anchor=f"{name}.{n}.{m}")}\n\n</div>')
    return "\n\n".join(parts) + "\n"


def sidebar() -> tuple[list[str], list[str]]:
    "Notebooks and report pages in the order of nbs/sidebar.yml."
    contents = yaml.safe_load((NBS/"sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    nbs, reports = [], []
    def walk(items):
        for it in items:
            if isinstance(it, str): (nbs if it.endswith(".ipynb") else reports).append(it)
            elif isinstance(it, dict): walk(it.get("contents", []))
    walk(contents)
    return nbs, reports


LINK = re.compile(r"""(?:\]\(|(?:src|href)=["'])(?!https?:|//|#|mailto:|data:)([^)"'\s#?]+)""")


def copy_linked(md: str, page_dir_rel: str, pages: Path, copied: set):
    "Copy every file from nbs/ that a page links to (report.html, figures, ...) next to the pages."
    for target in LINK.findall(md):
        rel = Path(page_dir_rel)/target
        src, dst = NBS/rel, pages/rel
        if rel.suffix in (".md", ".ipynb") or rel in copied or not src.is_file() or dst.exists(): continue
        dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst); copied.add(rel)


def svg_files(page: str, run_dir: Path):
    """The SVG files a report page links to (`figures/NAME.svg`) and the run in nbs/ does not hold (it commits PNG and
    PDF; the page inlines the SVG): written from the page's own inline drawing, so the link works on the site."""
    for name in re.findall(r'href="figures/([\w.-]+)\.svg"', page):
        dst = run_dir/"figures"/f"{name}.svg"
        if dst.exists(): continue
        m = re.search(rf'<figure id="fig-{re.escape(name)}"[^>]*>\s*(<svg\b.*?</svg>)', page, re.S)
        if not m: print(f"warning: {run_dir.name}/report.html links figures/{name}.svg, which is neither there nor inline", file=sys.stderr); continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + m[1] + "\n")


def build(out: Path, strict: bool = True, fail_missing: bool = False) -> dict:
    t0 = time.time()
    listed, reports = sidebar()
    present = sorted(p.name for p in NBS.glob("*.ipynb"))
    unlisted = [n for n in present if n not in listed]
    if unlisted: print(f"warning: not in nbs/sidebar.yml, added at the end: {unlisted}", file=sys.stderr)
    order = [n for n in listed if (NBS/n).exists()] + unlisted
    missing, copied = [], set()
    RENAMED.update({r: str(Path(r).parent/"index.md") for r in reports if Path(r).name == "report.md"})
    with tempfile.TemporaryDirectory(prefix="pv_docs_") as tmp:
        pages = Path(tmp)/"pages"; pages.mkdir()
        nav = []
        for n in order:
            md = notebook_page(NBS/n, pages, missing)
            stem = Path(n).stem
            (pages/f"{stem}.md").write_text(md); copy_linked(md, ".", pages, copied)
            title = re.search(r"^# (.+)$", md, re.M)
            nav.append({"Home" if stem == "index" else (title[1].strip() if title else stem): f"{stem}.md"})
        report_nav = []
        for r in reports:
            src = NBS/r
            if not src.exists(): print(f"warning: report {r} (nbs/sidebar.yml) does not exist", file=sys.stderr); continue
            dst = pages/RENAMED.get(r, r); dst.parent.mkdir(parents=True, exist_ok=True)
            md = src.read_text(); dst.write_text(md); copy_linked(md, str(Path(r).parent), pages, copied)
            run = Path(r).parent.name
            report_nav.append({f"{run}": RENAMED.get(r, r)})
            if (src.parent/"report.html").exists():
                shutil.copy2(src.parent/"report.html", pages/Path(r).parent/"report.html")
                page = (src.parent/"report.html").read_text()
                copy_linked(page, str(Path(r).parent), pages, copied)  # its figure PDFs and PNGs
                svg_files(page, pages/Path(r).parent)
                report_nav.append({f"{run} (interactive page)": str(Path(r).parent/"report.html")})
        (pages/"api.md").write_text(api_page())
        shutil.copy2(ROOT/"docs"/"extra.css", pages/"extra.css")
        shutil.copytree(ROOT/"docs"/"vendor", pages/"vendor")
        nav += [{"Reports": report_nav}, {"API reference": "api.md"}]
        if missing:
            msg = "cells that should show an output hold none (run the notebook and save it):\n  " + "\n  ".join(missing)
            if fail_missing: raise MissingOutputs(msg)
            print(f"warning: {msg}", file=sys.stderr)
        cfg = Path(tmp)/"mkdocs.yml"
        cfg.write_text(yaml.safe_dump({"INHERIT": str(CONF), "docs_dir": str(pages), "site_dir": str(out.resolve()),
                                       "nav": nav}, sort_keys=False))
        t1 = time.time()
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "-q", "-f", str(cfg)] + (["--strict"] if strict else []),
                           cwd=ROOT, capture_output=True, text=True)
        if r.returncode: sys.exit(f"mkdocs build failed:\n{r.stdout}{r.stderr}")
        if r.stderr.strip(): print(r.stderr, file=sys.stderr)
    html = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html") if p.name != "404.html")
    info = {"pages": len(html), "notebooks": len(order), "reports": len(report_nav), "prepare_s": round(t1 - t0, 1),
            "mkdocs_s": round(time.time() - t1, 1), "total_s": round(time.time() - t0, 1), "missing_outputs": missing}
    (out/"build.json").write_text(json.dumps(info | {"html": html}, indent=1))
    return info


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT/"_docs"), help="site folder (default: _docs)")
    ap.add_argument("--no-strict", action="store_true", help="let MkDocs warnings (broken links, anchors) pass")
    ap.add_argument("--fail-on-missing", action="store_true", help="fail when a cell's saved output is missing (default: warn)")
    a = ap.parse_args()
    try: info = build(Path(a.out), strict=not a.no_strict, fail_missing=a.fail_on_missing)
    except MissingOutputs as e: sys.exit(f"docs build failed: {e}")
    print(f"site in {a.out}: {info['pages']} pages ({info['notebooks']} notebooks, {info['reports']} report pages, "
          f"API reference) in {info['total_s']} s (notebooks and API {info['prepare_s']} s, mkdocs {info['mkdocs_s']} s)")
