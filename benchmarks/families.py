"""The catalogs every comparison of docs/FAMILIES.md starts from.

    python benchmarks/families.py prepare   # ingest + split ../shared/data/{fashion,ikea} (or $CATALOG_RENDER_DATA) into runs/cmp/

`catalog-render ingest` then `catalog-render split --fraction 0.15` (the hash split that
`evaluate --holdout 0.15` uses, so the evaluations' held-out products are the split's) for each
catalog: runs/cmp/<catalog>.parquet, <catalog>-train.parquet, <catalog>-holdout.parquet (gitignored).
benchmarks/transfer.py and benchmarks/storefront.py train and evaluate on them; `make families`
runs all three.
"""

from __future__ import annotations

import subprocess
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The real catalogs: ../shared/data beside the checkout, or $CATALOG_RENDER_DATA.
DATA = Path(os.environ.get("CATALOG_RENDER_DATA") or ROOT.parent / "shared" / "data")
WORK = ROOT / "runs" / "cmp"
CR = str(Path(sys.executable).parent / "catalog-render")
CATALOGS = ("fashion", "ikea")
MAPS = {
    "fashion": "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,"
    "attributes.usage=usage,attributes.season=season,image_uri=image_file",
    "ikea": "product_id=id,title=name,category=type,attributes.color=color,attributes.size=size,image_uri=image_file",
}


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def prepare() -> None:
    missing = [str(DATA / c / "metadata.csv") for c in CATALOGS if not (DATA / c / "metadata.csv").is_file()]
    if missing:
        raise SystemExit(f"the real catalogs are not at {DATA} ({', '.join(missing)} missing): run from a checkout beside "
                         "shared/, or set CATALOG_RENDER_DATA to the folder holding fashion/ and ikea/")
    WORK.mkdir(parents=True, exist_ok=True)
    for c in CATALOGS:
        if not (WORK / f"{c}.parquet").exists():
            sh(CR, "ingest", "--csv", str(DATA / c / "metadata.csv"), "--images", str(DATA / c), "--map", MAPS[c], "--out", str(WORK / f"{c}.parquet"))
        sh(CR, "split", "--catalog", str(WORK / f"{c}.parquet"), "--train-out", str(WORK / f"{c}-train.parquet"),
           "--holdout-out", str(WORK / f"{c}-holdout.parquet"), "--fraction", "0.15")


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        raise SystemExit("usage: python benchmarks/families.py prepare")
    prepare()
