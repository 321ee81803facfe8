"Run every notebook's cells through nbdev's test machinery, so notebook tests and pytest tests report together."
import os
from pathlib import Path
import pytest
import nbdev.test as nbt  # a bare `from nbdev.test import test_nb` would be collected by pytest as a test

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT/"nbs").glob("*.ipynb"))
FORCE = os.environ.get("PV_TEST_FLAGS", "slow").split()  # flags to run that are skipped by default
SKIP = [f for f in ("slow", "gpu") if f not in FORCE]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook(nb):
    ok, secs = nbt.test_nb(nb, skip_flags=SKIP, force_flags=FORCE, basepath=str(ROOT), showerr=True)
    assert ok, f"{nb.name} failed (see the traceback above)"
