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
* **Records.** ``loss_curve.json`` + ``loss_curve.png``: one point (the mean of each loss since the
  previous point) after the first step, every :data:`CURVE_EVERY` steps and at the end of every
  invocation, so even a training of a few steps has a curve. ``samples/step-NNNNNN.png`` (a grid of
  fixed conditions and seeds) every ``sample_every`` steps and at the end of every training;
  ``samples.png``, ``model_card.json`` and finally ``config.json`` at the end (a directory without
  config.json is not a model, so a crash while saving is visible).
* **Divergence.** After every step :class:`DivergenceGuard` checks the losses and every weight; a
  diverged training stops with :class:`~catalog_render.errors.TrainingDiverged` before anything is
  saved as a model (no config.json is written), keeping the last checkpoint written before it.
* **Short trainings.** A training that a time budget stops far below the steps its schedule
  expects (see :func:`short_training_warning`) is saved with a warning, in the result and in the
  model card.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from PIL import Image
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from catalog_render import storage
from catalog_render.config import TrainSpec
from catalog_render.errors import ConfigError, ModelError, TrainingDiverged
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
    warnings: list[str] = field(default_factory=list)  # also in model_card.json ("warnings")


#: A loss "explodes" when its magnitude exceeds this multiple of its recent level (three orders of magnitude).
EXPLOSION_FACTOR = 1000.0
#: Steps whose losses make a loss's "recent level" (the median of their magnitudes).
EXPLOSION_WINDOW = 100
#: The recent level is never taken below this many loss units.
EXPLOSION_FLOOR = 1.0


class DivergenceGuard:
    """Decides, after every training step, whether the training has diverged.

    The rule, checked in this order after step ``s`` (:meth:`check`):

    1. a loss the step returned is NaN or +-inf;
    2. a floating-point parameter or buffer of any module the checkpoint holds (``Trainer.modules``:
       EMA copies and discriminators included) holds a NaN or +-inf value;
    3. from the second step of the invocation on, a loss ``k`` explodes:
       ``|loss_k(s)| > EXPLOSION_FACTOR * max(median(|loss_k|) over the previous <= EXPLOSION_WINDOW
       steps, EXPLOSION_FLOOR)``.

    Why this rule: a non-finite loss or weight never recovers (every later update is NaN), and the
    saved model renders black or nothing at all. Divergence can also stay finite: a GAN at
    ``lr = 1000`` on the fashion photos had weights of 3e4 after 30 steps (1e25 later) and rendered
    flat white, while its discriminator's hinge loss went from 2.0 at step 1 to 2.2e4 at step 2
    and stayed in the thousands. Healthy training moves a loss by far less than a factor of 1000:
    every family's losses start near their level at initialisation (hinge GAN about 2, diffusion
    MSE about 1, the VAE's summed squared error about 10^3) and fall or fluctuate within one order
    of magnitude. The median makes the recent level robust to a single spike; the window of 100
    steps lets the level follow a loss that falls slowly (the diffusion family's single ``loss``
    also changes meaning when its autoencoder phase ends, by about a factor of 10). The floor keeps
    a loss that legitimately sits at or near zero from turning any later value into an explosion:
    a discriminator's hinge loss is exactly 0 whenever it separates the batch (seen within 5 steps
    of a healthy 32x32 GAN), so ``|loss|`` must exceed 1000 loss units before it is judged against
    a recent level below 1.

    Cost: one ``torch.isfinite`` pass over every tensor per step (a few milliseconds for the
    reference GAN's 4 M values, against 0.3-0.7 s per step).
    """

    def __init__(self) -> None:
        self.recent: dict[str, deque] = {}

    def check(self, losses: dict[str, float], modules: dict[str, nn.Module]) -> str | None:
        """The symptom (one line: which loss or tensor, its value) when the step diverged, else None.
        Records the step's losses as the newest of the recent level."""
        for k, v in losses.items():
            if not math.isfinite(float(v)):
                return f"{k} = {float(v)} (not finite)"
        for mname, module in modules.items():
            for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
                for pname, t in named:
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        bad = int((~torch.isfinite(t)).sum())
                        return f"{kind} {mname}.{pname} holds {bad:,} non-finite value(s) (NaN/inf) of {t.numel():,}"
        problem = None
        for k, v in losses.items():
            past = self.recent.setdefault(k, deque(maxlen=EXPLOSION_WINDOW))
            if past and problem is None:
                level = max(statistics.median(past), EXPLOSION_FLOOR)
                if abs(float(v)) > EXPLOSION_FACTOR * level:
                    problem = (f"{k} = {float(v):.4g} exploded: more than {EXPLOSION_FACTOR:g} x its recent level "
                               f"{level:.4g} (median |{k}| of the previous {len(past)} step(s), at least {EXPLOSION_FLOOR:g})")
            past.append(abs(float(v)))
        return problem


def short_training_warning(spec: TrainSpec, steps: int, stopped_by: str) -> str | None:
    """A warning when a time budget ended training far below the steps its schedule expects, else None.

    The schedule expects ``max_steps`` steps, and its ``ema_decay`` makes the saved (EMA) weights an
    average over roughly the last ``H = 1 / (1 - ema_decay)`` steps (1,000 at the default 0.999: the
    decay's e-folding horizon). "Far below" is fewer than ``min(max_steps, H)`` steps when
    ``max_minutes`` or ``max_cpu_minutes`` stopped it: the model has not trained for one averaging
    horizon. Measured on the fashion photos: 12 GAN steps (``--max-minutes 2`` on a busy 2-core
    machine) saved grey squares, while the demo's 10 minutes (about 1,600-2,000 steps) give rough
    but recognisable renders. A training that reached ``max_steps`` did what its schedule asked and
    gets no warning."""
    horizon = round(1 / (1 - spec.ema_decay))
    expected = min(spec.max_steps, horizon)
    if stopped_by == "max_steps" or steps >= expected:
        return None
    budget = {"max_minutes": f"--max-minutes {spec.max_minutes:g}", "max_cpu_minutes": f"--max-cpu-minutes {spec.max_cpu_minutes or 0:g}"}[stopped_by]
    return (f"training stopped by {budget} after {steps:,} steps, far below what its schedule expects (max_steps {spec.max_steps:,}; "
            f"ema_decay {spec.ema_decay:g} averages the saved weights over about {horizon:,} steps): the renders are likely noise or "
            f"flat colour; give it more time (or --resume with a larger budget)")


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
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "max_cpu_minutes", "sample_every", "checkpoint_every", "threads", "sr")


def class_balance_weights(idx: torch.Tensor, fields: list[str], balance: float) -> torch.Tensor | None:
    """Sampling weights (N,) float64 of the training photos for ``train.class_balance``: photo i of
    a category with n photos weighs n ** -balance (``idx`` (N, F) int64 condition indices, the
    category column being ``fields``' ``category``, else the first). None when ``balance`` is 0
    (uniform draws, ``torch.randint``, as without the option)."""
    if not balance:
        return None
    col = idx[:, fields.index("category") if "category" in fields else 0]
    counts = torch.bincount(col).to(torch.float64)
    return counts[col] ** -balance


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
    ax.set_ylabel("loss (mean since the previous point)")
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
    adapters (peft) instead. ``progress(step, estimated_total_steps, losses)`` is called after
    every step (that step's losses) and at the end. Raises ConfigError for options the family cannot do, ModelError for a bad checkpoint.
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
    draw_weights = class_balance_weights(idx_all, [c["field"] for c in conditions], spec.class_balance)
    bs = min(spec.batch_size, n)
    n_samples = min(32, n)
    sample_idx = idx_all[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:n_samples]]
    sample_seeds = list(range(n_samples))

    step, curve, prior_wall, prior_cpu = 0, [], 0.0, 0.0
    if resume:
        meta = load_checkpoint(out_uri, trainer)
        theirs, ours = meta.get("train_spec") or {}, _learning_spec(spec)
        # a section added to TrainSpec after the checkpoint was written counts as its default
        defaults = _learning_spec(TrainSpec())
        theirs = {**{k: defaults[k] for k in set(ours) - set(theirs) if k in defaults}, **theirs}
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if changed:
            raise ConfigError(f"--resume: the job changes {', '.join('train.' + k for k in changed)} since the checkpoint; "
                              f"only {', '.join(RESUMABLE_CHANGES)} may change on resume (train into a new --out instead)")
        step, curve = meta["step"], meta["loss_curve"]
        if step > spec.max_steps:
            raise ConfigError(f"--resume: the checkpoint is at step {step}, past train.max_steps {spec.max_steps} (raise --max-steps, or train into a new --out)")
        # step == max_steps: no step to take; the model, samples and card are written from the checkpoint
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
    guard = DivergenceGuard()
    last_checkpoint = step if resume else None  # the step of the last checkpoint written (a good one)

    def add_curve_point() -> None:
        nonlocal acc, acc_n
        wall, _ = elapsed()
        curve.append({"step": step, "seconds": round(prior_wall + wall, 1), **{k: v / acc_n for k, v in acc.items()}})
        acc, acc_n = {}, 0

    while step < spec.max_steps:
        wall, cpu = elapsed()
        if wall >= spec.max_minutes * 60:
            stopped_by = "max_minutes"
            break
        if spec.max_cpu_minutes is not None and cpu >= spec.max_cpu_minutes * 60:
            stopped_by = "max_cpu_minutes"
            break
        torch.manual_seed(step_seed(spec.seed, step))
        sel = torch.randint(0, n, (bs,)) if draw_weights is None else torch.multinomial(draw_weights, bs, replacement=True)
        real = real_all[sel].float() / 127.5 - 1.0
        idx = idx_all[sel]
        if spec.condition_dropout > 0:
            idx = idx.masked_fill(torch.rand(idx.shape) < spec.condition_dropout, 0)
        losses = trainer.train_step(real, idx, augment.pipeline, step)
        step += 1
        problem = guard.check(losses, trainer.modules())
        if problem:
            kept = (f"the last good checkpoint (step {last_checkpoint}) is kept in {storage.display(storage.join(out_uri, 'checkpoint'))}"
                    if last_checkpoint is not None else f"no checkpoint had been written yet (train.checkpoint_every = {spec.checkpoint_every})")
            raise TrainingDiverged(f"training diverged at step {step}: {problem}. Nothing was saved as a model; {kept}. "
                                   f"Lower train.lr (now {spec.lr:g}) and train into a new --out")
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        acc_n += 1
        if step % CURVE_EVERY == 0 or step == 1 or step == spec.max_steps:
            add_curve_point()
        if progress:  # every step: a caller printing to a log throttles by time (cli._LogLines)
            wall, cpu = elapsed()
            per_step = wall / max(step - start_step, 1)
            left = [spec.max_minutes * 60 - wall] + ([spec.max_cpu_minutes * 60 - cpu] if spec.max_cpu_minutes else [])
            estimate = min(spec.max_steps, step + max(0, int(min(left) / max(per_step, 1e-9))))
            progress(step, estimate, {k: float(v) for k, v in losses.items()})
        if step % spec.sample_every == 0:
            storage.write_bytes(storage.join(out_uri, "samples", f"step-{step:06d}.png"), samples_png())
            if curve:
                storage.write_bytes(storage.join(out_uri, "loss_curve.png"), _curve_png(curve))
        if step % spec.checkpoint_every == 0 and step < spec.max_steps:
            checkpoint()
            last_checkpoint = step
    wall, cpu = elapsed()
    if step == start_step and not resume:
        raise ConfigError(f"the {stopped_by.replace('_', '-')} budget ended before the first training step ({wall:.1f} s wall, {cpu:.1f} s CPU "
                          "went to loading photos and building the model): nothing was saved; raise it")
    if acc_n:  # the steps since the last point (a budget stopped training between two points)
        add_curve_point()
    if progress:  # a resume that took no step shows no losses (the checkpoint's last curve point is old)
        progress(step, step, curve[-1] if curve and step > start_step else {})
    checkpoint()
    files = trainer.export()
    for name, blob in files.items():
        storage.write_bytes(storage.join(out_uri, name), blob)
    final_samples = samples_png()
    if step % spec.sample_every:  # the last grid of samples/ is always the saved model's
        storage.write_bytes(storage.join(out_uri, "samples", f"step-{step:06d}.png"), final_samples)
    storage.write_bytes(storage.join(out_uri, "samples.png"), final_samples)
    storage.write_bytes(storage.join(out_uri, "loss_curve.json"), json.dumps(curve, indent=1).encode())
    if curve:
        storage.write_bytes(storage.join(out_uri, "loss_curve.png"), _curve_png(curve))
    config_bytes = json.dumps(trainer.config, indent=2, ensure_ascii=False).encode()
    model_id = hash_files([("config.json", config_bytes), *((k, v) for k, v in files.items() if not k.startswith(TRAINING_ONLY))])
    counts = {c["field"]: len(c["values"]) - 1 for c in conditions}
    warnings = [w for w in [short_training_warning(spec, step, stopped_by)] if w]
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
        "warnings": warnings,
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
    return TrainResult(step, wall, cpu, curve, model_id, stopped_by, list(trainer.frozen), list(augment.notes), warnings)
