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


def test_stubs_match_the_built_modules():
    allow = pathlib.Path(__file__).with_name("stubtest_allowlist.txt")
    cmd = [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(allow)] + [f"roomstate.{m}" for m in COMPILED]
    # From the directory holding the package, so mypy finds these stubs with the modules.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=PKG.parent)
    assert out.returncode == 0, out.stdout + out.stderr
