"""Soak (slow: `make test-all`): 6,000 products of the 44k-row fashion metadata in one run, with
tiny renders; the driver's and every actor's RSS must stay flat (benchmarks/soak.py samples it;
docs/reliability.md records the curve)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from catalog_render import manifest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import soak  # noqa: E402

pytestmark = pytest.mark.slow


def test_soak_6000_products_flat_memory(fashion, tiny_gan, tmp_path):
    if not soak.STYLES.is_file():
        pytest.skip("styles_full_original.csv not available")
    s = soak.soak(str(tiny_gan), 6000, tmp_path, batch_size=32)
    rows = manifest.read_manifest(str(tmp_path / "renders"))
    ok = rows.filter(pc.equal(rows["status"], "ok"))
    assert ok.num_rows == 6000 and len(set(ok.column("product_id").to_pylist())) == 6000
    procs = s["processes"]
    assert sum(1 for k in procs if k.startswith("actor")) >= 2 and any(k.startswith("driver") for k in procs)
    for name, p in procs.items():
        if p["seconds"] < 10:
            continue  # too short-lived to judge (never the case for the driver and actors of a full run)
        # Flat: from a quarter of the run to its end, RSS grows by less than 10 % (and 64 MiB).
        assert p["growth_mib_25_to_end"] < max(64, 0.10 * p["rss_mib_25"]), (name, p)
