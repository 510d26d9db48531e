"""What the package metadata promises: one version, a licence, the build tools in the
development set-up, and a built package of sources and modules without generated C."""
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import roomstate

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def names(requirements):
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_version_is_written_once():
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "roomstate.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", roomstate.__version__)
    assert roomstate.__version__ == importlib.metadata.version("roomstate")


def test_the_licence_is_apache_2():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply" in text
    assert pyproject()["project"]["license"] == {"text": "Apache-2.0"}


def test_the_project_links_to_its_home():
    urls = pyproject()["project"]["urls"]
    assert urls["Homepage"] == "https://github.com/roomstate/roomstate"
    assert all(u.startswith("https://github.com/roomstate/roomstate") for u in urls.values())


def test_the_dev_extra_can_rebuild_the_extensions():
    """``python setup.py build_ext --inplace`` after ``pip install -e '.[dev]'`` needs every build requirement."""
    config = pyproject()
    build = names(config["build-system"]["requires"])
    installed = names(config["project"]["dependencies"]) | names(config["project"]["optional-dependencies"]["dev"])
    assert build <= installed
    assert "roomstate[test]" in config["project"]["optional-dependencies"]["dev"]


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build")
def test_a_build_ships_sources_and_stubs_not_generated_c(tmp_path):
    """The real pyproject.toml over a small package whose extensions are built from C files,
    as Cython's output is: setuptools' build_py (what a wheel holds besides the built
    modules) takes the .py/.pyx/.pxd/.pyi sources and leaves the .c out."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    shutil.copy(ROOT / "LICENSE", tmp_path)
    (tmp_path / "setup.py").write_text(
        "from setuptools import Extension, setup\n"
        "setup(ext_modules=[Extension('roomstate._core', ['roomstate/_core.c']),"
        " Extension('roomstate.store', ['roomstate/store.c'])])\n"
    )
    pkg = tmp_path / "roomstate"
    # every package pyproject.toml lists, each with its __init__.py
    subpackages = [p.split(".", 1)[1] for p in pyproject()["tool"]["setuptools"]["packages"] if "." in p]
    for sub in subpackages:
        (pkg / sub.replace(".", "/")).mkdir(parents=True)
    files = {
        "__init__.py": '__version__ = "9.8.7"\n',
        **{f"{sub.replace('.', '/')}/__init__.py": "" for sub in subpackages},
        "_core.pyx": "",
        "_core.pxd": "",
        "_core.pyi": "",
        "_core.c": "",
        "store.py": "",
        "store.pyi": "",
        "store.c": "",
        "py.typed": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_py", "--build-lib", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = {p.relative_to(tmp_path / "out" / "roomstate").as_posix() for p in (tmp_path / "out" / "roomstate").rglob("*") if p.is_file()}
    assert built == set(files) - {"_core.c", "store.c"}
    assert "Version: 9.8.7" in next(tmp_path.glob("*.egg-info/PKG-INFO")).read_text()


def test_the_installed_package_has_no_generated_c():
    dist = importlib.metadata.distribution("roomstate")
    if dist.read_text("RECORD") is None:  # a build leaves roomstate.egg-info in the checkout
        pytest.skip(f"no installed distribution: the metadata found is a build's ({dist.locate_file('')})")
    package = [f for f in dist.files or [] if f.parts[0] == "roomstate"]
    if not package:
        pytest.skip("an editable install: the package is the checkout, generated C included")
    installed_at = Path(package[0].locate()).resolve().parents[len(package[0].parts) - 2]
    if installed_at != Path(roomstate.__file__).resolve().parent:
        pytest.skip(f"the roomstate under test ({roomstate.__file__}) is not the installed one ({installed_at})")
    suffixes = {f.suffix for f in package}
    assert ".c" not in suffixes
    assert {".py", ".pyx", ".pxd", ".pyi", ".so"} <= suffixes
