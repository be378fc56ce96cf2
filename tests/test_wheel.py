"""The wheel runs the main job with no checkout: built from a copy of the sources, installed into a
fresh venv outside the checkout, `lunarfleet smoke` trains there on the page the wheel carries.

The fresh venv gets the wheel alone (`--no-deps`); its dependencies are the test venv's
site-packages, put on its path by a `.pth` file (a real dependency install takes minutes, and is
done by hand, see the README). The checkout and the test venv's editable install of it are not
importable there: the test checks that LunarFleet's modules come from the new venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "lunarfleet", "orchestrator", "browser_pool", "training", "webapp")
OUR_PACKAGES = {"lunarfleet", "orchestrator", "browser_pool", "training"}


def build_wheel(into: Path) -> Path:
    """`pip wheel . --no-deps` in a copy of the sources (the checkout gets no build/ folder); the
    test venv's setuptools builds it, so no package index is needed."""
    source = into / "source"
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    dist = into / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = dist.glob("lunarfleet-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv with only the wheel installed; the test venv's packages serve as its dependencies."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "zz_test_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def outside_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.browser
def test_the_wheel_alone_runs_smoke_in_a_fresh_venv(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    wheel = build_wheel(tmp_path / "build")
    files = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/", 1)[0] for name in files if ".dist-info/" not in name} == OUR_PACKAGES  # no tests
    assert "lunarfleet/webapp/index.html" in files and "lunarfleet/webapp/sim/core.js" in files
    assert {f"orchestrator/dashboard_page/{name}" for name in ("index.html", "dashboard.js", "chart.js", "dashboard.css")} <= set(files)

    python = fresh_venv(tmp_path / "venv", wheel)
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert installed == OUR_PACKAGES, installed
    home = tmp_path / "home"  # a user's folder: no checkout anywhere near
    home.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import json, lunarfleet, orchestrator, training, browser_pool\n"
         "from orchestrator.app_server import WEBAPP_DIR\n"
         "print(json.dumps({'modules': [m.__file__ for m in (lunarfleet, orchestrator, training, browser_pool)], "
         "'webapp': str(WEBAPP_DIR), 'version': lunarfleet.__version__}))"],
        cwd=home, env=outside_env(), capture_output=True, text=True, timeout=120,
    )
    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    venv_dir = str((tmp_path / "venv").resolve())
    assert all(path.startswith(venv_dir) for path in found["modules"]), found  # not the checkout
    assert found["webapp"].startswith(venv_dir) and found["webapp"].endswith("lunarfleet/webapp"), found

    smoke = subprocess.run(
        [str(python.parent / "lunarfleet"), "smoke", "--envs", "2", "--timesteps", "2048", "--n-steps", "1024",
         "--base-port", str(base), "--app-port", str(app), "--json", "verdict.json", "--progress", "lines"],
        cwd=home, env=outside_env(), capture_output=True, text=True, timeout=400,
    )
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    verdict = json.loads((home / "verdict.json").read_text())
    assert verdict["ok"] and verdict["timesteps"] >= 2048 and verdict["checkpoint_loads"], verdict
