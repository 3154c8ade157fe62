"""The training loop every family shares: data, seeds, budgets, checkpoints, samples, saving.

A family contributes a :class:`Trainer` (its networks, optimizers, one optimisation step, sampling
and its model-directory files); :func:`train` owns everything else, so the three families get the
same guarantees:

* **Deterministic.** Before step ``s`` the global torch RNG is seeded from ``(spec.seed, s)``
  (:func:`step_seed`); batch selection, noise and kornia's augmentation all draw from it. The same
  catalog, spec, thread count and machine give the same weights, and a resumed run continues exactly
  as an uninterrupted one would.
* **Budgets.** ``max_steps`` (a total over resumes), ``max_minutes`` (wall clock of this
  invocation) and ``max_cpu_minutes`` (process CPU time, all threads, of this invocation): the
  first reached stops training, and the model is saved as usual.
* **Checkpoints.** Every ``checkpoint_every`` steps and at the end, ``checkpoint/state.safetensors``
  (every module, EMA copies included, and every optimizer's tensors) then ``checkpoint/meta.json``
  (step, loss curve, optimizer hyper-parameters, the config it belongs to, the sha256 of the state
  file). ``resume=True`` continues from them; a checkpoint of another config is refused.
* **Records.** ``loss_curve.json`` + ``loss_curve.png`` and ``samples/step-NNNNNN.png`` (a grid of
  fixed conditions and seeds) every ``sample_every`` steps; ``samples.png``, ``model_card.json`` and
  finally ``config.json`` at the end (a directory without config.json is not a model, so a crash
  while saving is visible).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from PIL import Image
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from catalog_render import storage
from catalog_render.config import TrainSpec
from catalog_render.errors import ConfigError, ModelError
from catalog_render.generators.base import BaseModel, hash_files
from catalog_render.generators.conditioning import condition_indices, extend_vocab, to_pil
from catalog_render.training.augment import build_augment
from catalog_render.training.data import ImageSet, build_vocab

CHECKPOINT_STATE = "checkpoint/state.safetensors"
CHECKPOINT_META = "checkpoint/meta.json"
CURVE_EVERY = 25  # steps per loss-curve point
#: Exported files under this folder (a GAN's discriminator) serve later fine-tunes only: they are
#: not loaded for rendering and not part of the model's identity.
TRAINING_ONLY = "training/"


class Trainer(Protocol):
    """One family's training logic, driven by :func:`train`.

    Constructed as ``Trainer(spec, conditions, base=None, freeze="none", lora_rank=None)`` where
    ``conditions`` is config.json's ``[{"field", "values"}]`` (for a fine-tune: the base vocabulary
    with the new catalog's values appended, see
    :func:`catalog_render.generators.conditioning.extend_vocab`), ``base`` the model to start from,
    ``freeze`` ``"lower"`` or ``"none"``, ``lora_rank`` the LoRA rank or None. A family that cannot
    do what is asked raises ConfigError naming the option.
    """

    family: str
    #: config.json of the model being trained (family, size, conditions, architecture).
    config: dict
    #: Parameter names (as in :meth:`modules`, ``"<module>.<param>"``) frozen by ``freeze``/LoRA.
    frozen: list[str]

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint must hold (EMA copies, discriminators...)."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, real: torch.Tensor, idx: torch.Tensor, augment: nn.Module, step: int) -> dict[str, float]:
        """One optimisation step. ``real`` float32 (B, 3, H, W) in [-1, 1]; ``idx`` int64 (B, F)
        condition indices (0 = unknown, after condition dropout); ``augment`` the kornia pipeline
        ([-1, 1] in and out). Draws randomness from torch's global RNG only. Returns losses."""
        ...

    def sample(self, idx: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Renders with the inference weights (EMA): float (B, 3, H, W) in [-1, 1], one
        ``torch.Generator`` per seed."""
        ...

    def export(self) -> dict[str, bytes]:
        """The model directory's files (relative name -> bytes), except config.json and
        model_card.json which :func:`train` writes. The identity (model_id) is
        :func:`~catalog_render.generators.base.hash_files` over config.json and these files, except
        those under :data:`TRAINING_ONLY`; the family's loader must compute the same."""
        ...

    def describe(self) -> dict:
        """Architecture and parameter counts for the model card."""
        ...


def make_trainer(family: str, spec: TrainSpec, conditions: list[dict], base: BaseModel | None, freeze: str, lora_rank: int | None) -> Trainer:
    """The family's Trainer (ConfigError for an unknown family)."""
    if family == "gan":
        from catalog_render.training.gan_trainer import GanTrainer as cls
    elif family == "vae":
        from catalog_render.training.vae_trainer import VaeTrainer as cls
    elif family == "diffusion":
        from catalog_render.training.diffusion_trainer import DiffusionTrainer as cls
    else:
        raise ConfigError(f"train.family: unknown family {family!r} (gan, vae, diffusion)")
    return cls(spec, conditions, base=base, freeze=freeze, lora_rank=lora_rank)


@dataclass
class TrainResult:
    steps: int
    wall_seconds: float  # this invocation
    cpu_seconds: float  # this invocation, process CPU time
    loss_curve: list[dict]
    model_id: str
    stopped_by: str  # "max_steps" | "max_minutes" | "max_cpu_minutes"
    frozen: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def step_seed(seed: int, step: int) -> int:
    """The global torch seed before ``step``: sha256 of (seed, step), 63 bits."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "big") >> 1


def grid(images: list[Image.Image], cols: int) -> Image.Image:
    """Images pasted left to right, top to bottom, on white."""
    w, h = images[0].size
    rows = math.ceil(len(images) / cols)
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    return out


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _flatten_state(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in trainer.modules().items():
        for k, v in module.state_dict().items():
            tensors[f"module.{name}.{k}"] = v.detach().clone().contiguous()
    optim_meta = {}
    for name, opt in trainer.optimizers().items():
        sd = opt.state_dict()
        scalars = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{name}.{pid}.{k}"] = v.detach().clone().contiguous()
                else:
                    scalars[f"{pid}.{k}"] = v
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, optim_meta


def _load_state(trainer: Trainer, tensors: dict[str, torch.Tensor], optim_meta: dict) -> None:
    for name, module in trainer.modules().items():
        prefix = f"module.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sd, strict=True)
    for name, opt in trainer.optimizers().items():
        prefix = f"optim.{name}."
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix) :].split(".", 1)
                state.setdefault(int(pid), {})[key] = v
        for k, v in optim_meta[name]["scalars"].items():
            pid, key = k.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": optim_meta[name]["param_groups"]})


def save_checkpoint(out_uri: str, trainer: Trainer, meta: dict) -> None:
    """Write the checkpoint: state first, then meta.json naming the state's sha256."""
    tensors, optim_meta = _flatten_state(trainer)
    blob = save_safetensors_bytes(tensors)
    storage.write_bytes(storage.join(out_uri, CHECKPOINT_STATE), blob)
    meta = {**meta, "optimizers": optim_meta, "state_sha256": hashlib.sha256(blob).hexdigest()}
    storage.write_bytes(storage.join(out_uri, CHECKPOINT_META), json.dumps(meta, indent=1).encode())


#: TrainSpec fields a resumed run may change: budgets and bookkeeping, not what is learnt.
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "max_cpu_minutes", "sample_every", "checkpoint_every", "threads")


def _learning_spec(spec: TrainSpec) -> dict:
    return {k: v for k, v in spec.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}


def has_checkpoint(out_uri: str) -> bool:
    return storage.exists(storage.join(out_uri, CHECKPOINT_META))


def load_checkpoint(out_uri: str, trainer: Trainer) -> dict:
    """Restore ``trainer`` from ``out_uri``'s checkpoint and return its meta. Raises ModelError
    when there is none, it is damaged, or it was written for another config (ConfigError)."""
    try:
        meta = json.loads(storage.read_bytes(storage.join(out_uri, CHECKPOINT_META)))
        blob = storage.read_bytes(storage.join(out_uri, CHECKPOINT_STATE))
    except storage.ObjectNotFound:
        raise ModelError(f"--resume: no checkpoint in {storage.display(out_uri)} (expected {CHECKPOINT_META})") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("state_sha256"):
        raise ModelError(f"--resume: {CHECKPOINT_STATE} in {storage.display(out_uri)} does not match its meta.json (a save was interrupted)")
    if meta.get("config") != trainer.config:
        diff = sorted(k for k in set(meta.get("config", {})) | set(trainer.config) if meta.get("config", {}).get(k) != trainer.config.get(k))
        raise ConfigError(f"--resume: the checkpoint in {storage.display(out_uri)} was trained with another config (differs in: {', '.join(diff)})")
    _load_state(trainer, load_safetensors_bytes(blob), meta["optimizers"])
    return meta


def _curve_png(curve: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in curve[0] if k not in ("step", "seconds")]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for k in keys:
        ax.plot([c["step"] for c in curve], [c[k] for c in curve], label=k, marker="." if len(curve) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean over 25 steps)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def train(
    data: ImageSet,
    spec: TrainSpec,
    out_uri: str,
    catalog_uri: str,
    catalog_sha256: str,
    *,
    base: BaseModel | None = None,
    freeze: str = "none",
    lora_rank: int | None = None,
    resume: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
) -> TrainResult:
    """Train ``spec.family`` on ``data`` (photos uint8 (N, 3, H, W) at spec.height x spec.width
    pixels) and save a model directory at ``out_uri`` (see the module docstring for what is written).

    ``base``: fine-tune from this model (its family wins over ``spec.family``); new conditioning
    values of ``data`` are appended to its vocabulary. ``freeze``: ``"lower"`` freezes the family's
    lower layers (listed in the model card), ``"none"`` trains everything. ``lora_rank``: train LoRA
    adapters (peft) instead. ``progress(step, estimated_total_steps, losses)`` is called every 25
    steps. Raises ConfigError for options the family cannot do, ModelError for a bad checkpoint.
    """
    if spec.threads:
        torch.set_num_threads(spec.threads)
    t0, c0 = time.monotonic(), time.process_time()
    family = base.config["family"] if base else spec.family
    new_vocab = build_vocab(data.conditionings, list(spec.conditions), spec.min_count)
    if base:
        conditions = extend_vocab(base.config["conditions"], {k: v[1:] for k, v in new_vocab.items()})
    else:
        conditions = [{"field": k, "values": v} for k, v in new_vocab.items()]
    torch.manual_seed(spec.seed)  # weight initialisation
    trainer = make_trainer(family, spec, conditions, base, freeze, lora_rank)
    augment = build_augment(spec.augment, [c["field"] for c in conditions], spec.height, spec.width)
    idx_all = condition_indices(trainer.config, data.conditionings)
    real_all = data.images
    n = real_all.shape[0]
    bs = min(spec.batch_size, n)
    n_samples = min(32, n)
    sample_idx = idx_all[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:n_samples]]
    sample_seeds = list(range(n_samples))

    step, curve, prior_wall, prior_cpu = 0, [], 0.0, 0.0
    if resume:
        meta = load_checkpoint(out_uri, trainer)
        theirs, ours = meta.get("train_spec") or {}, _learning_spec(spec)
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if changed:
            raise ConfigError(f"--resume: the job changes {', '.join('train.' + k for k in changed)} since the checkpoint; "
                              f"only {', '.join(RESUMABLE_CHANGES)} may change on resume (train into a new --out instead)")
        step, curve = meta["step"], meta["loss_curve"]
        if step >= spec.max_steps:
            raise ConfigError(f"--resume: the checkpoint is at step {step}, train.max_steps is {spec.max_steps}: nothing to train (raise --max-steps)")
        prior_wall, prior_cpu = meta["wall_seconds"], meta["cpu_seconds"]

    def elapsed() -> tuple[float, float]:
        return time.monotonic() - t0, time.process_time() - c0

    def checkpoint() -> None:
        wall, cpu = elapsed()
        save_checkpoint(out_uri, trainer, {"family": family, "step": step, "config": trainer.config, "loss_curve": curve,
                                           "wall_seconds": prior_wall + wall, "cpu_seconds": prior_cpu + cpu,
                                           "train_spec": _learning_spec(spec)})

    def samples_png() -> bytes:
        with torch.no_grad():
            return png(grid(to_pil(trainer.sample(sample_idx, sample_seeds)), 8))

    stopped_by = "max_steps"
    acc: dict[str, float] = {}
    acc_n = 0
    start_step = step
    while step < spec.max_steps:
        wall, cpu = elapsed()
        if wall >= spec.max_minutes * 60:
            stopped_by = "max_minutes"
            break
        if spec.max_cpu_minutes is not None and cpu >= spec.max_cpu_minutes * 60:
            stopped_by = "max_cpu_minutes"
            break
        torch.manual_seed(step_seed(spec.seed, step))
        sel = torch.randint(0, n, (bs,))
        real = real_all[sel].float() / 127.5 - 1.0
        idx = idx_all[sel]
        if spec.condition_dropout > 0:
            idx = idx.masked_fill(torch.rand(idx.shape) < spec.condition_dropout, 0)
        losses = trainer.train_step(real, idx, augment.pipeline, step)
        step += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        acc_n += 1
        if step % CURVE_EVERY == 0 or step == spec.max_steps:
            wall, cpu = elapsed()
            curve.append({"step": step, "seconds": round(prior_wall + wall, 1), **{k: v / acc_n for k, v in acc.items()}})
            acc, acc_n = {}, 0
            if progress:
                per_step = wall / max(step - start_step, 1)
                left = [spec.max_minutes * 60 - wall] + ([spec.max_cpu_minutes * 60 - cpu] if spec.max_cpu_minutes else [])
                estimate = min(spec.max_steps, step + max(0, int(min(left) / max(per_step, 1e-9))))
                progress(step, estimate, curve[-1])
        if step % spec.sample_every == 0:
            storage.write_bytes(storage.join(out_uri, "samples", f"step-{step:06d}.png"), samples_png())
            if curve:
                storage.write_bytes(storage.join(out_uri, "loss_curve.png"), _curve_png(curve))
        if step % spec.checkpoint_every == 0 and step < spec.max_steps:
            checkpoint()
    wall, cpu = elapsed()
    if step == start_step:
        raise ConfigError(f"the {stopped_by.replace('_', '-')} budget ended before the first training step ({wall:.1f} s wall, {cpu:.1f} s CPU "
                          "went to loading photos and building the model): nothing was saved; raise it")
    if progress:
        progress(step, step, curve[-1] if curve else {})
    checkpoint()
    files = trainer.export()
    for name, blob in files.items():
        storage.write_bytes(storage.join(out_uri, name), blob)
    storage.write_bytes(storage.join(out_uri, "samples.png"), samples_png())
    storage.write_bytes(storage.join(out_uri, "loss_curve.json"), json.dumps(curve, indent=1).encode())
    if curve:
        storage.write_bytes(storage.join(out_uri, "loss_curve.png"), _curve_png(curve))
    config_bytes = json.dumps(trainer.config, indent=2, ensure_ascii=False).encode()
    model_id = hash_files([("config.json", config_bytes), *((k, v) for k, v in files.items() if not k.startswith(TRAINING_ONLY))])
    counts = {c["field"]: len(c["values"]) - 1 for c in conditions}
    card = {
        "family": family,
        "model_id": model_id,
        **trainer.describe(),
        "training_catalog": {"uri": catalog_uri, "sha256": catalog_sha256, "images": n, "skipped": len(data.skipped)},
        "resolution": {"height": spec.height, "width": spec.width},
        "conditions": counts,
        "steps": step,
        "batch_size": bs,
        "stopped_by": stopped_by,
        "wall_seconds": round(prior_wall + wall, 1),
        "cpu_seconds": round(prior_cpu + cpu, 1),
        "seconds_per_step": round(wall / max(step - start_step, 1), 3),
        "resumed_from_step": start_step if resume else None,
        "augmentation": {"steps": augment.steps, "notes": augment.notes},
        "fine_tune": None
        if base is None
        else {
            "base": {"uri": base.uri, "model_id": base.model_id},
            "freeze": freeze,
            "lora_rank": lora_rank,
            "frozen_parameters": trainer.frozen,
            "new_values": {c["field"]: c["values"][len(b["values"]) :] for c, b in zip(conditions, base.config["conditions"])},
        },
        "train_spec": spec.model_dump(mode="json"),
        "loss_curve": curve,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    storage.write_bytes(storage.join(out_uri, "model_card.json"), json.dumps(card, indent=2, ensure_ascii=False).encode())
    storage.write_bytes(storage.join(out_uri, "config.json"), config_bytes)
    return TrainResult(step, wall, cpu, curve, model_id, stopped_by, list(trainer.frozen), list(augment.notes))
