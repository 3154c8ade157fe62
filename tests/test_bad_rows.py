"""Bad rows: a real catalog mixing real fashion products with every kind of bad or unusual row,
rendered by a real run (local Ray, the tiny GAN trained on real photos). Each kind has one
expected outcome: quarantined with its reason, rendered (with why it was selected), or used as
the reference photo after conversion to RGB. The rest of the run always completes."""

from __future__ import annotations

import json

import hashlib
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import bad_files
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from catalog_render import catalog, imaging, manifest, planning, storage
from catalog_render.config import JobSpec
from catalog_render.errors import CatalogError
from catalog_render.execution import generation_params, run_job
from catalog_render.generators import registry
from catalog_render.generators.base import Conditioning
from catalog_render.quality import scores

SPEC = JobSpec().with_overrides(**{"execution.workers": 2, "execution.batch_size": 4, "generation.seed": 11})
SIZE = 32  # the tiny GAN renders 32 x 32 px
BYTE_CAP_FILE = 65 * 2**20  # one MiB over imaging.MAX_BYTES (64 MiB), written sparse


def _key_of_long_id(pid: str) -> str:
    """Expected object key of an id whose percent-encoding exceeds 200 characters, from the rule:
    the first 184 characters of the encoding, '~', 16 hex digits of sha256(id)."""
    enc = "".join(c if (c.isascii() and (c.isalnum() or c in "_.-~")) else "".join(f"%{b:02X}" for b in c.encode()) for c in pid)
    return enc[:184] + "~" + hashlib.sha256(pid.encode()).hexdigest()[:16]


class _Catalog:
    """Builds the mixed catalog: each row borrows the title/category/attributes of a fresh real
    product (so every category is one the tiny GAN knows) unless the row's kind overrides them."""

    def __init__(self, small_catalog: Path, tmp: Path):
        self.real = [r for r in catalog.read_catalog(str(small_catalog)).to_pylist() if r["image_uri"]]
        self.next = iter(self.real)
        self.photos = tmp / "photos"
        self.photos.mkdir()
        self.rows: list[dict] = []
        self.skipped: list[tuple[str, str]] = []  # (manifest product_id, exact error)
        self.run_a: dict[str, tuple[str, str]] = {}  # product_id -> (exact plan_reason or prefix + "*", expected key)
        self.run_b: dict[str, np.ndarray] = {}  # product_id -> the RGB reference a correct decoder yields

    def add(self, pid, image_uri=None, **override) -> dict:
        src = next(self.next)
        row = {"product_id": pid, "title": src["title"], "category": src["category"], "attributes": src["attributes"], "image_uri": image_uri}
        row.update(override)
        row["_src"] = src
        self.rows.append(row)
        return row

    def real_photo(self, row: dict) -> np.ndarray:
        return np.asarray(Image.open(row["_src"]["image_uri"]).convert("RGB"))

    def write(self, name: str, data: bytes) -> str:
        path = self.photos / name
        path.write_bytes(data)
        return str(path)

    def to_parquet(self, path: Path) -> str:
        cols = {k: [r[k] for r in self.rows] for k in ("product_id", "title", "category", "image_uri")}
        table = pa.table({
            "product_id": pa.array(cols["product_id"], pa.string()),
            "title": pa.array(cols["title"], pa.string()),
            "category": pa.array(cols["category"], pa.string()),
            "attributes": pa.array([r["attributes"] for r in self.rows], pa.map_(pa.string(), pa.string())),
            "image_uri": pa.array(cols["image_uri"], pa.string()),
        })
        storage.write_parquet(table, str(path))
        return str(path)


def _build(small_catalog: Path, tmp: Path) -> _Catalog:
    c = _Catalog(small_catalog, tmp)
    missing = "image missing (no image_uri)"

    # --- good rows: real products, real ids, real photos copied out of ../shared
    for _ in range(2):
        r = c.add(None)
        r["product_id"] = r["_src"]["product_id"]
        r["image_uri"] = c.write(f"{r['product_id']}.jpg", Path(r["_src"]["image_uri"]).read_bytes())
        c.run_b[r["product_id"]] = c.real_photo(r)
    r = c.add(None)
    r["product_id"] = r["_src"]["product_id"]  # a real product whose photo is not in the catalog
    c.run_a[r["product_id"]] = (missing, r["product_id"])
    r = c.add(None, image_uri=str(c.photos / "deleted.jpg"))
    r["product_id"] = r["_src"]["product_id"]  # its photo was deleted
    c.run_a[r["product_id"]] = ("image missing (not found)", r["product_id"])
    good = [r["product_id"] for r in c.rows]

    # --- product ids
    for pid, why in [
        ("../escape", "has a '.' or '..' path segment: a path, not a product id"),
        ("/abs/path", "starts with '/': a path, not a product id"),
        ("nul\x00id", "contains control characters (U+0000)"),
        ("9" * 1000, "is 1,000 characters long (max 256)"),
        ("   ", "is blank (only whitespace)"),
        ("", "is empty"),
        ("SKU-1\u200b", "contains invisible format characters (U+200B)"),  # zero-width space pasted in
    ]:
        c.add(pid)
        c.skipped.append((pid, f"bad product_id: {why}"))
    c.add(None)
    c.skipped.append(("", "bad product_id: is null"))
    c.add("Jäger-Schal-42")
    c.run_a["Jäger-Schal-42"] = (missing, "J%C3%A4ger-Schal-42")
    c.add("AB/123-4")  # a slash inside a SKU: a real id, its key encodes the slash
    c.run_a["AB/123-4"] = (missing, "AB%2F123-4")
    c.add(" SKU 7 ")  # spaces around an id are kept, never stripped (stripping could merge two ids)
    c.run_a[" SKU 7 "] = (missing, "%20SKU%207%20")
    long_id = "é" * 250  # 250 characters (allowed) but 1,500 once percent-encoded
    c.add(long_id)
    c.run_a[long_id] = (missing, _key_of_long_id(long_id))
    for _ in range(2):
        c.add("dup-1")  # two rows claim the same product: which is right cannot be known
        c.skipped.append(("dup-1", "duplicate product_id: 2 rows share this id (none is rendered: which is right cannot be known)"))

    # --- titles and categories
    c.add("no-title-empty", title="")
    c.run_a["no-title-empty"] = (missing, "no-title-empty")
    c.add("no-title-nan", title=None)  # pandas NaN arrives as null
    c.run_a["no-title-nan"] = (missing, "no-title-nan")
    c.add("nothing-to-condition", title=None, category="  ")
    c.skipped.append(("nothing-to-condition", "bad row: no title and no category to condition on"))

    # --- broken photos: exactly why a backfill renders the product
    jpeg = Path(c.real[0]["image_uri"]).read_bytes()
    c.add("ref-truncated", c.write("truncated.jpg", bad_files.truncated(jpeg)))
    c.run_a["ref-truncated"] = ("image undecodable: truncated (*", "ref-truncated")
    c.add("ref-not-image", c.write("not-image.jpg", bad_files.NOT_AN_IMAGE))
    c.run_a["ref-not-image"] = ("image undecodable: not an image", "ref-not-image")
    c.add("ref-empty", c.write("empty.jpg", b""))
    c.run_a["ref-empty"] = ("image undecodable: empty file (0 bytes)", "ref-empty")
    c.add("ref-bomb", c.write("bomb.png", bad_files.png_bomb(30000, 30000)))
    c.run_a["ref-bomb"] = ("image refused: exceeds pixel cap: 900,000,000 px (max 40,000,000)", "ref-bomb")
    big = c.photos / "huge.tif"
    with open(big, "wb") as fh:
        fh.truncate(BYTE_CAP_FILE)  # sparse: 65 MiB to stat(), no disk used
    c.add("ref-over-byte-cap", str(big))
    c.run_a["ref-over-byte-cap"] = ("image refused: exceeds byte cap: 68,157,440 bytes (max 67,108,864)", "ref-over-byte-cap")
    r = c.add("ref-dotdot-uri")
    r["image_uri"] = str(c.photos / ".." / "photos" / f"{good[0]}.jpg")  # an existing photo, reached through '..'
    c.run_a["ref-dotdot-uri"] = ("image_uri refused: contains a '..' segment", "ref-dotdot-uri")

    # --- unusual but valid photos: converted to RGB and used as reference
    for kind in ("cmyk", "grey", "grey16", "rgba", "palette", "strip_67x800"):
        r = c.add(f"ref-{kind}")
        data, expect, _ = bad_files.odd_photos(c.real_photo(r))[kind]
        r["image_uri"] = c.write(f"{kind}.img", data)
        c.run_b[f"ref-{kind}"] = expect
    c.good = good
    return c


def _reason_matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected[:-1]) if expected.endswith("*") else actual == expected


def _render_of(uri: str) -> np.ndarray:
    with Image.open(uri) as im:  # decoded with Pillow directly, not with catalog_render.imaging
        return np.asarray(im.convert("RGB"))


def _letterboxed(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(imaging.letterbox(Image.fromarray(rgb), SIZE, SIZE))


def test_a_run_over_every_kind_of_bad_row(ray_local, small_catalog, tiny_gan, tmp_path):
    c = _build(small_catalog, tmp_path)
    cat_uri = c.to_parquet(tmp_path / "catalog.parquet")
    out = tmp_path / "out"
    assert len(c.skipped) + len(c.run_a) + len(c.run_b) == len(c.rows) == 33

    # The plan the run makes: why each product is selected, what is quarantined.
    info = registry.describe(str(tiny_gan))
    kw = {"mode": "backfill", "model_id": info.model_id, "params_used": info.params_used(generation_params(SPEC)), "job_seed": SPEC.generation.seed,
          "prompt_template": SPEC.generation.prompt_template, "done_keys": {}, "existing_images": set()}
    plan = planning.plan(catalog.read_catalog(cat_uri), **kw)
    assert [(p or "", w) for p, w in plan.quarantined] == c.skipped
    reasons = dict(zip(plan.work.column("product_id").to_pylist(), plan.work.column("plan_reason").to_pylist()))
    assert set(reasons) == set(c.run_a)
    for pid, (expected, _) in c.run_a.items():
        assert _reason_matches(reasons[pid], expected), (pid, reasons[pid])
    assert all(q["plan_reason"] == f"rejected: {q['error']}" and q["status"] == "skipped" for q in plan.quarantine_rows("r"))

    # Run A: backfill. Broken photos are rendered; valid photos (odd modes included) are not.
    a = run_job(SPEC, cat_uri, str(tiny_gan), str(out))
    assert a.counts == {"ok": len(c.run_a), "failed": 0, "skipped": len(c.skipped)}
    m = manifest.read_manifest(str(out)).to_pylist()
    assert sorted((r["product_id"], r["error"]) for r in m if r["status"] == "skipped") == sorted(c.skipped)
    ok = {r["product_id"]: r for r in m if r["status"] == "ok"}
    assert set(ok) == set(c.run_a)
    images = (out / "images").resolve()
    planned_keys = dict(zip(plan.work.column("product_id").to_pylist(), plan.work.column("render_key").to_pylist()))
    for pid, (_, key) in c.run_a.items():
        r = ok[pid]
        assert r["render_key"] == planned_keys[pid]
        assert r["image_uri"] == str(images / key / f"{r['render_key']}.png")
        assert Path(r["image_uri"]).resolve().parent.parent == images  # one segment under images/, whatever the id
        assert _render_of(r["image_uri"]).shape == (SIZE, SIZE, 3)
        assert r["reference_uri"] is None and r["psnr"] is None
    # nothing was written anywhere but the expected keys
    assert sorted(os.listdir(images)) == sorted(key for _, key in c.run_a.values())
    assert sorted(os.listdir(tmp_path)) == ["catalog.parquet", "out", "photos"]

    # Run B: the same catalog with photos hidden. Products rendered in run A are up to date; the
    # valid photos in odd modes are decoded to RGB and scored against.
    hidden = planning.plan(catalog.read_catalog(cat_uri), **{**kw, "hide_images": True})
    assert {p: w for p, w in zip(hidden.work.column("product_id").to_pylist(), hidden.work.column("plan_reason").to_pylist())
            if p in c.run_b} == {p: "photo hidden (--hide-images)" for p in c.run_b}
    b = run_job(SPEC, cat_uri, str(tiny_gan), str(out), hide_images=True)
    # the same bad rows for the same reasons: recorded by run A, counted (not written again) by run B
    assert b.counts == {"ok": len(c.run_b), "failed": 0, "skipped": 0}
    assert b.quarantined == b.quarantined_already_recorded == len(c.skipped)
    assert json.loads(Path(b.record_uri).read_text())["quarantined_already_recorded"] == len(c.skipped)
    assert b.up_to_date == len(c.run_a) and b.planned == len(c.run_b)
    mb = manifest.read_manifest(str(out))
    skipped = [r for r in mb.to_pylist() if r["status"] == "skipped"]
    assert sorted((r["product_id"], r["error"]) for r in skipped) == sorted(c.skipped) and {r["run_id"] for r in skipped} == {a.run_id}
    assert len({r["quarantine_key"] for r in skipped}) == len(c.skipped)
    rows_b = {r["product_id"]: r for r in mb.filter(pc.equal(mb["run_id"], b.run_id)).to_pylist() if r["status"] == "ok"}
    assert set(rows_b) == set(c.run_b)
    for pid, expect in c.run_b.items():
        r = rows_b[pid]
        assert r["reference_uri"] == next(x["image_uri"] for x in c.rows if x["product_id"] == pid)
        ref, render = _letterboxed(expect), _render_of(r["image_uri"])
        tol = 0.05 if pid == "ref-cmyk" else 1e-9  # CMYK JPEG: the RGB photo comes back up to JPEG loss
        assert r["psnr"] == pytest.approx(scores.psnr(ref, render), abs=tol), pid
        assert r["ssim"] == pytest.approx(scores.ssim(ref, render), abs=tol / 10), pid

    # Every good row was rendered, in one run or the other.
    assert set(c.good) <= set(ok) | set(rows_b)


def test_odd_photo_modes_decode_to_the_expected_rgb(small_catalog):
    real = next(r for r in catalog.read_catalog(str(small_catalog)).to_pylist() if r["image_uri"])
    photo = np.asarray(Image.open(real["image_uri"]).convert("RGB"))
    for kind, (data, expect, tol) in bad_files.odd_photos(photo).items():
        got = imaging.to_array(imaging.decode_rgb(data))
        assert got.shape == expect.shape, kind
        assert np.abs(got.astype(int) - expect).mean() <= tol, kind
    # the dark 16-bit scan stays dark: 127 * 257 -> 127, not stretched to 255
    dark16 = Image.fromarray(np.full((4, 4), 127 * 257, np.uint16))
    assert imaging.to_array(imaging.decode_rgb(bad_files.encode(dark16, "PNG")))[0, 0].tolist() == [127, 127, 127]


def test_broken_photos_are_named_by_what_is_wrong(small_catalog):
    jpeg = Path(next(r for r in catalog.read_catalog(str(small_catalog)).to_pylist() if r["image_uri"])["image_uri"]).read_bytes()
    cases = {
        b"": "empty file (0 bytes)",
        bad_files.NOT_AN_IMAGE: "not an image",
        bad_files.truncated(jpeg): "truncated (image file is truncated",
        bad_files.png_bomb(8000, 8000): "exceeds pixel cap: 64,000,000 px (8000x8000, max 40,000,000)",  # our cap
        bad_files.png_bomb(30000, 30000): "exceeds pixel cap: 900,000,000 px (max 40,000,000)",  # Pillow's, reported as ours
    }
    for data, message in cases.items():
        with pytest.raises(imaging.ImageDecodeError) as exc:
            imaging.decode_rgb(data)
        assert str(exc.value).startswith(message), (message, str(exc.value))
        assert isinstance(exc.value, imaging.ImageTooLarge) == message.startswith("exceeds")


NASTY_IDS = [
    "", ".", "..", "...", "%2E", "%2E%2E", "../escape", "../../etc/passwd", "/abs", "\\win\\path", "a/b", "a%2Fb", "a\\b",
    "nul\x00id", "line\nbreak", "tab\t", "Jäger-Schal-42", "Ja\u0308ger-Schal-42", "日本語", "🧦", "\u202eevil", "SKU-1\u200b",
    "CON", "a" * 200, "a" * 201, "a" * 1000, "é" * 250, "é" * 251, "~" * 201, "a" * 184 + "~" + "0" * 16, " ", " a ", "\ud800lone",
]


def _random_ids(n: int, seed: int = 20261201) -> list[str]:
    """Random strings over ASCII, punctuation, Latin-1, combining marks, RTL, CJK, emoji, control
    characters and lone surrogates; lengths 0-300."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x300, 0x36F), (0x590, 0x6FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF),
              (0x2000, 0x206F), (0xD800, 0xDFFF)]
    special = "./\\%~"
    out = []
    for _ in range(n):
        length = rng.choice([0, 1, 2, 3, 5, 10, 50, 183, 184, 185, 199, 200, 201, 300])
        chars = []
        for _ in range(length):
            if rng.random() < 0.3:
                chars.append(rng.choice(special))
            else:
                lo, hi = rng.choice(ranges)
                chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def test_object_keys_never_escape_the_output_or_collide(tmp_path):
    ids = list(dict.fromkeys(NASTY_IDS + _random_ids(10000)))
    keys = [storage.safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)  # distinct ids, distinct keys
    out = tmp_path / "out"
    images = out / "images"
    for pid, key in zip(ids, keys):
        assert key and key not in (".", "..") and "/" not in key and "\\" not in key, pid
        assert key.isascii() and key.isprintable() and len(key.encode()) <= 255, pid
        uri = manifest.image_uri_for(str(out), pid, "0" * 64, "png")
        assert os.path.dirname(os.path.dirname(os.path.normpath(uri))) == str(images), pid  # inside OUTPUT/images, one segment down
    # a real file system agrees: every nasty id gets its own folder, inside images/
    for pid in NASTY_IDS:
        uri = manifest.image_uri_for(str(out), pid, "k", "png")
        assert Path(uri).resolve().parent.parent == images.resolve(), pid
        storage.write_bytes(uri, b"x")
    assert len(os.listdir(images)) == len(set(NASTY_IDS))
    assert sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()) == [("out", "images")] * len(set(NASTY_IDS))


def test_integer_ids_and_nan_titles_are_read_wrong_nested_types_fail_naming_the_column(tmp_path):
    path = str(tmp_path / "c.parquet")
    storage.write_parquet(pa.table({"product_id": pa.array([15970, 39386], pa.int64()), "title": pa.array([float("nan")] * 2),
                                    "category": ["Shirts", "Jeans"]}), path)
    t = catalog.read_catalog(path)
    assert t.column("product_id").to_pylist() == ["15970", "39386"] and t.column("title").to_pylist() == [None, None]
    assert t.schema.equals(catalog.conform(t).schema)
    p = planning.plan(t, mode="refresh", model_id="m", params_used={}, job_seed=3, prompt_template="{title} {category}", done_keys={}, existing_images=set())
    assert p.work.column("seed").to_pylist() == [planning.product_seed(3, "15970"), planning.product_seed(3, "39386")]
    bad = {
        "product_id": (pa.array([1.0, 2.5]), "product_id: type is double, expected string (floats are not cast"),
        "attributes": (pa.array([{"color": "Blue"}, {"color": "Red"}]), "attributes: type is struct<color: string>, expected map<string, string>"),
        "title": (pa.array([["a"], ["b"]]), "title: type is list<element: string>, expected string"),
    }
    for col, (arr, message) in bad.items():
        cols = {"product_id": ["1", "2"], "title": ["a", "b"], "category": ["c", "c"], col: arr}
        storage.write_parquet(pa.table(cols), path)
        with pytest.raises(CatalogError) as exc:
            catalog.read_catalog(path)
        assert message in str(exc.value), str(exc.value)


def test_the_gan_refuses_categories_it_cannot_render_a_diffusers_pipeline_none(tiny_gan, tiny_sd):
    info = registry.describe(str(tiny_gan))
    model = registry.load_generator(str(tiny_gan))
    known = [v for f, values in info.conditions if f == "category" for v in values[1:]]
    assert known
    cases = [
        (Conditioning(title="Blue shirt", category=known[0], attributes={"color": "Chartreuse"}), None),  # unseen colour: rendered
        (Conditioning(title="Desk lamp", category="Lamps"), "category 'Lamps' is not in the model's vocabulary (known: "),
        (Conditioning(title="t", category=known[0].lower() + "x"), f"category '{known[0].lower()}x' is not in the model's vocabulary"),
        (Conditioning(title="Blue shirt", category=None), "no category: this model renders by category and cannot use the title"),
        (Conditioning(title="Blue shirt", category=" "), "no category"),
    ]
    for cond, expected in cases:
        for check in (info.conditioning_problem, model.conditioning_problem):
            got = check(cond)
            assert (got is None) if expected is None else got.startswith(expected), (cond, got)
    sd = registry.describe(str(tiny_sd))
    assert all(sd.conditioning_problem(c) is None for c, _ in cases)

    # the planner quarantines exactly those the model refuses, and only when they would be rendered
    t = catalog.conform(pa.table({"product_id": ["ok", "lamp", "title-only", "lamp-with-photo"], "title": ["a", "b", "c", "d"],
                                  "category": [known[0], "Lamps", None, "Lamps"], "image_uri": [None, None, None, "/photo.jpg"]}))
    p = planning.plan(t, mode="backfill", model_id=info.model_id, params_used={}, job_seed=1, prompt_template="{title}", done_keys={},
                      existing_images=set(), probe=lambda uri: None, conditioning_problem=info.conditioning_problem)
    assert p.work.column("product_id").to_pylist() == ["ok"]
    assert [(pid, why.split(" (known")[0]) for pid, why in p.quarantined] == [
        ("lamp", "cannot condition: category 'Lamps' is not in the model's vocabulary"),
        ("title-only", "cannot condition: no category: this model renders by category and cannot use the title"),
    ]


def test_the_manifest_says_why_each_row_was_planned(ray_local, small_catalog, tiny_gan, tmp_path):
    real = [r for r in catalog.read_catalog(str(small_catalog)).to_pylist() if r["image_uri"]][:2]
    shutil.copy(real[1]["image_uri"], tmp_path / "p.jpg")
    t = pa.table({"product_id": ["good", "lamp", "bad/../id", "hidden"], "title": ["a", "b", "c", "d"],
                  "category": [real[0]["category"], "Lamps", real[0]["category"], real[1]["category"]],
                  "image_uri": [None, None, None, str(tmp_path / "p.jpg")]})
    storage.write_parquet(t, str(tmp_path / "c.parquet"))
    out = str(tmp_path / "out")
    s = run_job(SPEC, str(tmp_path / "c.parquet"), str(tiny_gan), out)
    m = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert s.counts == {"ok": 1, "failed": 0, "skipped": 2}
    assert m["good"]["status"] == "ok" and m["good"]["plan_reason"] == "image missing (no image_uri)"
    assert m["lamp"]["status"] == "skipped" and m["lamp"]["plan_reason"].startswith("rejected: cannot condition: category 'Lamps'")
    assert m["bad/../id"]["plan_reason"] == "rejected: bad product_id: has a '.' or '..' path segment: a path, not a product id"


def test_old_manifest_parts_read_with_a_null_plan_reason(tmp_path):
    old_schema = pa.schema([f for f in manifest.manifest_schema() if f.name != "plan_reason"])
    rows = [{"run_id": "r0", "product_id": "p1", "status": "ok", "finished_at": datetime.now(UTC)}]
    storage.write_parquet(pa.Table.from_pylist([{f.name: r.get(f.name) for f in old_schema} for r in rows], schema=old_schema),
                          str(tmp_path / "manifest" / "run=r0" / "part-00000.parquet"))
    manifest.write_part(str(tmp_path), "r1", 0, [{"run_id": "r1", "product_id": "p2", "status": "skipped", "plan_reason": "rejected: x"}])
    m = manifest.read_manifest(str(tmp_path))
    assert m.schema.equals(manifest.manifest_schema())
    assert list(zip(m["product_id"].to_pylist(), m["plan_reason"].to_pylist())) == [("p1", None), ("p2", "rejected: x")]


def test_training_never_reads_a_refused_image_uri(small_catalog, tmp_path):
    from catalog_render.training.data import load_image_set

    t = catalog.read_catalog(str(small_catalog)).slice(0, 2)
    uris = t.column("image_uri").to_pylist()
    first = Path(uris[0])
    uris[1] = str(first.parent / ".." / first.parent.name / first.name)  # the same, existing photo, through '..'
    t = t.set_column(t.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    data = load_image_set(t, 16, 16)
    assert data.product_ids == [t["product_id"][0].as_py()]
    assert data.skipped == [(t["product_id"][1].as_py(), "image_uri refused: contains a '..' segment")]
