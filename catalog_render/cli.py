"""The ``catalog-render`` command line: options, help text, and domain errors -> exit codes.

Every domain error (catalog_render.errors) becomes one line on stderr and its exit code; a
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from catalog_render.errors import CatalogRenderError

app = typer.Typer(
    name="catalog-render",
    help="Render product images for e-commerce catalogs on Ray: ingest, train, run, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def domain_errors(fn):
    """Turn CatalogRenderError into 'error: …' and its exit code (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CatalogRenderError as exc:
            if _state["debug"]:
                raise
            # the message is plain text: "[photos] mask_model" must not be read as a markup tag
            console.print(f"[red]error:[/red] {rich_escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted: nothing half-written is kept; `run` resumes from its manifest when run again, "
                          "`train`/`finetune` from their last checkpoint with --resume")
            raise typer.Exit(130) from None

    return wrapper


#: Seconds between plain-text progress lines when stderr is not a terminal (a log file, cron, CI).
LOG_PROGRESS_EVERY_S = 30.0


class _LogLines:
    """Progress as plain lines on a non-terminal stderr: the first call, then at most one line per
    :data:`LOG_PROGRESS_EVERY_S` seconds (wall), and the last call when ``done == total``."""

    def __init__(self, what: str) -> None:
        self.what, self.t0, self.last, self.shown = what, time.monotonic(), None, None

    def __call__(self, done: int, total: int, tail: str = "") -> None:
        now = time.monotonic()
        due = self.last is None or now - self.last >= LOG_PROGRESS_EVERY_S or done >= total
        if due and (done, total) != self.shown:
            self.last, self.shown = now, (done, total)
            console.print(f"{self.what} {done}/{total}{' ' + tail if tail else ''} ({now - self.t0:.0f} s)", markup=False, highlight=False)


class _RenderBar:
    """A progress bar with ETA, shown only once rendering starts (not for runs that fail early);
    plain lines (:class:`_LogLines`) when stderr is not a terminal."""

    def __init__(self) -> None:
        self.progress = None
        self.lines = None if console.is_terminal else _LogLines("render")

    def __call__(self, done: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if self.lines is not None:
            if total:  # the first call may come before the total is known
                self.lines(done, total, "images")
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("render"), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=console)
            self.progress.start()
            self.task = self.progress.add_task("render", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


JobOpt = Annotated[Optional[Path], typer.Option("--job", help="Job spec (TOML), e.g. jobs/fashion.toml. Defaults apply when omitted.")]


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


@app.command()
@domain_errors
def ingest(
    csv: Annotated[str, typer.Option("--csv", help="CSV file (local path or s3:// URI).")],
    out: Annotated[str, typer.Option("--out", help="Catalog Parquet to write (local path or s3:// URI).")],
    map: Annotated[str, typer.Option("--map", help="field=column pairs, e.g. product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,image_uri=image_file")],
    images: Annotated[Optional[str], typer.Option("--images", help="Folder or s3:// prefix holding the photos.")] = None,
    na: Annotated[str, typer.Option("--na", help="Comma-separated cell values read as missing (an empty cell always is).")] = "NA,N/A,null,NULL,None",
) -> None:
    """Turn a CSV plus a photo folder into a catalog Parquet (see schemas/catalog.schema.json)."""
    from catalog_render import catalog, storage

    mapping = catalog.parse_mapping(map)
    result = catalog.ingest(csv, images, mapping, na_values=tuple([""] + [v.strip() for v in na.split(",")]))
    storage.write_parquet(result.table, out)
    console.print(
        f"wrote {result.table.num_rows} products to {storage.display(out)} "
        f"({result.table.num_rows - result.missing_images} with a photo, {result.missing_images} without; "
        f"{_rows(len(result.repaired_lines))} with unquoted commas repaired; {_rows(len(result.rejected))} rejected)"
    )
    for line, reason in result.rejected[:20]:
        console.print(f"  rejected line {line}: {reason}", highlight=False)
    shown = 10
    for line, pid, why in result.without_photo[:shown]:
        console.print(f"  no photo: line {line}, product_id {pid}: {why}", markup=False, highlight=False)
    if len(result.without_photo) > shown:
        console.print(f"  … and {len(result.without_photo) - shown} more without a photo (a backfill renders them)", highlight=False)


@app.command()
@domain_errors
def validate(
    uri: Annotated[str, typer.Argument(help="Catalog Parquet (local path or s3:// URI).")],
    check_images: Annotated[bool, typer.Option("--check-images", help="Also read every photo as a backfill would (missing, empty, not an image, truncated, over the caps) and list each problem.")] = False,
) -> None:
    """Report every schema problem of a catalog, with its row (and with --check-images every unusable photo). Exit code 4 when there is any."""
    from catalog_render import catalog
    from catalog_render.errors import CatalogError

    table = catalog.read_table(uri)
    problems = [str(p) for p in catalog.validate(table)]
    checked = "; no image_uri column: no photos to check" if check_images and "image_uri" not in table.column_names else ""
    if check_images and "image_uri" in table.column_names:
        from catalog_render.photos import check_photos

        bad, without = check_photos(table)
        checked = f"; photos checked: {table.num_rows - without - len(bad)} usable, {len(bad)} unusable, {without} without image_uri"
        # a refused image_uri (a '..' path) is a schema problem catalog.validate has listed already
        problems += [f"row {i}" + (f" (product_id={pid!r})" if pid is not None else "") + f": image_uri: {why}"
                     for i, pid, why in bad if not why.startswith("image_uri refused")]
    for p in problems:
        typer.echo(p)
    if problems:
        raise CatalogError(f"{len(problems)} problem(s) in {uri} ({table.num_rows} rows{checked})")
    typer.echo(f"ok: {table.num_rows} rows, no problems{checked}")


def _open_unit_interval(value: float) -> float:
    """A usage error (exit 2, as click's own range checks) for a value outside (0, 1)."""
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not in the open interval (0, 1)")
    return value


@app.command()
@domain_errors
def split(
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog to split.")],
    train_out: Annotated[str, typer.Option("--train-out", help="Where to write the training part.")],
    holdout_out: Annotated[str, typer.Option("--holdout-out", help="Where to write the held-out part.")],
    fraction: Annotated[float, typer.Option("--fraction", callback=_open_unit_interval, help="Share of products held out, in (0, 1).")] = 0.12,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the hash split.")] = 0,
) -> None:
    """Split a catalog into train and held-out products, deterministically by product_id hash."""
    from catalog_render import catalog, storage

    table = catalog.read_catalog(catalog_uri)
    train, holdout = catalog.split_holdout(table, fraction, seed)
    storage.write_parquet(train, train_out)
    storage.write_parquet(holdout, holdout_out)
    console.print(f"train: {train.num_rows} products -> {storage.display(train_out)}; holdout: {holdout.num_rows} -> {storage.display(holdout_out)}")


def _train(catalog_uri: str, out: str, spec, base_uri: str | None, freeze: str, lora_rank: int | None, resume: bool) -> None:
    """train and finetune: load photos, run the shared loop with a progress bar, print the result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from catalog_render import catalog, storage
    from catalog_render.training.data import load_image_set
    from catalog_render.training.gan_trainer import sha256_of
    from catalog_render.training.loop import train as train_loop

    from catalog_render.errors import ConfigError
    from catalog_render.training.loop import CHECKPOINT_META, has_checkpoint

    # everything that can be refused is refused before the photos are loaded
    if resume and not has_checkpoint(out):
        raise ConfigError(f"--resume: no checkpoint in {storage.display(out)} (expected {CHECKPOINT_META})")
    if not resume and (has_checkpoint(out) or storage.exists(storage.join(out, "config.json"))):
        raise ConfigError(f"--out {storage.display(out)} already holds a model or a checkpoint: add --resume to continue it, or train into a new directory")
    if lora_rank is not None and freeze == "lower":
        raise ConfigError("--lora and --freeze lower: LoRA already freezes the whole UNet; give one of them")
    base = None
    if base_uri is not None:
        from catalog_render.generators import registry

        base = registry.base_model(base_uri)
        spec = spec.with_overrides(**{"train.family": base.config["family"], "train.height": base.config["height"], "train.width": base.config["width"]})
    family = spec.train.family
    if family != "gan" and spec.train.gan != type(spec.train.gan)():
        console.print(f"note: [train.gan] applies to the gan family only; this {family} training ignores it", markup=False, highlight=False)
    if lora_rank is not None and family != "diffusion":
        raise ConfigError(f"--lora: LoRA adapters are for the diffusion family's UNet; fine-tune a {family} with --freeze lower|none")
    multiple = 2**spec.train.gan.num_upsamples
    if family == "gan" and not base and (spec.train.height % multiple or spec.train.width % multiple):
        raise ConfigError(f"train.gan.num_upsamples: {spec.train.gan.num_upsamples} up-sampling blocks need height and width multiples of "
                          f"{multiple} pixels, got {spec.train.height}x{spec.train.width}")
    if family in ("gan", "vae") and (spec.train.height % 16 or spec.train.width % 16):
        raise ConfigError(f"train.height/width: the {family} family needs multiples of 16 pixels, got {spec.train.height}x{spec.train.width}")
    table = catalog.read_catalog(catalog_uri)
    data = load_image_set(table, spec.train.width, spec.train.height)
    what = f"fine-tuning {family} model {base.model_id}" if base else f"training {family}"
    console.print(f"{what} on {data.images.shape[0]} photos ({len(data.skipped)} rows skipped) at {spec.train.height}x{spec.train.width} px (height x width)")
    with Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps {task.fields[losses]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("train", total=spec.train.max_steps, losses="")

        lines = None if console.is_terminal else _LogLines("train step")

        def progress(step: int, total: int, losses: dict) -> None:
            shown = " ".join(f"{k}={v:.3f}" for k, v in losses.items() if k not in ("step", "seconds"))
            if lines is not None:
                lines(step, total, shown)
            else:
                bar.update(task, completed=step, total=total, losses=shown)

        result = train_loop(data, spec.train, out, storage.absolute(catalog_uri), sha256_of(catalog_uri), base=base, freeze=freeze, lora_rank=lora_rank, resume=resume, progress=progress)
    for note in result.notes:
        console.print(f"note: {note}")
    if result.frozen:
        console.print(f"frozen: {len(result.frozen)} parameter tensors (listed in model_card.json)")
    console.print(
        f"saved model {result.model_id} to {storage.display(out)}: {result.steps} steps, this run {result.wall_seconds:.0f} s wall / "
        f"{result.cpu_seconds:.0f} s CPU (stopped by {result.stopped_by})"
    )
    for warning in result.warnings:  # also in model_card.json
        console.print(f"[red]warning:[/red] {rich_escape(warning)}", highlight=False)
    if base:
        from catalog_render.training.sr_trainer import copy_stage

        if copy_stage(base.uri, out):
            from catalog_render.generators import registry

            console.print(f"kept the base's super-resolution stage (sr/): the cascade is model {registry.describe(out).model_id}; "
                          "`catalog-render train-sr` retrains the stage")
    _write_judge(out, catalog_uri, data)


def _write_judge(model_uri: str, catalog_uri: str, data=None) -> None:
    """The model's category judge (MODEL/judge/) from its training photos; a catalog that cannot
    have one (fewer than 2 categories with enough photos) or a missing pretrained package is a note.
    A judge already there for this very model (same model_id: e.g. ``--resume`` that trained no
    step) and catalog URI is kept instead of trained again (about a CPU-minute on 2,500 photos)."""
    from catalog_render.errors import CatalogError, DependencyMissing, ModelError
    from catalog_render.generators import registry
    from catalog_render.quality import category_judge
    from catalog_render import storage
    from catalog_render.training.judge import add_judge, judge_uri, summary

    try:
        cfg = category_judge.read_config(judge_uri(model_uri))
        if cfg.get("model_id") == registry.describe(model_uri).model_id and cfg.get("catalog_uri") == storage.display(catalog_uri):
            console.print(f"kept the category judge {cfg['judge_id']}: it was trained for this model and catalog", highlight=False)
            return
    except ModelError:
        pass  # none there, or not a usable one: train it
    try:
        judge = add_judge(model_uri, catalog_uri, data=data)
    except (CatalogError, DependencyMissing) as exc:
        console.print(f"note: no category judge saved ({rich_escape(str(exc))}): `run` skips the recognisability check for this model", highlight=False)
        return
    console.print(summary(judge), highlight=False)


MaxMinutesOpt = Annotated[Optional[float], typer.Option("--max-minutes", help="Wall-clock budget of this invocation; training stops and saves a usable model.")]
MaxCpuOpt = Annotated[Optional[float], typer.Option("--max-cpu-minutes", help="CPU-time budget (all threads) of this invocation: the fair budget when comparing families.")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Total step budget, resumed steps included (whichever budget comes first).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in --out (same config), bit-for-bit as if never stopped.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Training seed (weights init, batches, noise, augmentation).")]


@app.command()
@domain_errors
def train(
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog whose photos to train on.")],
    out: Annotated[str, typer.Option("--out", help="Model directory to write (local path or s3:// URI).")],
    job: JobOpt = None,
    family: Annotated[Optional[str], typer.Option("--family", help="gan, vae or diffusion (overrides train.family).")] = None,
    max_minutes: MaxMinutesOpt = None,
    max_cpu_minutes: MaxCpuOpt = None,
    max_steps: MaxStepsOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Train a conditional generator (GAN, VAE or diffusion) on the catalog's own photos and save a model directory."""
    from catalog_render.config import load_job

    spec = load_job(job).with_overrides(**{"train.family": family, "train.max_minutes": max_minutes, "train.max_cpu_minutes": max_cpu_minutes,
                                           "train.max_steps": max_steps, "train.seed": seed})
    _train(catalog_uri, out, spec, None, "none", None, resume)


@app.command()
@domain_errors
def finetune(
    base: Annotated[str, typer.Option("--base", help="Model directory to start from (local or s3://).")],
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog whose photos to fine-tune on; new categories/colours are added.")],
    out: Annotated[str, typer.Option("--out", help="Model directory to write (local path or s3:// URI).")],
    job: JobOpt = None,
    freeze: Annotated[str, typer.Option("--freeze", help="lower: freeze the lower layers (listed in the model card); none: train all.")] = "none",
    lora: Annotated[Optional[int], typer.Option("--lora", min=1, max=256, help="Train LoRA adapters of this rank (diffusion UNet, via peft); saves only the adapter and a pointer to --base.")] = None,
    max_minutes: MaxMinutesOpt = None,
    max_cpu_minutes: MaxCpuOpt = None,
    max_steps: MaxStepsOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Fine-tune an existing model on a (new) catalog: frozen lower layers or LoRA, same loop as train."""
    from catalog_render.config import load_job
    from catalog_render.errors import ConfigError

    if freeze not in ("lower", "none"):
        raise ConfigError(f"--freeze: expected lower or none, got {freeze!r}")
    spec = load_job(job).with_overrides(**{"train.max_minutes": max_minutes, "train.max_cpu_minutes": max_cpu_minutes,
                                           "train.max_steps": max_steps, "train.seed": seed})
    _train(catalog_uri, out, spec, base, freeze, lora, resume)


@app.command("train-sr")
@domain_errors
def train_sr(
    model: Annotated[str, typer.Option("--model", help="Model directory to add the super-resolution stage to (MODEL/sr/; local or s3://).")],
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog whose photos the stage learns from (the base's training catalog).")],
    job: JobOpt = None,
    max_cpu_minutes: MaxCpuOpt = None,
) -> None:
    """Train a learned super-resolution stage (base size x train.sr.scale) on the catalog's photos: `run` then renders through base and stage."""
    from catalog_render.config import load_job
    from catalog_render.training.sr_trainer import train_from_catalog

    spec = load_job(job).train.sr
    result, n = train_from_catalog(model, catalog_uri, spec, max_cpu_minutes=max_cpu_minutes)
    from catalog_render.generators import registry

    console.print(f"saved super-resolution stage {result.stage_id} (x{spec.scale}) to {model.rstrip('/')}/sr: "
                  f"{result.steps} steps on {n} photos, {result.cpu_seconds:.0f} s CPU (stopped by {result.stopped_by}); "
                  f"the cascade is model {registry.describe(model).model_id}")


@app.command("train-matting")
@domain_errors
def train_matting(
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog of studio cut-outs on white (e.g. the IKEA catalog) to learn masks from.")],
    out: Annotated[str, typer.Option("--out", help="Model directory to write (local path); use it as \\[photos] mask_model.")],
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Training steps (the learning rate decays over them).")] = 900,
    max_cpu_minutes: MaxCpuOpt = None,
    side: Annotated[int, typer.Option("--side", min=64, max=512, help="Training and inference side, pixels (a multiple of 16).")] = 192,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of batches, augmentation and backgrounds.")] = 0,
) -> None:
    """Train a product-mask model on a catalog's cut-outs composited over varied backgrounds (an alternative to U²-Net-p for the photo kinds)."""
    from catalog_render.training.matting_trainer import MattingSpec, train_from_catalog

    if side % 16:
        raise typer.BadParameter(f"--side must be a multiple of 16 (got {side})", param_hint="--side")
    lines = _LogLines("matting step")

    def progress(step: int, loss: float, cpu_s: float) -> None:
        lines(step, max_steps, f"loss {loss:.3f}, {cpu_s / 60:.1f} CPU-min")

    result = train_from_catalog(catalog_uri, out, MattingSpec(side=side, max_steps=max_steps, max_cpu_minutes=max_cpu_minutes, seed=seed),
                                progress, say=lambda line: console.print(line, markup=False, highlight=False))
    for w in result["warnings"]:
        console.print(f"[red]warning:[/red] {rich_escape(w)}", highlight=False)
    ious = ", ".join(f"{k} {v:.3f}" for k, v in result["holdout_iou"].items()) or "no product held out"
    console.print(f"saved matting model to {out}: {result['steps']} steps on {result['cutouts']} cut-outs ({result['skipped']} photos left out), "
                  f"{result['cpu_minutes']} CPU-min; held-out IoU by background: {ious}", highlight=False)


@app.command("colour-table")
@domain_errors
def colour_table(
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog whose photographed products are measured (Parquet, local or s3://).")],
    out: Annotated[str, typer.Option("--out", help="Parquet file to write (local or s3://); use it as \\[photos] colour_table.")],
    job: JobOpt = None,
    per_colour: Annotated[int, typer.Option("--per-colour", min=3, help="At most this many products measured per colour name (chosen by a hash of product_id).")] = 30,
) -> None:
    """Measure what each colour name looks like in the catalog's own photos, for `--kind variant` targets (\\[photos] colour_table)."""
    import os

    from catalog_render import catalog as catalog_mod
    from catalog_render import storage
    from catalog_render.config import load_job
    from catalog_render.errors import CatalogError
    from catalog_render.kinds import catalog_colours, photo

    spec = load_job(job)
    masker = photo.load_masker(spec.photos.mask_model, threads=max(1, os.cpu_count() or 1))
    table = catalog_mod.read_catalog(catalog_uri)
    lines = _LogLines("measured")
    result, skipped = catalog_colours.build(table, masker, spec.photos.mask_threshold, per_colour=per_colour,
                                            progress=lambda done, total: lines(done, total, "photos"))
    if result.num_rows == 0:
        raise CatalogError(f"no product of {catalog_uri} could be measured: none has a photo and a colour name the variant method knows")
    storage.write_parquet(result, out)
    names = sorted(set(result.column("colour_key").to_pylist()))
    console.print(f"wrote {result.num_rows} measurement{'s' if result.num_rows != 1 else ''} of {len(names)} colour name{'s' if len(names) != 1 else ''} to {out} ({len(skipped)} photos left out); "
                  f"identity {catalog_colours.ColourTable(result).identity}", highlight=False)
    counts = {k: 0 for k in catalog_colours.known_names(table)}  # names of the catalog without a measurement count too
    for k in result.column("colour_key").to_pylist():
        counts[k] = counts.get(k, 0) + 1
    thin = [f"{k} ({n})" for k, n in sorted(counts.items()) if n < catalog_colours.MIN_SAMPLES]
    if thin:
        console.print(f"colour names with fewer than {catalog_colours.MIN_SAMPLES} measurements (their variants aim at the name's reference "
                      f"colour instead): {', '.join(thin)}", markup=False, highlight=False)
    for pid, why in skipped[:10]:
        console.print(f"  left out {pid}: {rich_escape(why)}", highlight=False)


@app.command()
@domain_errors
def judge(
    model: Annotated[str, typer.Option("--model", help="Model directory to add a category judge to (MODEL/judge/; local or s3://).")],
    catalog_uri: Annotated[str, typer.Option("--catalog", help="The catalog the model was trained on: the judge learns its categories from these photos.")],
    min_photos: Annotated[int, typer.Option("--min-photos", min=2, help="A category needs this many photos to be one of the judge's classes (20 % of them calibrate it).")] = 10,
) -> None:
    """Train the category judge `run` uses to score recognisability (a linear probe on pretrained AlexNet features) and save it in MODEL/judge/."""
    from catalog_render.training.judge import add_judge, summary

    console.print(summary(add_judge(model, catalog_uri, min_photos=min_photos)), highlight=False)


@app.command()
@domain_errors
def run(
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog Parquet (local path or s3:// URI).")],
    output: Annotated[str, typer.Option("--output", help="Output root: images/, manifest/, runs/, report.html (local or s3://).")],
    model: Annotated[Optional[str], typer.Option("--model", help="Model directory: catalog-render model or diffusers pipeline (local or s3://). Needed by --kind render and design; optional for comparison (renders members without a photo).")] = None,
    job: JobOpt = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="What to make: render (a generator's image, the default), main-image (a compliant main image from the product's own photo), variant (a missing colour variant from a sibling's photo), comparison (products side by side with attribute rows), label (photo + panel of key facts; never a main image), design (variations of a product by a generator, job's \\[design] table). Overrides the job's kind.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="backfill (missing/unreadable photos) or refresh (no current render).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Render at most N products this run.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Number of Ray actors (each loads the model once).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per actor batch.")] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Join an existing Ray cluster (host:port or ray://...); default RAY_ADDRESS or a local Ray on 127.0.0.1.")] = None,
    hide_images: Annotated[bool, typer.Option("--hide-images", help="Evaluation: treat every photo as missing and score renders against it (PSNR/SSIM).")] = False,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write OUTPUT/report.html at the end.")] = True,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Marketplace preset: amazon, google, ebay, shopify, walmart or none (overrides quality.preset). Presets of 1000 px and more enlarge renders with Real-ESRGAN (quality.upscaler).")] = None,
    wait_lease: Annotated[float, typer.Option("--wait-lease", min=0, help="If another run holds the output, wait up to this many seconds for it (default: refuse at once, exit 8).")] = 0.0,
    no_lease: Annotated[bool, typer.Option("--no-lease", help="Hold no lease on the output: for stores that ignore conditional writes (run refuses them otherwise, exit 5). Nothing then stops two runs writing the output at once.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only and print what the run would do (counts by plan reason, quarantines by reason, sample ids): no Ray, no lease, nothing written.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan summary as one JSON object.")] = False,
) -> None:
    """Make the images a catalog needs (--kind render|main-image|variant|comparison|label|design); write images, manifest rows, scores and a report."""
    from catalog_render import storage
    from catalog_render.config import load_job
    from catalog_render.execution import run_job

    spec = load_job(job).with_overrides(**{"kind": kind, "mode": mode, "execution.workers": workers, "execution.batch_size": batch_size, "quality.preset": preset})
    if dry_run:
        if spec.kind != "render":
            raise typer.BadParameter(f"plans --kind render only (this run's kind is {spec.kind!r})", param_hint="--dry-run")
        if not model:
            raise typer.BadParameter("--kind render plans with the model's vocabulary: give --model", param_hint="--dry-run")
        _print_dry_run(spec, catalog_uri, model, output, limit, hide_images, as_json)
        return
    bar = _RenderBar()
    try:
        summary = run_job(spec, catalog_uri, model, output, address=address, limit=limit, hide_images=hide_images, progress=bar, wait_lease_s=wait_lease,
                          lease=not no_lease)
    finally:
        bar.close()
    c = summary.counts
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False)
    if summary.quarantined_already_recorded:
        console.print(f"{summary.quarantined} quarantined, {summary.quarantined_already_recorded} of them recorded in the manifest by an earlier run (not written again)")
    if summary.planned == 0:
        if summary.in_scope:
            console.print(f"nothing to render: {summary.up_to_date} of {summary.in_scope} products in scope are up to date ({summary.quarantined} quarantined)")
        else:
            console.print(f"nothing to render: no product of the catalog is in scope for {spec.mode} ({summary.quarantined} quarantined)")
            if spec.kind == "render" and spec.mode == "backfill" and not hide_images:
                console.print("note: a backfill renders the products without a usable photo, and every product here has one; "
                              "--mode refresh renders every product, --hide-images scores renders against the photos", highlight=False)
    else:
        rate = f", {summary.images_per_second:.2f} images/s" if summary.images_per_second else ""
        first = f", first image after {summary.first_image_seconds:.1f}s" if summary.first_image_seconds else ""
        alone = f", {c['left-alone']} left alone (their photo kept as it is)" if c.get("left-alone") else ""
        console.print(f"run {summary.run_id}: rendered {c['ok']} ok, {c['failed']} failed, {summary.quarantined} quarantined{alone}; {summary.up_to_date} already up to date; {summary.wall_seconds:.1f}s{rate}{first}")
    if report and summary.planned:
        from catalog_render.report import write_report

        console.print(f"report: {storage.display(write_report(output, summary.run_id))}")
    gated = summary.quality.get("failed-quality", 0)
    if summary.planned and (spec.quality.preset != "none" or gated):
        console.print(f"quality gate: {summary.quality.get('passed', 0)} passed, {gated} failed-quality (preset {spec.quality.preset})")
    if c["failed"] and not c["ok"]:
        raise typer.Exit(1)
    if summary.quality_alert:
        typer.echo(f"error: {summary.quality_alert}", err=True)
        raise typer.Exit(9)


def _print_dry_run(spec, catalog_uri: str, model: str, output: str, limit, hide_images: bool, as_json: bool) -> None:
    import json

    from catalog_render import plan_run
    from catalog_render.execution import dry_run

    s = plan_run.summary(dry_run(spec, catalog_uri, model, output, limit=limit, hide_images=hide_images))
    if as_json:
        typer.echo(json.dumps({"mode": spec.mode, **s}, ensure_ascii=False))
        return
    console.print(f"dry run ({spec.mode}): {s['to_render']:,} to render, {s['up_to_date']:,} of {s['in_scope']:,} in scope up to date"
                  f" ({s['approved_kept']:,} kept by approval), {s['quarantined']:,} quarantined, {s['catalog_rows']:,} catalog rows; nothing written",
                  highlight=False)
    for title, groups in (("to render, by plan reason", s["plan_reasons"]), ("quarantined, by reason", s["quarantine_reasons"])):
        if groups:
            console.print(f"{title}:", highlight=False)
        for reason, g in groups.items():
            console.print(f"  {g['count']:>9,}  {reason}  e.g. {', '.join(repr(p) for p in g['sample'])}", highlight=False, markup=False)


@app.command()
@domain_errors
def evaluate(
    model: Annotated[str, typer.Option("--model", help="Model directory to evaluate (local or s3://).")],
    catalog_uri: Annotated[str, typer.Option("--catalog", help="Catalog whose held-out products are rendered and compared with their photos.")],
    out: Annotated[str, typer.Option("--out", help="Where to write evaluation.json and evaluation.html (local or s3://).")],
    holdout: Annotated[Optional[float], typer.Option("--holdout", help="Share of products held out, in (0, 1): the same hash split as `split --fraction` (default evaluate.holdout).")] = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Category judge directory: loaded if present, else trained and saved there (default OUT/judge). Share it across models.")] = None,
    job: JobOpt = None,
    max_products: Annotated[Optional[int], typer.Option("--max-products", help="Evaluate at most N held-out products.")] = None,
) -> None:
    """Evaluate a model on products held out of training: reference metrics, category and colour fidelity, Fréchet distance, timing."""
    from rich.table import Table
    from rich.text import Text

    from catalog_render import storage
    from catalog_render.config import load_job
    from catalog_render.evaluation import evaluate as run_evaluation
    from catalog_render.evaluation import summary_rows

    spec = load_job(job).with_overrides(**{"evaluate.holdout": holdout, "evaluate.max_products": max_products})
    result = run_evaluation(model, catalog_uri, out, spec.evaluate, judge_uri=judge, generation=spec.generation,
                            progress=lambda msg: console.print(msg, highlight=False))
    table = Table("measure", "value", "note", title=f"evaluation of {result['model']['family']} model {result['model']['model_id']}")
    for row in summary_rows(result):
        table.add_row(*(Text(cell) for cell in row))
    Console(soft_wrap=True).print(table)
    for w in result["warnings"]:
        console.print(f"[red]warning:[/red] {rich_escape(w)}", highlight=False)
    console.print(f"wrote {storage.display(storage.join(out, 'evaluation.json'))} and evaluation.html", highlight=False)


@app.command("report")
@domain_errors
def report_cmd(
    output: Annotated[str, typer.Argument(help="Output root of a run (local or s3://).")],
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Run to show (default: the latest).")] = None,
) -> None:
    """Write OUTPUT/report.html: run summary, counts, score histograms, contact sheet."""
    from catalog_render import storage
    from catalog_render.report import write_report

    typer.echo(storage.display(write_report(output, run_id)))


feedback_app = typer.Typer(help="Reviewers' verdicts on renders (approve / reject) that steer the next runs.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("import")
@domain_errors
def feedback_import(
    file: Annotated[str, typer.Argument(help="Feedback file, CSV or Parquet (local or s3://): product_id, render_key, verdict (approve|reject), reviewer[, comment].")],
    output: Annotated[str, typer.Option("--output", help="Output root whose renders were reviewed (local or s3://).")],
) -> None:
    """Check a feedback file against the output's manifest and store it under OUTPUT/feedback/.

    Every row must name an ok render of the manifest; any bad row (listed with its line) stores nothing and exits 2.

    The next run renders rejected products again with a new seed and keeps approved ones.

    OUTPUT/current.parquet (the image to publish per product) is rewritten at once: a rejected image stops being published."""
    from catalog_render import current, feedback, storage

    result = feedback.import_feedback(file, output)
    console.print(f"stored {result.rows} verdicts ({result.approved} approve, {result.rejected} reject) in {storage.display(result.uri)}", highlight=False)
    if result.ignored_columns:
        console.print(f"ignored column(s): {', '.join(result.ignored_columns)}", highlight=False)
    console.print(f"current view: {storage.display(current.write_current_view(output))}", highlight=False)


design_app = typer.Typer(help="Design variations (run --kind design): export the approved ones as proposed catalog rows.", no_args_is_help=True)
app.add_typer(design_app, name="design")


@design_app.command("export")
@domain_errors
def design_export(
    output: Annotated[str, typer.Option("--output", help="Output root of a --kind design run (local or s3://).")],
    out: Annotated[str, typer.Option("--out", help="Catalog Parquet to write: one proposed product per approved variation.")],
) -> None:
    """Write each design variation a reviewer approved as a new catalog row (a proposed SKU with its attributes and image), as Parquet that run and validate read."""
    from catalog_render import storage
    from catalog_render.kinds.design_export import export_approved

    r = export_approved(output, out)
    console.print(f"wrote {r.rows} proposed products to {storage.display(r.uri)} ({r.sheets_skipped} approved sheets left out, "
                  f"{len(r.missing)} approved images missing)", highlight=False)


@app.command("review")
@domain_errors
def review_cmd(
    output: Annotated[str, typer.Argument(help="Output root whose renders to review (local or s3://).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs --allow-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8765,
    reviewer: Annotated[Optional[str], typer.Option("--reviewer", help="Name stored with every verdict (default: the OS user).")] = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a --host other than loopback (prints a warning: the page has no login).")] = False,
) -> None:
    """Open a review page in the browser: approve or reject renders, with keyboard shortcuts.

    Verdicts are stored as `feedback import` stores them (OUTPUT/feedback/ parts) and OUTPUT/current.parquet is rewritten
    after each; the next run re-renders rejected products and keeps approved ones. Ctrl-C stops the server."""
    from catalog_render import storage
    from catalog_render.review.server import make_server, urls

    server = make_server(output, host=host, port=port, reviewer=reviewer, allow_remote=allow_remote,
                         warn=lambda m: console.print(f"[red]{rich_escape(m)}[/red]", highlight=False))
    console.print(f"reviewing {storage.display(output)} as {server.config.app.state.reviewer}: open "
                  f"{' or '.join(urls(host, server.config.port))} (Ctrl-C stops)", highlight=False)
    server.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
