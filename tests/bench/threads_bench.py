#!/usr/bin/python3
"""threads_bench.py - what anomaly_config('threads', n) does to throughput.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/bench/threads_bench.py [N [REPS]]

anomaly_config('threads', n) sets how many threads OpenBLAS gives each
matrix product, for the whole process. This times, through Python's
sqlite3 and ./anomaly.so, with the BLAS at 1 and at 2 threads:

  score     SELECT sum(anomaly_score(image, 'm')) FROM t       one row at a time
  scan      anomaly_scan('m', ..., '{"threads": 2}')           two workers, batches of 64
  train     anomaly_train(..., '{"epochs": 1, "batch": 64}') over the N images

on the first N (default 512) Fashion-MNIST test images (scan_bench.py's
tables), with the 32x32 model models/fashion-ganomaly-class0.safetensors and,
when make bench has built it, the 64x64 build/bench/speed-ganomaly-64.
Figures are images per second, the best of REPS (default 2) runs. Scores
must agree between the settings to 1e-5 relative (OpenBLAS splits a product
between threads by blocks of the output, so they are usually equal). Prints
one JSON line.
"""
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scan_bench as sb  # noqa: E402

FORMS = {
    "score": "SELECT sum(anomaly_score(image, 'm')) FROM {t}",
    "scan": "SELECT sum(score) FROM anomaly_scan('m', 'SELECT rowid, image FROM {t}', "
            "'{{\"threads\": 2}}')",
    "train": "SELECT anomaly_train('bench_threads', 'ganomaly', image, "
             "'{{\"epochs\": 1, \"batch\": 64, \"size\": {side}, \"seed\": 0, "
             "\"quiet\": true, \"replace\": true}}') FROM {t}",
}


def best_rate(db, sql, n, reps):
    """(images per second, the query's value) of the best of reps runs."""
    best, value = None, None
    for _ in range(reps):
        t0 = time.perf_counter()
        value = db.execute(sql).fetchone()[0]
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return round(n / best, 1), value


def measure(db, table, model_path, side, n, reps):
    db.execute("DELETE FROM anomaly_models WHERE name IN ('m', 'bench_threads')")
    db.execute("INSERT INTO anomaly_models(name, model) VALUES ('m', anomaly_model_from_file(?))",
               (model_path,))
    db.commit()
    res = {"model": model_path, "images": n}
    sums = {}
    for threads in (1, 2):
        got = db.execute("SELECT anomaly_config('threads', ?)", (threads,)).fetchone()[0]
        for form, sql in FORMS.items():
            rate, value = best_rate(db, sql.format(t=table, side=side), n, reps)
            res["%s_blas%d_images_per_second" % (form, got)] = rate
            if form != "train":
                sums["%s_blas%d" % (form, got)] = value
    res["score_sums"] = sums
    for form in ("score", "scan", "train"):
        one, two = (res.get("%s_blas%d_images_per_second" % (form, k)) for k in (1, 2))
        res[form + "_speedup"] = round(two / one, 3) if one and two else None
    return res


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    db = sb.connect()
    n = sb.load_images(db, n)
    was = db.execute("SELECT anomaly_config('threads')").fetchone()[0]
    out = {"blas_threads_default": was, "cpus": os.cpu_count(),
           "fashion28": measure(db, "t", sb.MODEL28, 32, n, reps)}
    if os.path.exists(sb.MODEL64):
        try:
            sb.resize_images(db, 64)
            out["fashion64"] = measure(db, "t64", sb.MODEL64, 64, n, reps)
        except ImportError:
            out["fashion64"] = "skipped: no Pillow"
    else:
        out["fashion64"] = "skipped: no %s" % sb.MODEL64
    db.execute("SELECT anomaly_config('threads', ?)", (was,))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
