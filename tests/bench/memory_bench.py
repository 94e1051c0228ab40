"""memory_bench.py - resident memory of sqlite-anomaly while it scores.

  make -j2 && OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 \\
      /usr/bin/python3 tests/bench/memory_bench.py [--quick] > build/bench/memory.json

Run from the repository root; loads ./anomaly.so through Python's sqlite3
(enable_load_extension / load_extension). Prints ONE JSON line on stdout,
progress on stderr. Measures, each part in a fresh child process (this script
run again with --part) so that no part inherits another's cached models:

  scan          SELECT anomaly_score(image, 'm') FROM t over 100,000 PNG rows,
                the cursor stepped here, VmRSS and VmHWM (/proc/self/status)
                read every 10,000 rows between two steps (nothing is added to
                the SQL). "growth" is row 10,000 to the last row: flat means a
                few MB at most.
  scan_batched  the same through SELECT id, score FROM anomaly_scan('m', 'SELECT
                rowid, image FROM t'), skipped with a note while the extension
                has no anomaly_scan.
  connections   8 connections to the same database in one process, each loads
                the extension and scores one row with 'm', its statement kept
                open (so all hold the model at once); RSS after each. Beyond the
                first, a connection should cost far less than the model's
                float32 weights (params x 4 bytes): one parsed copy per process.
  models        one connection scores one row with each distinct model file of
                models/*.safetensors (statements kept open), after a warm-up on
                tests/data/tiny-ganomaly.safetensors that takes first-use costs
                (OpenBLAS buffers, the statement machinery) out of the figures;
                RSS increment per model beside its file size and params; then
                one more statement on the last model (its per-statement buffers).

The table t (100,000 rows: Fashion-MNIST's 70,000 PNGs from build/bench/fashion.db,
repeated) and the registered models live in build/bench/memory.db, built once
and reused. fashion.db is built with sql/import_fashion_mnist.sql when missing
(as tests/bench/bench.py does). --quick: 20,000 rows and 3 connections, a smoke
run. Sizes: *_kb as /proc gives them (KiB); *_mb are 10^6 bytes.
"""

import argparse
import glob
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

OUT = "build/bench"
DB = OUT + "/memory.db"
FASHION_DB = OUT + "/fashion.db"
EXT = "./anomaly"
TABLE_ROWS = 100000
SAMPLE_EVERY = 10000
FLAT_MB = 4.0                     # "a few MB": scan growth above this is reported
MODEL = "models/fashion-ganomaly-class0.safetensors"
WARMUP_MODEL = "tests/data/tiny-ganomaly.safetensors"
MODEL_GLOB = "models/*.safetensors"


def log(msg):
    print("memory_bench: " + msg, file=sys.stderr, flush=True)


def mem():
    """(VmRSS, VmHWM) of this process in KiB."""
    rss = hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def mb(kb):
    return round(kb * 1024 / 1e6, 3)


def connect(path=DB):
    con = sqlite3.connect(path, isolation_level=None)
    con.enable_load_extension(True)
    con.load_extension(EXT)
    con.enable_load_extension(False)
    return con


def model_name(path):
    return "mem_" + os.path.splitext(os.path.basename(path))[0]


# ---------------------------------------------------------------------------
# Setup: build/bench/memory.db with the table t and the registered models
# ---------------------------------------------------------------------------

def expand_reads(path):
    """The text of a sqlite3 script with its .read lines replaced by the files."""
    lines = []
    with open(path) as f:
        for line in f:
            if line.startswith(".read "):
                lines.append(expand_reads(line.split(None, 1)[1].strip()))
            elif line.startswith("."):
                raise RuntimeError("%s: dot-command %r not supported" % (path, line.strip()))
            else:
                lines.append(line)
    return "".join(lines)


def build_fashion():
    log("importing Fashion-MNIST into %s (once)" % FASHION_DB)
    con = connect(FASHION_DB)
    con.executescript(expand_reads("sql/import_fashion_mnist.sql"))
    con.close()


def table_rows(con):
    try:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.OperationalError:
        return None


def build_table(con):
    if table_rows(con) == TABLE_ROWS:
        return
    if not os.path.exists(FASHION_DB):
        build_fashion()
    log("building %s: %d PNG rows from %s (once)" % (DB, TABLE_ROWS, FASHION_DB))
    con.execute("ATTACH ? AS f", (FASHION_DB,))
    con.execute("BEGIN")
    con.execute("DROP TABLE IF EXISTS t")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, image BLOB NOT NULL)")
    con.execute("INSERT INTO t(image) SELECT image FROM f.fashion ORDER BY id")
    have = table_rows(con)
    if have == 0:
        raise RuntimeError("%s holds no images" % FASHION_DB)
    while have < TABLE_ROWS:
        con.execute("INSERT INTO t(image) SELECT image FROM t ORDER BY id LIMIT ?",
                    (TABLE_ROWS - have,))
        have = table_rows(con)
    con.execute("COMMIT")
    con.execute("DETACH f")


def register(con, name, path):
    """Registers path as name unless the same bytes are there already."""
    with open(path, "rb") as f:
        data = f.read()
    row = con.execute("SELECT model FROM anomaly_models WHERE name = ?", (name,)).fetchone()
    if row and bytes(row[0]) == data:
        return
    con.execute("INSERT OR REPLACE INTO anomaly_models(name, model) "
                "VALUES (?, anomaly_model_from_file(?))", (name, path))


def distinct_models():
    """models/*.safetensors, one per distinct content; and the duplicates skipped."""
    seen, files, dups = {}, [], []
    for path in sorted(glob.glob(MODEL_GLOB)):
        with open(path, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
        if h in seen:
            dups.append("%s has the same bytes as %s" % (path, seen[h]))
        else:
            seen[h] = path
            files.append(path)
    return files, dups


def model_info(con, path):
    return json.loads(con.execute("SELECT anomaly_model_info(anomaly_model_from_file(?))",
                                  (path,)).fetchone()[0])


def setup():
    os.makedirs(OUT, exist_ok=True)
    con = connect()
    build_table(con)
    register(con, "m", MODEL)
    register(con, model_name(WARMUP_MODEL), WARMUP_MODEL)
    files, dups = distinct_models()
    for path in files:
        register(con, model_name(path), path)
    infos = [(path, model_info(con, path)) for path in [MODEL] + files]
    versions = {"sqlite": sqlite3.sqlite_version,
                "extension": con.execute("SELECT anomaly_version()").fetchone()[0]}
    con.close()
    return infos, dups, versions


# ---------------------------------------------------------------------------
# The parts, each run in its own process
# ---------------------------------------------------------------------------

def scan_rows(sql, rows, label):
    """Steps sql, sampling memory every SAMPLE_EVERY rows. The score is the
    last column; returns the measures, or {"skipped": why} when sql fails to
    prepare because a function or table does not exist."""
    con = connect()
    rss0, hwm0 = mem()
    t0 = time.perf_counter()
    try:
        cur = con.execute(sql)
    except sqlite3.OperationalError as exc:
        msg = str(exc)
        if "no such" in msg:
            return {"skipped": "not available in this build (%s)" % msg, "sql": sql}
        raise
    samples = [{"row": 0, "rss_kb": rss0, "hwm_kb": hwm0}]
    n, total = 0, 0.0
    for r in cur:
        n += 1
        if r[-1] is not None:
            total += r[-1]
        if n == 1 or n % SAMPLE_EVERY == 0:
            rss, hwm = mem()
            samples.append({"row": n, "rss_kb": rss, "hwm_kb": hwm,
                            "seconds": round(time.perf_counter() - t0, 2)})
            if n % SAMPLE_EVERY == 0:
                log("%s: row %d, VmRSS %d kB, VmHWM %d kB" % (label, n, rss, hwm))
    dt = time.perf_counter() - t0
    cur.close()
    con.close()
    if n != rows:
        raise RuntimeError("%s: %d rows scored, %d expected" % (label, n, rows))
    first = next(s for s in samples if s["row"] == SAMPLE_EVERY)
    last = samples[-1]
    growth_kb = last["rss_kb"] - first["rss_kb"]
    after = [s for s in samples if s["row"] >= SAMPLE_EVERY]
    return {
        "sql": sql, "rows": n, "seconds": round(dt, 1), "rows_per_second": round(n / dt, 1),
        "score_sum": round(total, 4), "samples": samples,
        "growth_from_row": SAMPLE_EVERY, "growth_to_row": last["row"],
        "rss_growth_mb": mb(growth_kb), "hwm_growth_mb": mb(last["hwm_kb"] - first["hwm_kb"]),
        "rss_growth_bytes_per_row": round(growth_kb * 1024 / (last["row"] - first["row"]), 2),
        "first_row_rss_mb": mb(samples[1]["rss_kb"] - rss0),
        "rss_range_mb": mb(max(s["rss_kb"] for s in after) - min(s["rss_kb"] for s in after)),
        "flat": growth_kb * 1024 / 1e6 <= FLAT_MB,
    }


def part_scan(rows):
    where = "" if rows == TABLE_ROWS else " WHERE id <= %d" % rows
    return scan_rows("SELECT anomaly_score(image, 'm') FROM t" + where, rows, "scan")


def part_scan_batched(rows):
    where = "" if rows == TABLE_ROWS else " WHERE rowid <= %d" % rows
    return scan_rows("SELECT id, score FROM anomaly_scan('m', 'SELECT rowid, image FROM t%s')"
                     % where, rows, "scan_batched")


def part_connections(arg):
    n, info = arg["n"], arg["info"]
    rss0, _ = mem()
    held, per = [], []
    prev = rss0
    for k in range(1, n + 1):
        con = connect()
        rss_open, _ = mem()
        cur = con.execute("SELECT anomaly_score(image, 'm') FROM t")
        score = cur.fetchone()[0]
        rss, hwm = mem()
        held.append((con, cur))     # the statement stays open: the model stays held
        per.append({"connection": k, "rss_kb": rss, "hwm_kb": hwm,
                    "open_and_load_kb": rss_open - prev, "first_score_kb": rss - rss_open,
                    "increment_kb": rss - prev, "score": score})
        log("connections: %d open, VmRSS %d kB (+%d kB)" % (k, rss, rss - prev))
        prev = rss
    cache_kib = held[0][0].execute("PRAGMA cache_size").fetchone()[0]
    for con, cur in held:
        cur.close()
        con.close()
    weight_bytes = info["params"] * 4
    later = [p["increment_kb"] for p in per[1:]]
    out = {
        "model": MODEL, "params": info["params"], "buffers": info.get("buffers", 0),
        "file_bytes": info["bytes"], "page_cache_size": cache_kib,
        "weight_bytes_f32": weight_bytes, "weight_mb_f32": round(weight_bytes / 1e6, 3),
        "rss_before_kb": rss0, "per_connection": per,
        "first_connection_mb": mb(per[0]["increment_kb"]),
        "scores_equal": len({p["score"] for p in per}) == 1,
    }
    if later:
        mean_kb = sum(later) / len(later)
        out.update({
            "later_connection_mean_mb": mb(mean_kb), "later_connection_max_mb": mb(max(later)),
            "later_mean_over_weights": round(mean_kb * 1024 / weight_bytes, 4),
            "one_copy": mean_kb * 1024 < weight_bytes / 2,
        })
    return out


def part_models(models):
    con = connect()
    rss0, _ = mem()
    held = []

    def score(name):
        cur = con.execute("SELECT anomaly_score(image, ?) FROM t", (name,))
        cur.fetchone()
        held.append(cur)
        return mem()[0]

    warm = score(model_name(WARMUP_MODEL))
    log("models: warm-up on %s, VmRSS %d kB (+%d kB)" % (WARMUP_MODEL, warm, warm - rss0))
    prev, rows = warm, []
    for path, info in models:
        name = model_name(path)
        rss = score(name)
        params = info["params"]
        inc = rss - prev
        rows.append({"file": path, "name": name, "file_bytes": info["bytes"],
                     "params": params, "buffers": info.get("buffers", 0),
                     "weight_bytes_f32": params * 4, "rss_kb": rss, "increment_kb": inc,
                     "increment_mb": mb(inc),
                     "increment_over_weights": round(inc * 1024 / (params * 4), 3)})
        log("models: %s, VmRSS %d kB (+%d kB; weights %d bytes)" % (name, rss, inc, params * 4))
        prev = rss
    again = score(rows[-1]["name"]) - prev if rows else None
    log("models: a second statement on the last model, +%s kB" % again)
    hwm = mem()[1]
    for cur in held:
        cur.close()
    con.close()
    return {"rss_before_kb": rss0, "warmup_model": WARMUP_MODEL,
            "warmup_increment_mb": mb(warm - rss0), "per_model": rows,
            "mean_increment_mb": mb(sum(r["increment_kb"] for r in rows) / len(rows)) if rows else None,
            "second_statement_same_model_mb": mb(again) if rows else None,
            "hwm_kb": hwm, "note": "statements held open: every model referenced at once"}


def run_part(part, arg):
    """Runs one part in a child process; returns its JSON."""
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--arg", json.dumps(arg)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return {"error": "part %s failed (status %d)" % (part, p.returncode)}
    return json.loads(p.stdout.strip().splitlines()[-1])


def notes_for(res):
    notes = []
    for key in ("scan", "scan_batched"):
        r = res.get(key, {})
        if "skipped" in r:
            notes.append("%s skipped: %s" % (key, r["skipped"]))
        elif "rss_growth_mb" in r and not r["flat"]:
            notes.append("%s not flat: VmRSS grew %.2f MB from row %d to row %d (%.1f bytes/row)"
                         % (key, r["rss_growth_mb"], r["growth_from_row"], r["growth_to_row"],
                            r["rss_growth_bytes_per_row"]))
        if r.get("rss_range_mb", 0) > FLAT_MB:
            notes.append("%s: VmRSS moved within %.2f MB between samples from row %d on "
                         "(net growth %.2f MB)" % (key, r["rss_range_mb"], r["growth_from_row"],
                                                   r["rss_growth_mb"]))
    c = res.get("connections", {})
    if c.get("one_copy") is False:
        notes.append("connections: a later connection cost %.2f MB on average, over half the "
                     "model's %.2f MB of weights" % (c["later_connection_mean_mb"], c["weight_mb_f32"]))
    elif c.get("later_connection_max_mb", 0) * 1e6 > c.get("weight_bytes_f32", 0) / 2:
        notes.append("connections: RSS rises in steps of up to %.2f MB (the model file is %.2f MB) "
                     "though later connections cost %.2f MB on average"
                     % (c["later_connection_max_mb"], c["file_bytes"] / 1e6,
                        c["later_connection_mean_mb"]))
    if c.get("scores_equal") is False:
        notes.append("connections: the connections' scores of row 1 differ")
    for m in res.get("models", {}).get("per_model", []):
        r = m["increment_over_weights"]
        if r < 0.5 or r > 1.5:
            notes.append("models: %s cost %.2f MB, %.2fx its float32 weights"
                         % (m["name"], m["increment_mb"], r))
    return notes


def main():
    ap = argparse.ArgumentParser(description="sqlite-anomaly memory benchmark")
    ap.add_argument("--quick", action="store_true", help="20,000 rows and 3 connections")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        arg = json.loads(a.arg)
        fn = {"scan": part_scan, "scan_batched": part_scan_batched,
              "connections": part_connections, "models": part_models}[a.part]
        print(json.dumps(fn(arg)), flush=True)
        return
    if not os.path.exists(EXT + ".so"):
        sys.exit("memory_bench: %s.so missing: run make -j2 from the repository root" % EXT)
    rows, conns = (20000, 3) if a.quick else (TABLE_ROWS, 8)
    t0 = time.perf_counter()
    infos, dups, versions = setup()
    res = {"quick": a.quick, "rows": rows, "connections_opened": conns,
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")},
           **versions, "db": DB, "sample_every": SAMPLE_EVERY}
    log("scan: %d rows" % rows)
    res["scan"] = run_part("scan", rows)
    log("scan_batched: %d rows" % rows)
    res["scan_batched"] = run_part("scan_batched", rows)
    log("connections: %d" % conns)
    res["connections"] = run_part("connections", {"n": conns, "info": infos[0][1]})
    log("models: %d distinct files" % (len(infos) - 1))
    res["models"] = run_part("models", infos[1:])
    if dups:
        res["models"]["duplicates_skipped"] = dups
    res["notes"] = notes_for(res)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
