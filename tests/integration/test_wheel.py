"""The distributions a user installs: built from this tree, installed outside it, run from there.

Every other test runs on the editable install, which imports straight from the source tree and
so cannot notice a subpackage or data file missing from the wheel. This one builds the sdist and
the wheel the way ``pip install`` / ``python -m build`` do (the wheel is built *from* the sdist,
so a file the sdist forgets breaks the wheel too), installs each into a fresh venv in a temporary
directory, and runs ``tickflow validate`` and a short ``tickflow run`` from an unrelated working
directory with the source tree off ``sys.path``.
"""

from __future__ import annotations

import subprocess
import tarfile
import venv
import zipfile
from pathlib import Path

import orjson
import pytest

import engine
from tests.integration.conftest import clean_env as _clean_env

# The first test to need `dists` builds them (~90 s, longer on a busy machine) inside its own
# timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "fastpath", "strategies")


def _source_packages() -> set[str]:
    """Every package directory of the tree (a folder with an ``__init__.py``), dotted."""
    found = set()
    for top in PACKAGES:
        for init in (ROOT / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def _install(target: Path, spec: Path, **env: str) -> Path:
    """A fresh venv at ``target`` with ``spec`` installed; returns its ``bin``."""
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    bin_dir = target / "bin"
    proc = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(spec)],
        capture_output=True, timeout=900, env=_clean_env(**env), cwd=target,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    return bin_dir


def _check_installed(bin_dir: Path, workdir: Path, *, compiled: bool) -> None:
    env = _clean_env()
    validate = subprocess.run([str(bin_dir / "tickflow"), "validate"], cwd=workdir,
                              capture_output=True, timeout=120, env=env)
    assert validate.returncode == 0, validate.stderr.decode()
    assert "high_freq_trading" in validate.stdout.decode()

    summary = workdir / "summary.json"
    run = subprocess.run(
        [str(bin_dir / "tickflow"), "run", "--duration", "2", "--metrics-port", "0",
         "--summary", str(summary)],
        cwd=workdir, capture_output=True, timeout=120, env=env,
    )
    assert run.returncode == 0, run.stderr.decode()[-4000:]
    data = orjson.loads(summary.read_bytes())
    assert data["runs"]["high_freq_trading"]["completed"] > 0
    assert (workdir / "state" / "tickflow.db").is_file()

    # Imported from the venv, not the checkout, and with the build it was meant to have.
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import engine, fastpath.heap as h; print(engine.__file__); print(h.IMPLEMENTATION);"
         " print(engine.IMPLEMENTATION)"],
        cwd=workdir, capture_output=True, timeout=60, env=env, text=True,
    )
    assert probe.returncode == 0, probe.stderr
    where, impl, engine_impl = probe.stdout.split()
    assert not Path(where).is_relative_to(ROOT)
    assert impl == ("cython" if compiled else "python")
    assert engine_impl == ("cython" if compiled else "python")


def test_wheel_holds_every_subpackage_and_the_default_config(dists: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _source_packages() <= packages, _source_packages() - packages
    assert "engine/default.toml" in names
    assert any(n.startswith("fastpath/_heap.") and n.endswith(".so") for n in names)
    # The engine's compiled core, each module beside the .pxd that types it.
    for module in engine.COMPILED_MODULES:
        assert any(n.startswith(f"engine/{module}.") and n.endswith(".so") for n in names), module
        assert f"engine/{module}.pxd" in names, module


def test_sdist_holds_the_typed_layouts_of_the_compiled_modules(dists: dict[str, Path]) -> None:
    """Without the .pxd files a build from the sdist compiles the core untyped."""
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for module in engine.COMPILED_MODULES:
        assert f"engine/{module}.py" in names, module
        assert f"engine/{module}.pxd" in names, module


def test_wheel_installs_and_runs_outside_the_tree(
    dists: dict[str, Path], tmp_path: Path
) -> None:
    bin_dir = _install(tmp_path / "venv", dists["wheel"])
    work = tmp_path / "work"
    work.mkdir()
    _check_installed(bin_dir, work, compiled=True)


def test_sdist_installs_pure_python_without_a_compiler_and_runs(
    dists: dict[str, Path], tmp_path: Path
) -> None:
    # TICKFLOW_NO_EXTENSIONS at build time skips the extensions (a host without a C
    # compiler); the choosers then pick the pure-Python twins at run time.
    bin_dir = _install(tmp_path / "venv", dists["sdist"], TICKFLOW_NO_EXTENSIONS="1")
    work = tmp_path / "work"
    work.mkdir()
    _check_installed(bin_dir, work, compiled=False)
