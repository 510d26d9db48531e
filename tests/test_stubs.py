"""Every compiled module has a .pyi stub beside it that matches the built module."""
import pathlib
import subprocess
import sys

import roomstate

PKG = pathlib.Path(roomstate.__file__).parent
COMPILED = sorted(p.name.split(".")[0] for p in PKG.glob("*.so"))


def test_every_compiled_module_has_a_stub():
    assert "_core" in COMPILED
    missing = [m for m in COMPILED if not (PKG / f"{m}.pyi").exists()]
    assert not missing


def test_stubs_match_the_built_modules(tmp_path):
    allow = pathlib.Path(__file__).with_name("stubtest_allowlist.txt")
    cmd = [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(allow)] + [f"roomstate.{m}" for m in COMPILED]
    # mypy finds an installed package (it has py.typed) from anywhere; an editable
    # install of a checkout only from the checkout itself.
    checkout = (PKG.parent / "pyproject.toml").exists()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=PKG.parent if checkout else tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
