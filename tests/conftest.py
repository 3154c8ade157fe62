"""Shared fixtures: real data from ../shared/data, a real S3 server (moto, server mode) on
127.0.0.1, a real local Ray bound to loopback, tiny real models built offline."""

from __future__ import annotations

import os

# Before boto3/ray/huggingface_hub are imported anywhere: offline hub, loopback-only Ray.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FASHION = SHARED_DATA / "fashion"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fashion() -> Path:
    """The real Myntra fashion catalog (CI has ../shared/data)."""
    if not (FASHION / "metadata.csv").is_file():
        pytest.skip(f"real catalog not available at {FASHION}")
    return FASHION


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over HTTP on 127.0.0.1; sets the standard AWS variables for boto3 (and for
    Ray workers, which inherit the environment of the first ray.init)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    from catalog_render import storage

    storage._clients.clear()  # clients made before the endpoint was set must not be reused
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    storage._clients.clear()


@pytest.fixture
def bucket(s3_server, request):
    """A fresh bucket per test; returns its name."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session", autouse=True)
def ray_local(s3_server):
    """One real local Ray for the session (2 CPUs, loopback only, no dashboard), started before any
    test: a run started in a test process starts Ray as it plans (execution._RayStart), and Ray's
    workers keep the environment of the ray.init that started them, so a test that changes the
    environment (monkeypatch) must not be the one that starts Ray."""
    from catalog_render.execution import _init_ray

    ray = _init_ray(None, 2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_catalog(fashion, tmp_path_factory) -> Path:
    """60 real fashion products (ingested from the real CSV + photos) as catalog Parquet."""
    from catalog_render import catalog, storage

    d = tmp_path_factory.mktemp("small")
    lines = (fashion / "metadata.csv").read_text(encoding="utf-8").splitlines()
    (d / "metadata.csv").write_text("\n".join(lines[:61]) + "\n", encoding="utf-8")
    mapping = catalog.parse_mapping(
        "product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,image_uri=image_file"
    )
    result = catalog.ingest(str(d / "metadata.csv"), str(fashion / "images"), mapping)
    out = d / "catalog.parquet"
    storage.write_parquet(result.table, str(out))
    return out


@pytest.fixture(scope="session")
def tiny_gan(small_catalog, tmp_path_factory) -> Path:
    """A tiny conditional GAN trained 6 steps on real photos (32x32 px), saved as a model directory.
    6 steps, not fewer: after 2 steps it rendered flat squares (about 10 levels of range), which the
    gate's always-on blank check fails; after 6, none of 600 renders (60 products x 10 seeds) is
    blank (lowest non_dominant_share 0.0068, 7x the threshold)."""
    from catalog_render import catalog
    from catalog_render.config import TrainSpec
    from catalog_render.training.data import load_image_set
    from catalog_render.training.gan_trainer import sha256_of
    from catalog_render.training.loop import train as train_gan

    out = tmp_path_factory.mktemp("models") / "tiny-gan"
    spec = TrainSpec(height=32, width=32, base_channels=32, z_dim=16, embed_dim=8, batch_size=8, max_steps=6, min_count=1)
    data = load_image_set(catalog.read_catalog(str(small_catalog)), spec.width, spec.height)
    train_gan(data, spec, str(out), str(small_catalog), sha256_of(str(small_catalog)))
    return out


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from tiny_models import make_tiny_sd_pipeline

    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def upload_tree(src: Path, prefix: str) -> str:
    """Upload every file under src to an s3:// prefix; returns the prefix."""
    from catalog_render import storage

    for p in sorted(src.rglob("*")):
        if p.is_file():
            storage.write_bytes(f"{prefix.rstrip('/')}/{p.relative_to(src).as_posix()}", p.read_bytes())
    return prefix
