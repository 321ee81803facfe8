"""Write README.md from nbs/index.ipynb (nbdev's `nbdev-readme` needs Quarto, which these machines cannot install).

Markdown cells are copied; code cells become ```python blocks (cells marked `#| hide` are left out) followed by their
markdown or text output; links to notebooks point into nbs/. `--check` fails when README.md would change.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cell_text(c) -> str:
    src = "".join(c["source"])
    if c["cell_type"] == "markdown": return src
    lines = src.splitlines()
    if any(l.strip() in ("#| hide", "#|hide") for l in lines): return ""
    code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
    echo = not any(l.replace(" ", "") == "#|echo:false" for l in lines)
    parts = [f"```python\n{code}\n```"] if code and echo else []
    for o in c.get("outputs", []):
        data = o.get("data", {})
        if "text/markdown" in data: parts.append("".join(data["text/markdown"]))
        elif o.get("output_type") == "stream" or "text/plain" in data:
            parts.append("```\n" + "".join(o.get("text", data.get("text/plain", ""))).rstrip() + "\n```")
    return "\n\n".join(parts)


def readme() -> str:
    nb = json.loads((ROOT/"nbs"/"index.ipynb").read_text())
    text = "\n\n".join(t for t in (cell_text(c) for c in nb["cells"]) if t.strip())
    text = re.sub(r"^> ", "> ", text, flags=re.M)
    text = re.sub(r"\]\((?!https?:)([\w./-]+\.(?:ipynb|md|html|png|svg|pdf|csv))\)", lambda m: f"](nbs/{m.group(1)})", text)
    return text.rstrip() + "\n\n<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n"


if __name__ == "__main__":
    new, path = readme(), ROOT/"README.md"
    if "--check" in sys.argv:
        if path.read_text() != new: sys.exit("README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`")
    else: path.write_text(new)
