"""The wheel (what ``pip install .`` and the Docker image get) carries every module and file.

An editable install reads the source tree, so a subpackage or template the packaging
config misses passes every other test and breaks only the installed service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "memory", "formatters", "policies", "config")


def _shipped_sources() -> set[str]:
    files = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files.add(path.relative_to(ROOT).as_posix())
    return files


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    # Built from a copy: setuptools reuses a build/ directory it finds in the tree, which
    # would hide what the configuration alone leaves out.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("memshadow-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_shipped_sources() - in_wheel)
    assert not missing, f"not in the wheel: {missing}"
