"""Left-alone photos have their own manifest status, distinct from quarantined rows, also when read
from parts written while both were ``skipped``."""

from __future__ import annotations

from catalog_render import manifest
from catalog_render.kinds.base import skipped_is_done


def _row(pid: str, status: str, error: str | None, key: str | None) -> dict:
    return {"run_id": "r1", "product_id": pid, "status": status, "error": error, "render_key": key, "kind": "main-image"}


def test_left_alone_rows_read_as_their_own_status_and_count_as_done(tmp_path):
    out = str(tmp_path / "out")
    old = [_row("a", "skipped", "left alone: several products in the frame (2 separate regions of the mask)", "k-a"),
           _row("b", "skipped", "source photo unusable: image undecodable", None),
           _row("c", "skipped", "quarantined: target colour 'Multi' unknown to lab-transfer", "k-c"),
           _row("d", "ok", None, "k-d")]
    manifest.write_part(out, "r1", 0, old)  # as parts were written before left-alone existed
    manifest.write_part(out, "r2", 0, [_row("e", "left-alone", "left alone: no salient product found", "k-e")])
    rows = {r["product_id"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert {p: r["status"] for p, r in rows.items()} == {"a": "left-alone", "b": "skipped", "c": "skipped", "d": "ok", "e": "left-alone"}
    assert rows["a"]["error"].startswith("left alone: several products")  # the reason is kept
    assert skipped_is_done(manifest.read_manifest(out)) == {"k-a", "k-c", "k-e"}
