"""Review feedback flows into the next run: a real run (local Ray, tiny GAN, 4 real fashion products),
a real feedback CSV imported through the CLI, then planning, the current view and a re-run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from catalog_render import catalog, current, feedback, manifest, planning, storage
from catalog_render.cli import app
from catalog_render.config import JobSpec
from catalog_render.execution import generation_params, run_job
from catalog_render.generators import registry
from catalog_render.generators.base import Conditioning

SPEC = JobSpec().with_overrides(**{"mode": "refresh", "execution.workers": 1, "execution.batch_size": 4, "generation.seed": 11})
runner = CliRunner()


@dataclass
class Flow:
    out: str  # absolute, as run_job records image URIs
    catalog_uri: str
    ids: list[str]  # rejected (bob), rejected (carol), approved (alice), not reviewed
    m: pa.Table  # the manifest after the first run
    rows: dict[str, dict]  # product_id -> its manifest row
    fb: pa.Table  # read_feedback after the import
    existing: set[str]
    info: registry.ModelInfo
    tiny_gan: Path
    cli: object  # the CliRunner result of `feedback import`
    current_after_import: pa.Table


@pytest.fixture(scope="module")
def flow(ray_local, small_catalog, tiny_gan, tmp_path_factory) -> Flow:
    d = tmp_path_factory.mktemp("flow")
    cat_uri = str(d / "catalog.parquet")
    storage.write_parquet(catalog.read_catalog(str(small_catalog)).slice(0, 4), cat_uri)
    out = storage.display(str(d / "out"))
    s = run_job(SPEC, cat_uri, str(tiny_gan), out)
    assert s.counts == {"ok": 4, "failed": 0, "skipped": 0}
    m = manifest.read_manifest(out)
    rows = {r["product_id"]: r for r in m.to_pylist()}
    ids = catalog.read_catalog(cat_uri).column("product_id").to_pylist()
    a, b, c, _ = ids
    review = d / "review.csv"
    review.write_text(
        "product_id,render_key,verdict,comment,reviewer\n"
        f'{a},{rows[a]["render_key"]},reject,"blurry, wrong colour",bob\n'
        f"{b},{rows[b]['render_key']},Reject,,carol\n"
        f"{c},{rows[c]['render_key']},approve,looks right,alice\n",
        encoding="utf-8",
    )
    cli = runner.invoke(app, ["feedback", "import", str(review), "--output", out])
    current = storage.read_parquet(storage.join(out, "current.parquet")) if cli.exit_code == 0 else None
    return Flow(out, cat_uri, ids, m, rows, feedback.read_feedback(out), set(storage.list_uris(storage.join(out, "images"))),
                registry.describe(str(tiny_gan)), tiny_gan, cli, current)


def _plan(f: Flow, *, table: pa.Table | None = None, mode: str = "refresh", job_seed: int = 11, params_used: dict | None = None,
          fb: pa.Table | None = None, m: pa.Table | None = None, existing: set[str] | None = None, **kw) -> planning.Plan:
    """planning.plan called as run_job calls it, plus the feedback wiring proposed for run_job."""
    m = f.m if m is None else m
    return planning.plan(
        catalog.read_catalog(f.catalog_uri) if table is None else table, mode=mode, model_id=f.info.model_id,
        params_used=params_used or f.info.params_used(generation_params(SPEC)), job_seed=job_seed,
        prompt_template=SPEC.generation.prompt_template, done_keys=manifest.ok_render_keys(m),
        existing_images=f.existing if existing is None else existing, conditioning_problem=f.info.conditioning_problem,
        feedback=f.fb if fb is None else fb, manifest_table=m, **kw,
    )


def _key(f: Flow, pid: str, seed: int, job_params: dict | None = None) -> str:
    c = json.loads(f.rows[pid]["conditioning"])
    return planning.render_key(Conditioning(**c), f.info.model_id, job_params or f.info.params_used(generation_params(SPEC)), seed)


def _reject(pid: str, keys: list[str], reviewer: str = "dave") -> pa.Table:
    """A later import (as read_feedback returns it) rejecting these renders of one product."""
    rows = [{"product_id": pid, "render_key": k, "verdict": "reject", "comment": None, "reviewer": reviewer,
             "imported_at": datetime.now(UTC), "source": "later.csv", "source_line": i + 2} for i, k in enumerate(keys)]
    return pa.Table.from_pylist(rows, schema=feedback.FEEDBACK_SCHEMA)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_import_stores_the_verdicts_and_rewrites_the_current_view(flow):
    r = flow.cli
    assert r.exit_code == 0, (r.stdout, r.stderr)
    [part] = storage.list_uris(feedback.feedback_prefix(flow.out))
    assert r.stderr.splitlines() == [
        f"stored 3 verdicts (1 approve, 2 reject) in {part}",
        f"current view: {flow.out}/current.parquet",
    ]
    a, b, c, _ = flow.ids
    assert [(x["product_id"], x["verdict"], x["reviewer"], x["comment"]) for x in flow.fb.to_pylist()] == sorted([
        (a, "reject", "bob", "blurry, wrong colour"), (b, "reject", "carol", None), (c, "approve", "alice", "looks right"),
    ])


def test_cli_bad_file_exits_2_listing_every_bad_line_and_stores_nothing(flow, tmp_path):
    a, b, *_ = flow.ids
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,render_key,verdict,reviewer\n"
                   f"{a},{flow.rows[a]['render_key']},maybe,bob\n"
                   f"{b},{'0' * 64},reject,bob\n"
                   f"{b},{flow.rows[b]['render_key']},reject,\n", encoding="utf-8")
    r = runner.invoke(app, ["feedback", "import", str(bad), "--output", flow.out])
    assert r.exit_code == 2
    assert r.stderr == (
        "error: bad.csv: 3 bad row(s): line 2: verdict 'maybe' is not approve or reject; "
        f"line 3: no rendered image of product '{b}' with render_key '{'0' * 64}' in the manifest of {flow.out}; "
        "line 4: reviewer is empty\n"
    )
    assert len(storage.list_uris(feedback.feedback_prefix(flow.out))) == 1
    r = runner.invoke(app, ["feedback", "import", str(tmp_path / "nope.csv"), "--output", flow.out])
    assert r.exit_code == 2 and r.stderr.startswith("error: cannot read feedback file: ") and r.stderr.count("\n") == 1
    r = runner.invoke(app, ["feedback", "import", str(bad)])
    assert r.exit_code == 2 and "--output" in r.stderr  # Typer usage error


# --- planning ------------------------------------------------------------------------------------


def test_rejected_products_are_rendered_again_with_the_next_seed_in_both_modes(flow):
    a, b, c, d = flow.ids
    assert _plan(flow, fb=feedback.FEEDBACK_SCHEMA.empty_table()).work.num_rows == 0  # without feedback: all up to date
    reviewers = {a: "bob", b: "carol"}
    for mode, extra in (("refresh", {}), ("backfill", {"hide_images": True})):
        p = _plan(flow, mode=mode, **extra)
        work = p.work.to_pylist()
        assert [w["product_id"] for w in work] == [a, b]
        assert (p.up_to_date, p.approved_kept, p.in_scope, p.quarantined) == (2, 1, 4, [])
        for w in work:
            pid, old = w["product_id"], flow.rows[w["product_id"]]
            assert old["seed"] == planning.product_seed(11, pid)
            assert w["seed"] == planning.attempt_seed(11, pid, 1) != old["seed"]
            assert w["render_key"] == _key(flow, pid, w["seed"]) != old["render_key"]
            assert w["conditioning"] == old["conditioning"]
            why = f"rejected render {old['render_key'][:12]} by {reviewers[pid]}: new seed (attempt 1)"
            assert w["plan_reason"] == (why if mode == "refresh" else f"{why}; photo hidden (--hide-images)")
    # a backfill does not reach products whose photo is fine, rejected or not
    assert _plan(flow, mode="backfill").work.num_rows == 0


def test_a_second_rejection_moves_to_the_next_seed_again(flow):
    a, b, *_ = flow.ids
    key1 = _key(flow, a, planning.attempt_seed(11, a, 1))
    p = _plan(flow, fb=pa.concat_tables([flow.fb, _reject(a, [key1])]))
    w = {r["product_id"]: r for r in p.work.to_pylist()}
    assert sorted(w) == sorted([a, b])
    assert w[a]["seed"] == planning.attempt_seed(11, a, 2)
    assert w[a]["render_key"] == _key(flow, a, w[a]["seed"])
    assert w[a]["plan_reason"] == f"rejected render {key1[:12]} by dave: new seed (attempt 2)"
    assert len({planning.attempt_seed(11, a, k) for k in range(planning.MAX_ATTEMPTS)}) == planning.MAX_ATTEMPTS


def test_attempts_are_bounded(flow):
    *_, d = flow.ids
    keys = [_key(flow, d, planning.attempt_seed(11, d, k)) for k in range(planning.MAX_ATTEMPTS)]
    p = _plan(flow, fb=pa.concat_tables([flow.fb, _reject(d, keys[:-1])]))
    [w] = [r for r in p.work.to_pylist() if r["product_id"] == d]
    assert w["seed"] == planning.attempt_seed(11, d, planning.MAX_ATTEMPTS - 1)
    p = _plan(flow, fb=pa.concat_tables([flow.fb, _reject(d, keys)]))
    assert d not in p.work.column("product_id").to_pylist()
    assert p.quarantined == [(d, f"every render rejected: the renders of all 100 seeds tried were rejected in review (last {keys[-1][:12]} by dave)")]


def test_after_a_model_change_everything_is_rendered_again_except_the_approved(flow):
    a, b, c, d = flow.ids
    size64 = {"width": 64, "height": 64}
    for change in ({"job_seed": 12}, {"params_used": size64}):
        p = _plan(flow, **change)
        work = p.work.to_pylist()
        assert [w["product_id"] for w in work] == [a, b, d]
        assert (p.up_to_date, p.approved_kept) == (1, 1)
        for w in work:
            seed = planning.product_seed(change.get("job_seed", 11), w["product_id"])
            assert w["seed"] == seed and w["render_key"] == _key(flow, w["product_id"], seed, change.get("params_used"))
            assert w["plan_reason"] == "render_key not in manifest"
    assert [w["product_id"] for w in _plan(flow, mode="backfill", hide_images=True, job_seed=12).work.to_pylist()] == [a, b, d]
    # ... unless the approved product changes
    t = catalog.read_catalog(flow.catalog_uri)
    titles = t.column("title").to_pylist()
    titles[2] += " (new season)"
    t = t.set_column(t.schema.get_field_index("title"), "title", pa.array(titles, pa.string()))
    p = _plan(flow, table=t, job_seed=12)
    assert p.work.column("product_id").to_pylist() == [a, b, c, d] and p.approved_kept == 0
    assert json.loads(p.work.to_pylist()[2]["conditioning"])["title"] == titles[2]
    # an approval whose image is gone keeps nothing
    gone = flow.existing - {flow.rows[c]["image_uri"]}
    assert _plan(flow, job_seed=12, existing=gone).work.column("product_id").to_pylist() == [a, b, c, d]
    with pytest.raises(ValueError, match="manifest_table"):
        planning.plan(t, mode="refresh", model_id="m", params_used={}, job_seed=1, prompt_template="{title}", done_keys={},
                      existing_images=set(), feedback=flow.fb)


# --- current view --------------------------------------------------------------------------------


def _expected_row(f: Flow, pid: str, verdict=None, reviewer=None, row: dict | None = None) -> dict:
    r = row or f.rows[pid]
    return {"product_id": pid, "render_key": r["render_key"], "image_uri": r["image_uri"], "publish_uri": r.get("publish_uri") or r["image_uri"],
            "run_id": r["run_id"], "finished_at": r["finished_at"], "quality_status": r.get("quality_status"), "verdict": verdict, "reviewer": reviewer}


def test_current_view_never_serves_a_rejected_render(flow):
    a, b, c, d = flow.ids
    expected = sorted([_expected_row(flow, c, "approve", "alice"), _expected_row(flow, d)], key=lambda r: r["product_id"])
    assert flow.current_after_import.schema.equals(current.current_schema())
    assert flow.current_after_import.to_pylist() == expected
    assert current.current_view(flow.m, flow.fb, flow.existing).to_pylist() == expected
    assert current.current_view(flow.m).column("product_id").to_pylist() == sorted(flow.ids)  # no feedback: every render


def test_current_view_prefers_the_approved_render_while_the_product_is_unchanged(flow):
    a, b, c, d = flow.ids
    old = flow.rows[c]
    newer = {**old, "render_key": "e" * 64, "image_uri": old["image_uri"].replace(old["render_key"], "e" * 64),
             "publish_uri": "s3://shop/main/e.jpg", "run_id": "later", "finished_at": old["finished_at"] + timedelta(hours=1),
             "quality_status": "passed"}
    m = pa.concat_tables([flow.m, manifest.to_table([newer])])
    existing = flow.existing | {newer["image_uri"]}
    view = {r["product_id"]: r for r in current.current_view(m, flow.fb, existing).to_pylist()}
    assert view[c] == _expected_row(flow, c, "approve", "alice")  # a newer unreviewed render (new model) loses
    changed = {**newer, "conditioning": json.dumps({**json.loads(old["conditioning"]), "title": "Renamed"})}
    m = pa.concat_tables([flow.m, manifest.to_table([changed])])
    view = {r["product_id"]: r for r in current.current_view(m, flow.fb, existing).to_pylist()}
    assert view[c] == {**_expected_row(flow, c, row=changed), "publish_uri": "s3://shop/main/e.jpg", "quality_status": "passed"}
    # its image gone, the newer render is not served either
    view = {r["product_id"]: r for r in current.current_view(m, flow.fb, flow.existing).to_pylist()}
    assert view[c]["render_key"] == old["render_key"]


def test_rerun_renders_the_rejected_products_anew(flow):
    """run_job reads the feedback beside the manifest: rejected renders get new seeds, the approved stays."""
    a, b, c, d = flow.ids
    s = run_job(SPEC, flow.catalog_uri, str(flow.tiny_gan), flow.out)
    assert (s.counts["ok"], s.planned, s.up_to_date) == (2, 2, 2)
    m = manifest.read_manifest(flow.out)
    new = {r["product_id"]: r for r in m.filter(pc.equal(m["run_id"], s.run_id)).to_pylist()}
    assert sorted(new) == sorted([a, b])
    for pid, r in new.items():
        assert r["seed"] == planning.attempt_seed(11, pid, 1) and r["render_key"] == _key(flow, pid, r["seed"])
        assert r["plan_reason"].startswith(f"rejected render {flow.rows[pid]['render_key'][:12]} by ")
        assert storage.read_bytes(r["image_uri"]) != storage.read_bytes(flow.rows[pid]["image_uri"])
    uri = f"{flow.out}/current.parquet"  # written by run_job at the end of the run
    assert storage.read_parquet(uri).to_pylist() == sorted(
        [_expected_row(flow, a, row=new[a]), _expected_row(flow, b, row=new[b]), _expected_row(flow, c, "approve", "alice"), _expected_row(flow, d)],
        key=lambda r: r["product_id"])
    existing = set(storage.list_uris(storage.join(flow.out, "images")))
    p = _plan(flow, fb=feedback.read_feedback(flow.out), m=m, existing=existing)
    assert (p.work.num_rows, p.up_to_date) == (0, 4)  # the new renders are current: nothing more to do
