"""Build script for sam2-fast: it only drives CMake (pybind11 ``cmake_example`` style).

Install with the torch that will run the code already in the environment::

    pip install --no-build-isolation .        # or -e . for an editable install

Environment switches, read at build time:

* ``SAM2_FAST_BUILD_EXT=0``: pure-Python install, no compiler needed; every op falls back to
  its torch implementation.
* ``SAM2_FAST_BUILD_CUDA=auto|0|1``: build the CUDA ops in ``csrc/cuda/``. ``auto`` (default)
  builds them when CMake finds a CUDA compiler and torch is a CUDA build; ``1`` fails the build
  when that is not possible; ``0`` never builds them.
* ``SAM2_FAST_CUDA_ARCHS``: CUDA architectures in CMake syntax (default ``80;90``).
* ``CUDA_HOME`` / ``CUDA_PATH``: CUDA toolkit to use when ``CUDACXX`` is not set.
* ``CMAKE_BUILD_PARALLEL_LEVEL``: parallel compile jobs (default: all cores).
* ``CMAKE_ARGS``: extra arguments for the CMake configure step.

When torch cannot be imported (for example under pip's default build isolation) the extension
is skipped with a warning and the package installs as pure Python.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUILD_INFO_FILE = "_build_info.py"


def _version() -> str:
    text = (ROOT / "sam2_fast" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("could not find __version__ in sam2_fast/__init__.py")
    return match.group(1)


def _extension_skip_reason() -> str | None:
    """Why ``sam2_fast._C`` will not be built, or None when it will be."""
    if os.environ.get("SAM2_FAST_BUILD_EXT", "1") == "0":
        return "installed with SAM2_FAST_BUILD_EXT=0"
    try:
        import torch  # noqa: F401
    except Exception as exc:  # torch missing or broken: any import error means "no torch"
        return (
            f"torch was not importable at build time ({type(exc).__name__}: {exc}); "
            "reinstall with `pip install --no-build-isolation` in an environment with torch"
        )
    return None


def _packages() -> tuple[list[str], dict[str, str]]:
    """``sam2_fast`` plus ``kernels/`` and ``zoo/`` mapped to ``sam2_fast.kernels`` / ``.zoo``."""
    packages = find_packages(include=["sam2_fast", "sam2_fast.*"])
    package_dir: dict[str, str] = {}
    for folder in ("kernels", "zoo"):
        if not (ROOT / folder / "__init__.py").is_file():
            warnings.warn(
                f"{folder}/__init__.py not found: sam2_fast.{folder} is not installed", stacklevel=1
            )
            continue
        name = f"sam2_fast.{folder}"
        package_dir[name] = folder
        packages += [name, *(f"{name}.{sub}" for sub in find_packages(where=str(ROOT / folder)))]
    return packages, package_dir


def _find_tool(name: str) -> str | None:
    """``name`` from this interpreter's scripts folder (pip's cmake / ninja), else from PATH."""
    search = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


class CMakeExtension(Extension):
    """An extension whose sources are built by the CMake project in ``sourcedir``."""

    def __init__(self, name: str, sourcedir: Path) -> None:
        super().__init__(name, sources=[])
        self.sourcedir = str(sourcedir)


class CMakeBuild(build_ext):
    """Configure and build the CMake project; the library lands where setuptools expects it.

    setuptools builds into ``build_lib`` and copies to the source tree for editable / inplace
    builds, so ``get_ext_fullpath`` is the only output location needed here.
    """

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        import pybind11

        cmake = _find_tool("cmake")
        if cmake is None:
            raise RuntimeError(
                "cmake not found: `pip install cmake ninja`, or install without the extension "
                "with SAM2_FAST_BUILD_EXT=0"
            )
        ext_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)

        configure = [
            cmake,
            "-S",
            ext.sourcedir,
            "-B",
            str(build_dir),
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DSAM2_FAST_VERSION={_version()}",
            f"-DSAM2_FAST_BUILD_CUDA={os.environ.get('SAM2_FAST_BUILD_CUDA', 'auto')}",
        ]
        if "SAM2_FAST_CUDA_ARCHS" in os.environ:
            configure.append(f"-DSAM2_FAST_CUDA_ARCHS={os.environ['SAM2_FAST_CUDA_ARCHS']}")
        else:  # back to the CMakeLists.txt default in a reused build folder
            configure.append("-USAM2_FAST_CUDA_ARCHS")
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        if cuda_home and "CUDACXX" not in os.environ:
            nvcc = Path(cuda_home) / "bin" / "nvcc"
            if nvcc.is_file():
                configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        ninja = _find_tool("ninja")
        if ninja is not None:
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        configure += shlex.split(os.environ.get("CMAKE_ARGS", ""))

        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        subprocess.run([cmake, "--build", str(build_dir), "-j", jobs], check=True)


class BuildPyWithInfo(build_py):
    """Also write ``sam2_fast/_build_info.py``: whether ``_C`` was built, and if not, why.

    ``sam2_fast._ext`` reads it to tell "not built on purpose" from "built but broken".
    """

    def run(self) -> None:
        super().run()
        package = ROOT / "sam2_fast" if self.editable_mode else Path(self.build_lib) / "sam2_fast"
        package.mkdir(parents=True, exist_ok=True)
        (package / BUILD_INFO_FILE).write_text(
            '"""Written by setup.py at build time; do not edit."""\n\n'
            f"EXTENSION_BUILT = {SKIP_REASON is None}\n"
            f"SKIP_REASON = {SKIP_REASON!r}\n",
            encoding="utf-8",
        )


SKIP_REASON = _extension_skip_reason()
if SKIP_REASON is not None and os.environ.get("SAM2_FAST_BUILD_EXT", "1") != "0":
    warnings.warn(f"sam2_fast._C is not built: {SKIP_REASON}", stacklevel=1)

PACKAGES, PACKAGE_DIR = _packages()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=[CMakeExtension("sam2_fast._C", ROOT)] if SKIP_REASON is None else [],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithInfo},
    zip_safe=False,
)
