#!/usr/bin/python3
"""scan_bench.py - anomaly_score row by row against the batched, threaded
anomaly_scan, through Python's sqlite3 and ./anomaly.so.

    OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tests/bench/scan_bench.py [N [REPS]]

Builds an in-memory table t(image) of the first N (default 500)
Fashion-MNIST test PNGs (copied from build/bench/fashion.db when it exists,
else imported with anomaly_idx from Debian's dataset-fashion-mnist),
registers models/fashion-ganomaly-class0.safetensors and times

    SELECT sum(anomaly_score(image, 'm')) FROM t
    SELECT sum(score) FROM anomaly_scan('m', 'SELECT rowid, image FROM t', '{"threads": 1}')
    ... and '{"threads": 2}'

Then the same with the PNGs resized to 64x64 (Pillow) and the 64x64 model
build/bench/speed-ganomaly-64.safetensors, when that file exists. Every
figure is the best of REPS (default 2) runs.

The decode share is measured apart: bench_core decodes and fits the same
28x28 PNGs alone (decode_fit_ms_per_image), set against the scan's CPU time
per image at one thread (decode_fit_share). The older estimate is kept
beside it (decode_fit_sql_share): the scan at one thread
costs decode + fit + SQL + scoring per image, and build/bench/bench_core
(tests/bench/bench_core.c, built by tests/bench/run.sh from the same core/
as ./anomaly.so; $BENCH_CORE overrides its path) times the scoring alone on
tensors already decoded, at batch 64, one thread. Both in CPU seconds of
the whole process, every thread counted (steadier than the wall clock on a
shared machine; also given for the scans):
share = 1 - core_cpu_per_image / scan_cpu_per_image, null without
bench_core. The share is small (decoding a 28x28 or 64x64 PNG costs tens of
microseconds against milliseconds of scoring), so on a busy machine the
noise of the two timings can exceed it, even making it negative.
Prints one JSON line.
"""
import json
import os
import sqlite3
import subprocess
import sys
import time

FASHION_DB = "build/bench/fashion.db"
IDX = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
MODEL28 = "models/fashion-ganomaly-class0.safetensors"
MODEL64 = "build/bench/speed-ganomaly-64.safetensors"
# built by tests/bench/run.sh; must be built from the same core/ as ./anomaly.so
BENCH_CORE = os.environ.get("BENCH_CORE", "build/bench/bench_core")


def connect():
    db = sqlite3.connect(":memory:")
    db.enable_load_extension(True)
    db.load_extension("./anomaly")
    db.enable_load_extension(False)
    return db


def load_images(db, n):
    """The first n Fashion-MNIST test PNGs into t(image)."""
    db.execute("CREATE TABLE t(image BLOB)")
    if os.path.exists(FASHION_DB):
        db.execute("ATTACH ? AS f", ("file:%s?mode=ro" % FASHION_DB,))
        db.execute("INSERT INTO t(image) SELECT image FROM f.fashion WHERE split = 'test' "
                   "ORDER BY idx LIMIT ?", (n,))
        db.commit()
        db.execute("DETACH f")
    else:
        db.execute("INSERT INTO t(image) SELECT image FROM anomaly_idx(?) LIMIT ?", (IDX, n))
    db.commit()
    return db.execute("SELECT count(*) FROM t").fetchone()[0]


def resize_images(db, side):
    """t64(image): the images of t resized to side x side PNGs (Pillow)."""
    import io
    from PIL import Image
    db.execute("CREATE TABLE t64(image BLOB)")
    rows = []
    for (png,) in db.execute("SELECT image FROM t ORDER BY rowid"):
        im = Image.open(io.BytesIO(png)).resize((side, side), Image.BILINEAR)
        out = io.BytesIO()
        im.save(out, format="PNG")
        rows.append((out.getvalue(),))
    db.executemany("INSERT INTO t64(image) VALUES (?)", rows)
    db.commit()


def timed(db, sql):
    """(wall seconds, process CPU seconds, result) of one run of sql."""
    w0, c0 = time.perf_counter(), time.process_time()
    v = db.execute(sql).fetchone()[0]
    return time.perf_counter() - w0, time.process_time() - c0, v


def core_cpu_per_image(model, n):
    """(CPU seconds per image of model_score alone at batch 64, ms to decode and
    fit one PNG) from bench_core, or (None, None)."""
    if not os.access(BENCH_CORE, os.X_OK):
        return None, None
    try:
        out = subprocess.run([BENCH_CORE, model, "--images", str(n)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        return r["batch64"]["cpu_seconds"] / n, r.get("decode_fit_ms_per_image")
    except (subprocess.CalledProcessError, ValueError, KeyError, IndexError):
        return None, None


def measure(db, table, model_path, n, reps):
    db.execute("DELETE FROM anomaly_models WHERE name = 'm'")
    db.execute("INSERT INTO anomaly_models(name, model) VALUES ('m', anomaly_model_from_file(?))",
               (model_path,))
    db.commit()
    q = "SELECT rowid, image FROM %s" % table
    forms = {
        "anomaly_score": "SELECT sum(anomaly_score(image, 'm')) FROM %s" % table,
        "scan_threads1": "SELECT sum(score) FROM anomaly_scan('m', '%s', '{\"threads\": 1}')" % q,
        "scan_threads2": "SELECT sum(score) FROM anomaly_scan('m', '%s', '{\"threads\": 2}')" % q,
    }
    res = {"model": model_path, "images": n}
    sums = {}
    cpu1 = None
    for name, sql in forms.items():
        runs = [timed(db, sql) for _ in range(reps)]
        res[name + "_images_per_second"] = round(n / min(r[0] for r in runs), 1)
        sums[name] = runs[0][2]
        if name != "anomaly_score":
            res[name + "_cpu_ms_per_image"] = round(min(r[1] for r in runs) / n * 1e3, 3)
        if name == "scan_threads1":
            cpu1 = min(r[1] for r in runs) / n
    res["score_sums"] = sums
    got = [core_cpu_per_image(model_path, n) for _ in range(reps)]
    cores = [c for c, _ in got if c]
    decodes = [d for _, d in got if d]
    core = min(cores) if cores else None
    res["core_cpu_ms_per_image"] = round(core * 1e3, 3) if core else None
    res["decode_fit_sql_share"] = round(1 - core / cpu1, 3) if core else None
    # measured apart: decoding and fitting a 28x28 PNG (bench_core's time_decode)
    # against the scan's CPU time per image at one thread
    dec = min(decodes) if decodes else None
    res["decode_fit_ms_per_image"] = round(dec, 4) if dec else None
    res["decode_fit_share"] = round(dec / (cpu1 * 1e3), 4) if dec else None
    return res


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    db = connect()
    n = load_images(db, n)
    out = {"openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
           "cpus": os.cpu_count(), "fashion28": measure(db, "t", MODEL28, n, reps)}
    if os.path.exists(MODEL64):
        try:
            resize_images(db, 64)
            out["fashion64"] = measure(db, "t64", MODEL64, n, reps)
        except ImportError:
            out["fashion64"] = "skipped: no Pillow"
    else:
        out["fashion64"] = "skipped: no %s" % MODEL64
    print(json.dumps(out))


if __name__ == "__main__":
    main()
