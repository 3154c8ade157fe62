"""Conditioning shared by the class-conditional families (gan, vae, diffusion).

A model conditions on a few catalog fields (``category``, ``attributes.color``, ...). Each field has
a vocabulary, listed in config.json as ``conditions: [{"field", "values"}]``; index 0 of every
vocabulary is :data:`UNKNOWN`, used for values the model never saw and for condition dropout
(classifier-free guidance, Ho & Salimans 2022). Fine-tuning appends new values at the end, so a
base model's indices stay valid.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from catalog_render import storage
from catalog_render.generators.base import Conditioning

UNKNOWN = "<unk>"


class ConditionEncoder(nn.Module):
    """Embeds each conditioning field and concatenates: indices (B, F) int64 -> (B, F*embed_dim)."""

    def __init__(self, vocab_sizes: list[int], embed_dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, embed_dim) for n in vocab_sizes)
        self.out_dim = embed_dim * len(vocab_sizes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([t(idx[:, i]) for i, t in enumerate(self.tables)], dim=1)


def condition_indices(cfg: dict, conditionings: list[Conditioning]) -> torch.Tensor:
    """Map conditionings to vocabulary indices (B, F) int64; unseen values map to 0 (unknown)."""
    lookups = [(c["field"], {v: i for i, v in enumerate(c["values"])}) for c in cfg["conditions"]]
    rows = [[lookup.get(cond.value(name) or "", 0) for name, lookup in lookups] for cond in conditionings]
    return torch.tensor(rows, dtype=torch.int64)


#: Conditioning fields a render cannot do without: a missing or unseen value would render a
#: generic product of no particular kind. Other fields (colour, gender, ...) fall back to the
#: "unknown" embedding: the render shows the right kind of product in an arbitrary colour.
REQUIRED_FIELDS = ("category",)


def conditioning_problem(conditions: list[dict], conditioning: Conditioning) -> str | None:
    """Why a model with these ``conditions`` (config.json's ``[{"field", "values"}]``) cannot render
    ``conditioning``, or None. Only :data:`REQUIRED_FIELDS` the model conditions on are checked:
    a missing value (null, empty, whitespace) or one outside the vocabulary (never seen in
    training, or seen fewer than ``min_count`` times; matching is exact, case included)."""
    for c in conditions:
        name = c["field"]
        if name not in REQUIRED_FIELDS:
            continue
        value = conditioning.value(name)
        known = [v for v in c["values"] if v != UNKNOWN]
        if value is None or not str(value).strip():
            return f"no {name}: this model renders by {name} and cannot use the title"
        if value not in known:
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
            return f"{name} {value!r} is not in the model's vocabulary (known: {shown})"
    return None


def latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One latent per seed from its own torch.Generator: (B, z_dim) float32, N(0, 1)."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [-1, 1] -> list of RGB uint8 Pillow images."""
    arr = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in arr]


def extend_vocab(base_conditions: list[dict], new_values: dict[str, list[str]]) -> list[dict]:
    """A base model's ``conditions`` with values it never saw appended at the end of each field's
    vocabulary (fine-tuning on a new catalog): base indices keep their meaning. ``new_values`` maps
    a field to the values the new catalog uses (most frequent first); known values are skipped."""
    out = []
    for c in base_conditions:
        known = set(c["values"])
        extra = [v for v in new_values.get(c["field"], []) if v not in known]
        out.append({"field": c["field"], "values": list(c["values"]) + extra})
    return out


def extend_embedding(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """An embedding table (V, D) grown to (rows, D): new rows start as copies of row 0 (the
    unknown value), so a new category first renders as the base model's "unknown" and is then
    learnt. Raises ValueError when ``rows`` < V."""
    if rows < weight.shape[0]:
        raise ValueError(f"cannot shrink an embedding table from {weight.shape[0]} to {rows} rows")
    extra = weight[:1].expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0).clone()


class SingleFileModel:
    """A loaded class-conditional model whose weights are one ``model.safetensors`` next to its
    config.json (the gan and vae families). Subclasses set ``family``, ``label`` (for messages) and
    ``build(cfg) -> nn.Module``, and implement ``generate``. ``model_id`` is
    :func:`~catalog_render.generators.base.hash_files` over config.json and model.safetensors, as
    training computes it."""

    family: str
    label: str

    @staticmethod
    def build(cfg: dict) -> nn.Module:
        raise NotImplementedError

    def __init__(self, cfg: dict, state: dict[str, torch.Tensor], model_id: str, device: str = "cpu", dtype=torch.float32):
        from catalog_render.errors import ModelError

        self.cfg = cfg
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.net = self.build(cfg)
        try:
            missing, unexpected = self.net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ModelError(f"{self.label} weights do not match config.json: {str(exc).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ModelError(f"{self.label} weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.net.eval().to(device=device, dtype=dtype)

    @classmethod
    def from_bytes(cls, cfg: dict, config_bytes: bytes, weights: bytes, device: str = "cpu", dtype=torch.float32,
                   source: str = "model.safetensors"):
        """Build from config.json and model.safetensors contents (ModelError on invalid weights,
        including a NaN or inf value: :func:`~catalog_render.generators.base.check_finite`; ``source``
        names the file in messages)."""
        from safetensors.torch import load as load_safetensors_bytes

        from catalog_render.errors import ModelError
        from catalog_render.generators.base import hash_files

        try:
            state = load_safetensors_bytes(weights)
        except Exception as exc:
            raise ModelError(f"model.safetensors is not a valid safetensors file ({exc})") from None
        from catalog_render.generators.base import check_finite

        check_finite(state, f"{cls.label} weights {source}")
        model_id = hash_files([("config.json", config_bytes), ("model.safetensors", weights)])
        return cls(cfg, state, model_id, device=device, dtype=dtype)

    @classmethod
    def load_dir(cls, model_uri: str, config: dict, config_bytes: bytes, device: str = "cpu", dtype=torch.float32):
        """Registry entry point: the model from its parsed config.json and the directory's
        model.safetensors (safetensors only; ModelError when missing, invalid or not matching)."""
        from catalog_render.generators.weights import read_safetensors

        return cls.from_bytes(config, config_bytes, read_safetensors(model_uri, "model.safetensors"), device=device, dtype=dtype,
                              source=storage.join(model_uri, "model.safetensors"))

    @staticmethod
    def _one_by_one(fn, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``fn`` applied to each row (batches of one), concatenated. CPU GEMM and convolution
        kernels are chosen by batch size and round differently, enough to flip a uint8 pixel (the
        GAN rendered batched: 1 of 199 fashion products differed by one level between batches of
        16 and of 1): one image at a time keeps an image independent of the batch it is rendered
        in (the Generator protocol's promise). These networks are small, so the loss of batching
        costs little (measured in benchmarks/RESULTS.md)."""
        return torch.cat([fn(x[i : i + 1], idx[i : i + 1]) for i in range(x.shape[0])])

    @property
    def config(self) -> dict:
        """config.json as loaded."""
        return self.cfg

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.cfg["width"], self.cfg["height"]

    def params_used(self, params) -> dict:
        """Only the size changes a one-pass family's pixels."""
        w, h = self.native_size
        return {"width": params.width or w, "height": params.height or h}

    def conditioning_problem(self, conditioning: Conditioning) -> str | None:
        """See :func:`conditioning_problem` (checks the model's own vocabulary)."""
        return conditioning_problem(self.cfg["conditions"], conditioning)
