"""bench.py - sqlite-anomaly's benchmarks (make bench), driven from tests/bench/run.sh.

  tests/bench/run.sh                  (make bench; BENCH_QUICK=1 for a smoke run)

Runs, from the repository root, after run.sh has built anomaly.so and the C
helpers into build/bench/:

  1. Fashion-MNIST one class normal (../shared/eval.md 1A): the PCA and 1-NN
     baselines (build/bench/baselines) beside the test AUROC of each GANomaly
     model, per score part and for the calibrated combination.
  2. Scoring throughput, images/second: ours through SQL (batch 1, PNG decode
     and fit included), our core alone on tensors (batch 1 and 64), and the
     PyTorch reference on the same weights and inputs (batch 1 and 64).
  3. Training: seconds per batch of 64 at full size, anomaly_train against
     the PyTorch reference's training step.

Timed runs alternate ours and the peer and are repeated; the report gives
medians and the median of the paired ratios. Writes build/bench/report.md
(also printed) and build/bench/results.json. Only the standard library is
used here; torch is imported by the PyTorch scripts only, and their columns
are left out when it is missing.

Environment (all optional):
  BENCH_QUICK=1          few images and repeats: a smoke run, not a result
  BENCH_THREADS=n        OpenBLAS and torch threads (1)
  BENCH_REPEATS=n        scoring repeats (5; quick 2)
  BENCH_SCORE_IMAGES=n   test images per scoring run (2000; quick 256)
  BENCH_TRAIN_IMAGES=n   images given to anomaly_train for the training
                         timing, 10% held out (1500, i.e. 21 batches; quick 200)
  BENCH_TRAIN_REPEATS=n  training repeats (3; quick 1)
  BENCH_TEST_LIMIT=n     score only test images with idx < n (all; quick 1000)
  BENCH_MODELS=dir       where the pretrained models are (models)
  BENCH_CLASSES="0 1 6"  classes of the AUROC table (all with a model, or 0..9)
  BENCH_TRAIN=1          train fresh models for the AUROC table instead, with
  BENCH_EPOCHS=n         anomaly_train epochs (15) and
  BENCH_SEEDS="0 1 2"    seeds (0); quick mode trains on the first 640 normals
  BENCH_PARTS="accuracy speed train"   which parts to run (these three by default);
                         add "methods" for section 4: the other detectors trained
                         on one class with tests/bench/method_auroc.sh (hours), or
                         "methods_speed" for its speed table alone, on the models
                         an earlier "methods" run left in build/bench/
  BENCH_METHODS="anogan:{\"steps\":100}:1000 skipganomaly egbad alad:{\"nf\":64} defectgan caae"
                         section 4's runs: method[:options JSON[:test images]],
                         white-space separated (no spaces inside the JSON)
  BENCH_METHOD_CLASS=1   section 4's normal class
  BENCH_METHOD_IMAGES=n  section 4's speed table: test images each trained
                         detector scores through SQL (400; AnoGAN at its default
                         500 search steps scores n/40 of them)
"""

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.getcwd()
OUT = "build/bench"
DB = OUT + "/fashion.db"
DATA = "/usr/share/datasets/fashion-mnist"
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# eval.md 1A: the PyTorch reference of GANomaly on this protocol (seed 0, final epoch)
TORCH_REF_AUROC = {0: 0.904, 1: 0.985, 6: 0.826}
EVAL_MD_NN = [0.915, 0.990, 0.893, 0.941, 0.909, 0.921, 0.830, 0.987, 0.874, 0.966]
EVAL_MD_PCA_MEAN = 0.898


def env_int(name, default, quick_default=None):
    v = os.environ.get(name)
    if v:
        return int(v)
    return quick_default if QUICK and quick_default is not None else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
THREADS = env_int("BENCH_THREADS", 1)
REPEATS = env_int("BENCH_REPEATS", 5, 2)
SCORE_IMAGES = env_int("BENCH_SCORE_IMAGES", 2000, 256)
TRAIN_IMAGES = env_int("BENCH_TRAIN_IMAGES", 1500, 200)
TRAIN_REPEATS = env_int("BENCH_TRAIN_REPEATS", 3, 1)
TEST_LIMIT = env_int("BENCH_TEST_LIMIT", 0, 1000)
MODELS = os.environ.get("BENCH_MODELS", "models")
TRAIN = os.environ.get("BENCH_TRAIN", "") not in ("", "0")
EPOCHS = env_int("BENCH_EPOCHS", 15)
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0").split()]
CLASSES = [int(c) for c in os.environ.get("BENCH_CLASSES", "").split()] or None
PARTS = os.environ.get("BENCH_PARTS", "accuracy speed train").split()

CORETYPE = os.environ.get("OPENBLAS_CORETYPE", "")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
if CORETYPE:
    ENV["OPENBLAS_CORETYPE"] = CORETYPE
ENV_TEXT = "OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d" % (
    CORETYPE or "(unset)", THREADS, THREADS)


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def run(cmd, stdin=None, check=True):
    """Run cmd (a list) with the benchmark environment; returns (stdout, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, input=stdin, env=ENV, cwd=ROOT, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (status %d):\n%s" % (shlex.join(cmd), p.returncode,
                                                            p.stderr.strip()))
    return p.stdout, dt


def sql(script, db=DB):
    """Run a sqlite3 shell script (lines) on db with the extension loaded; returns stdout."""
    out, _ = run(["sqlite3", "-bail", db], stdin=".load ./anomaly\n" + script + "\n")
    return out


def write_script(name, text):
    """Write a sqlite3 script to build/bench/name, so that the report can name it."""
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        f.write(".load ./anomaly\n" + text + "\n")
    return path


def sql_file(path, db=DB):
    with open(path) as f:
        out, dt = run(["sqlite3", "-bail", db], stdin=f.read())
    return out, dt


def q(s):
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def median(xs):
    return statistics.median(xs) if xs else None


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = json.loads(run(["build/bench/baselines", "--info"])[0])
    sqlite_version = run(["sqlite3", "--version"])[0].split()[0]
    ext_version = sql("SELECT anomaly_version();", ":memory:").strip()
    torch_version = None
    if HAVE_TORCH:
        torch_version = run([PY, "-c", "import torch; print(torch.__version__)"])[0].strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "openblas_core": info["openblas_core"], "openblas_config": info["openblas_config"],
        "openblas_coretype_env": CORETYPE, "threads": THREADS,
        "sqlite": sqlite_version, "extension": ext_version, "torch": torch_version,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


def have_torch():
    try:
        run([PY, "-c", "import torch, numpy"])
        return True
    except (RuntimeError, OSError):
        return False


# ---------------------------------------------------------------------------
# 1. Accuracy: baselines and GANomaly AUROC
# ---------------------------------------------------------------------------

def import_fashion():
    log("importing Fashion-MNIST into %s (once)" % DB)
    sql(".read sql/import_fashion_mnist.sql")


def test_where():
    return "split = 'test'" + (" AND idx < %d" % TEST_LIMIT if TEST_LIMIT else "")


def baselines():
    cmd = ["build/bench/baselines"]
    if TEST_LIMIT:
        cmd += ["--test-limit", str(TEST_LIMIT)]
    log("baselines: " + shlex.join(cmd))
    out, dt = run(cmd)
    res = json.loads(out)
    res["command"] = ENV_TEXT + " " + shlex.join(cmd)
    return res


def model_auroc(name, cls, prelude=""):
    """AUROC of every score part of model name, and of the calibrated sum, on the test set;
    prelude (SQL) goes first in the script, e.g. the model's registration."""
    info = json.loads(sql("SELECT info FROM anomaly_models WHERE name = %s;" % q(name)))
    scales = info.get("calibration", {}).get("scales", {}) or {}
    parts = ["latent", "recon_l1", "recon_l2"]
    cols = ["'%s', anomaly_auroc(j ->> '$.%s', y)" % (p, p) for p in parts]
    if scales:
        expr = " + ".join("(j ->> '$.%s') / %.17g" % (k, v) for k, v in scales.items())
        cols.append("'calibrated', anomaly_auroc(%s, y)" % expr)
    script = write_script("auroc-%s.sql" % name, prelude + (
        "DROP TABLE IF EXISTS temp.s;\n"
        "CREATE TEMP TABLE s AS SELECT label <> %d AS y, anomaly_scores(image, %s) AS j\n"
        "  FROM fashion WHERE %s;\n"
        "SELECT json_object('n', count(*), 'anomalous', sum(y), %s) FROM s;")
        % (cls, q(name), test_where(), ", ".join(cols)))
    out, dt = sql_file(script)
    res = json.loads(out)
    res.update({"model": name, "class": cls, "scales": scales, "score_seconds": dt,
                "hparams": info.get("hparams"), "threshold": info.get("threshold"),
                "command": "%s sqlite3 %s < %s" % (ENV_TEXT, DB, script)})
    return res


def pretrained_models():
    found = []
    for c in range(10):
        path = os.path.join(MODELS, "fashion-ganomaly-class%d.safetensors" % c)
        if os.path.exists(path) and (CLASSES is None or c in CLASSES):
            found.append((c, path))
    return found


def accuracy():
    res = {"baselines": baselines(), "models": [], "mode": None}
    if TRAIN:
        classes = CLASSES if CLASSES is not None else list(range(10))
        limit = 640 if QUICK else None
        res["mode"] = ("trained here: %d epoch(s), seeds %s%s" % (
            EPOCHS, " ".join(map(str, SEEDS)),
            ", first %d normal training images only (quick)" % limit if limit else ""))
        for c in classes:
            for seed in SEEDS:
                name = "fm_c%d_s%d" % (c, seed)
                opts = json.dumps({"epochs": EPOCHS, "fit": "pad", "seed": seed, "quiet": True,
                                   "replace": True})
                src = ("fashion WHERE split = 'train' AND label = %d ORDER BY idx" % c)
                if limit:
                    src = "(SELECT image FROM %s LIMIT %d)" % (src, limit)
                script = write_script("train-%s.sql" % name,
                                      "SELECT anomaly_train(%s, 'ganomaly', image, %s) FROM %s;"
                                      % (q(name), q(opts), src))
                log("training class %d seed %d (%d epochs)" % (c, seed, EPOCHS))
                out, dt = sql_file(script)
                r = model_auroc(name, c)
                r.update({"seed": seed, "train": json.loads(out), "train_wall_seconds": dt,
                          "train_command": "%s sqlite3 %s < %s" % (ENV_TEXT, DB, script)})
                res["models"].append(r)
    else:
        res["mode"] = "reduced: 1 seed, pretrained models"
        for c, path in pretrained_models():
            name = "pretrained_c%d" % c
            reg = ("INSERT OR REPLACE INTO anomaly_models(name, model) VALUES (%s, "
                   "anomaly_model_from_file(%s));\n" % (q(name), q(path)))
            sql(reg)      # model_auroc reads its calibration first
            log("scoring the test set with %s" % path)
            r = model_auroc(name, c, reg)
            r.update({"seed": None, "file": path})
            res["models"].append(r)
    return res


# ---------------------------------------------------------------------------
# 2. Scoring throughput
# ---------------------------------------------------------------------------

def full_size_model():
    """A full-size GANomaly model file (nz 100, ngf 64): a pretrained one or a fresh 1-epoch one."""
    for c in range(10):
        path = os.path.join(MODELS, "fashion-ganomaly-class%d.safetensors" % c)
        if os.path.exists(path):
            return path, "pretrained " + path
    path = OUT + "/full-ganomaly.safetensors"
    log("no pretrained model: training a full-size model for 1 epoch on 200 images")
    sql("SELECT anomaly_train('bench_make_full', 'ganomaly', image, "
        "'{\"epochs\": 1, \"fit\": \"pad\", \"seed\": 0, \"quiet\": true, \"replace\": true}') "
        "FROM (SELECT image FROM fashion WHERE split = 'train' AND label = 0 ORDER BY idx LIMIT 200);\n"
        "SELECT writefile(%s, model) > 0 FROM anomaly_models WHERE name = 'bench_make_full';"
        % q(path))
    return path, "made here: anomaly_train 1 epoch on 200 class-0 images (weights barely trained; speed only)"


def speed_one(label, path, origin):
    n = SCORE_IMAGES
    name = "bench_" + label
    inputs = "%s/inputs-%s.f32" % (OUT, label)
    sql("INSERT OR REPLACE INTO anomaly_models(name, model) VALUES (%s, anomaly_model_from_file(%s));\n"
        "DROP TABLE IF EXISTS bench_images;\n"
        "CREATE TABLE bench_images AS SELECT image FROM fashion WHERE split = 'test' "
        "ORDER BY idx LIMIT %d;" % (q(name), q(path), n))
    script = write_script("score-%s.sql" % label, (
        "-- warm-up: parse the model, touch the pages\n"
        "SELECT sum(anomaly_score(image, %s)) FROM (SELECT image FROM bench_images LIMIT 64);\n"
        ".timer on\n"
        "SELECT sum(anomaly_score(image, %s)) FROM bench_images;") % (q(name), q(name)))
    core_cmd = ["build/bench/bench_core", path, "--images", str(n)]
    torch_cmd = [PY, "tests/bench/torch_score.py", path, inputs, str(n), "--threads", str(THREADS)]
    run(core_cmd + ["--dump", inputs])     # the inputs PyTorch scores
    reps = []
    for i in range(REPEATS):
        log("scoring %s: repeat %d of %d" % (label, i + 1, REPEATS))

        def ours_sql():
            out, _ = sql_file(script)
            m = re.search(r"Run Time: real ([0-9.]+)", out)
            lines = [s for s in out.splitlines() if s and not s.startswith("Run Time")]
            return {"seconds": float(m.group(1)), "images_per_second": n / float(m.group(1)),
                    "score_sum": float(lines[-1])}

        def core():
            return json.loads(run(core_cmd)[0])

        def pytorch():
            return json.loads(run(torch_cmd)[0]) if HAVE_TORCH else None

        order = [("sql", ours_sql), ("core", core), ("torch", pytorch)]
        if i % 2:
            order.reverse()           # alternate who goes first
        r = {k: f() for k, f in order}
        reps.append(r)
    def med(key, batch=None):
        vals = []
        for r in reps:
            v = r[key]
            if v is None:
                return None
            vals.append((v[batch] if batch else v)["images_per_second"])
        return median(vals)

    def paired(a, ab, b, bb):
        vals = []
        for r in reps:
            if r[a] is None or r[b] is None:
                return None
            x = (r[a][ab] if ab else r[a])["images_per_second"]
            y = (r[b][bb] if bb else r[b])["images_per_second"]
            vals.append(x / y)
        return {"median": median(vals), "min": min(vals), "max": max(vals)}

    core0 = reps[0]["core"]
    res = {
        "label": label, "file": path, "origin": origin, "images": n,
        "params": core0["params"], "shape": core0["shape"], "fit": core0["fit"],
        "sql_b1": med("sql"), "core_b1": med("core", "batch1"), "core_b64": med("core", "batch64"),
        "torch_b1": med("torch", "batch1"), "torch_b64": med("torch", "batch64"),
        "ratio_sql_torch_b1": paired("sql", None, "torch", "batch1"),
        "ratio_sql_torch_b64": paired("sql", None, "torch", "batch64"),
        "ratio_core_torch_b1": paired("core", "batch1", "torch", "batch1"),
        "ratio_core_torch_b64": paired("core", "batch64", "torch", "batch64"),
        "score_sum": {"sql": reps[0]["sql"]["score_sum"], "core": core0["batch1"]["score_sum"],
                      "torch": reps[0]["torch"]["batch1"]["score_sum"] if reps[0]["torch"] else None},
        "repeats": reps,
        "commands": {
            "prepare": "%s sqlite3 %s \".load ./anomaly\" \"INSERT OR REPLACE INTO anomaly_models(name, model) "
                       "VALUES ('%s', anomaly_model_from_file('%s')); DROP TABLE IF EXISTS bench_images; CREATE TABLE bench_images AS SELECT image "
                       "FROM fashion WHERE split = 'test' ORDER BY idx LIMIT %d;\"" % (ENV_TEXT, DB, name, path, n),
            "sql": "%s sqlite3 %s < %s" % (ENV_TEXT, DB, script),
            "core": ENV_TEXT + " " + shlex.join(core_cmd),
            "torch": ENV_TEXT + " " + shlex.join(torch_cmd),
        },
    }
    return res


def speed():
    full, origin = full_size_model()
    return [speed_one("tiny", "tests/data/tiny-ganomaly.safetensors",
                      "tests/data (random weights, 32x32, nz 16, ngf 8)"),
            speed_one("full", full, origin)]


# ---------------------------------------------------------------------------
# 3. Training time
# ---------------------------------------------------------------------------

def training():
    opts = '{"epochs": 1, "fit": "pad", "seed": 0, "quiet": true, "replace": true}'
    script = write_script("train-speed.sql", (
        "SELECT anomaly_train('bench_train_speed', 'ganomaly', image, %s)\n"
        "  FROM (SELECT image FROM fashion WHERE split = 'train' AND label = 0 ORDER BY idx LIMIT %d);")
        % (q(opts), TRAIN_IMAGES))
    nb = (TRAIN_IMAGES - max(1, int(TRAIN_IMAGES * 0.1 + 0.5))) // 64   # as anomaly_train: 10% held out
    torch_cmd = [PY, "tests/bench/reference/ganomaly_train_bench.py", "--threads", str(THREADS),
                 "--batches", str(max(nb, 1))]
    reps = []
    for i in range(TRAIN_REPEATS):
        log("training speed: repeat %d of %d" % (i + 1, TRAIN_REPEATS))

        def ours():
            out, _ = sql_file(script)
            j = json.loads(out.strip().splitlines()[-1])
            return {"seconds": j["seconds"], "batches": j["batches_per_epoch"],
                    "seconds_per_batch": j["seconds"] / j["batches_per_epoch"], "summary": j}

        def pytorch():
            return json.loads(run(torch_cmd)[0]) if HAVE_TORCH else None

        order = [("ours", ours), ("torch", pytorch)]
        if i % 2:
            order.reverse()
        reps.append({k: f() for k, f in order})
    ours_spb = median([r["ours"]["seconds_per_batch"] for r in reps])
    torch_spb = median([r["torch"]["seconds_per_batch"] for r in reps]) if HAVE_TORCH else None
    ratios = [r["torch"]["seconds_per_batch"] / r["ours"]["seconds_per_batch"]
              for r in reps] if HAVE_TORCH else []
    return {
        "images": TRAIN_IMAGES, "batches": reps[0]["ours"]["batches"],
        "ours_seconds_per_batch": ours_spb, "torch_seconds_per_batch": torch_spb,
        "ours_seconds_per_epoch_84": ours_spb * 84,
        "torch_seconds_per_epoch_84": torch_spb * 84 if torch_spb else None,
        "speed_ratio": ({"median": median(ratios), "min": min(ratios), "max": max(ratios)}
                        if ratios else None),
        "repeats": reps,
        "commands": {"ours": "%s sqlite3 %s < %s" % (ENV_TEXT, DB, script),
                     "torch": ENV_TEXT + " " + shlex.join(torch_cmd)},
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def f3(x):
    return "–" if x is None else "%.3f" % x


def f0(x):
    return "–" if x is None else "%.0f" % x


def fr(r):
    if not r:
        return "–"
    if r["min"] == r["max"]:
        return "%.2f×" % r["median"]
    return "%.2f× (%.2f–%.2f)" % (r["median"], r["min"], r["max"])


def report(res):
    m = res["machine"]
    L = []
    L.append("# sqlite-anomaly benchmarks%s" % (" (BENCH_QUICK smoke run: not a result)" if QUICK else ""))
    L.append("")
    L.append("- date: %s" % m["date"])
    L.append("- machine: %s, %d cores visible, Linux %s; load average at start %s, at end %s"
             % (m["cpu"], m["cores"], m["kernel"], " ".join(m["loadavg_start"]),
                " ".join(m["loadavg_end"])))
    L.append("- OpenBLAS: core %s (`openblas_get_corename()`; OPENBLAS_CORETYPE=%s), %s"
             % (m["openblas_core"], m["openblas_coretype_env"] or "unset", m["openblas_config"]))
    L.append("- threads: %d (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and torch.set_num_threads)" % m["threads"])
    L.append("- sqlite-anomaly %s, SQLite %s, PyTorch %s" % (m["extension"], m["sqlite"],
                                                        m["torch"] or "not installed (its columns are empty)"))
    L.append("- produced by `make bench` (tests/bench/run.sh); every table names its commands, "
             "run from the repository root")
    L.append("")

    if "accuracy" in res:
        a = res["accuracy"]
        b = a["baselines"]
        L.append("## 1. Fashion-MNIST, one class normal: test AUROC")
        L.append("")
        ntest = b["test_images"]
        L.append("Protocol: ../shared/eval.md 1A. Test set: %s. GANomaly models: %s."
                 % ("all 10,000 test images" if ntest == 10000 else
                    "the first %d test images only (BENCH_TEST_LIMIT)" % ntest, a["mode"]))
        L.append("Baselines on pixels in [0, 1] (784 values), fitted on all 6,000 normal training "
                 "images of the class (no hold-out): **PCA** = squared reconstruction error from "
                 "the first %d principal components; **1-NN** = squared distance to the nearest "
                 "normal training image. GANomaly: 28×28 padded to 32×32, [-1, 1]; parts as "
                 "`anomaly_scores` reports them: **latent** = mean (z − z′)², the score (the "
                 "authors' choice); **L1**, **L2** = mean |x − x̂|, mean (x − x̂)²; **calibrated** = "
                 "Σ part / its median over the model's held-out normals "
                 "(`info ->> '$.calibration.scales'`). **PyTorch ref** = eval.md's PyTorch "
                 "GANomaly on this protocol (seed 0)." % b["components"])
        L.append("")
        by_class = {}
        for r in a["models"]:
            by_class.setdefault(r["class"], []).append(r)
        multi = any(len(v) > 1 for v in by_class.values())
        L.append("| class | PCA | 1-NN | GANomaly latent | L1 | L2 | calibrated | PyTorch ref |")
        L.append("|---|---|---|---|---|---|---|---|")
        sums = {"pca": [], "nn": [], "latent": [], "recon_l1": [], "recon_l2": [], "calibrated": []}

        def cell(rs, key):
            vals = [r.get(key) for r in rs if r.get(key) is not None]
            if not vals:
                return "–", None
            mu = statistics.mean(vals)
            if len(vals) > 1:
                return "%.3f ± %.3f" % (mu, statistics.stdev(vals)), mu
            return "%.3f" % mu, mu

        for cr in b["classes"]:
            c = cr["class"]
            rs = by_class.get(c, [])
            row = ["%d" % c, "%.3f" % cr["pca"], "%.3f" % cr["nn"]]
            sums["pca"].append(cr["pca"])
            sums["nn"].append(cr["nn"])
            for key in ("latent", "recon_l1", "recon_l2", "calibrated"):
                text, mu = cell(rs, key)
                row.append(text)
                if mu is not None:
                    sums[key].append(mu)
            row.append(f3(TORCH_REF_AUROC.get(c)))
            L.append("| " + " | ".join(row) + " |")
        nmod = len(sums["latent"])
        row = ["mean, all", "%.3f" % statistics.mean(sums["pca"]), "%.3f" % statistics.mean(sums["nn"])]
        for key in ("latent", "recon_l1", "recon_l2", "calibrated"):
            row.append("%.3f" % statistics.mean(sums[key]) if len(sums[key]) == len(b["classes"]) else "–")
        L.append("| " + " | ".join(row + [""]) + " |")
        if 0 < nmod < len(b["classes"]):
            sub = [i for i, cr in enumerate(b["classes"]) if cr["class"] in by_class]
            label = "mean, classes %s" % " ".join(str(b["classes"][i]["class"]) for i in sub)
            row = [label, "%.3f" % statistics.mean(sums["pca"][i] for i in sub),
                   "%.3f" % statistics.mean(sums["nn"][i] for i in sub)]
            for key in ("latent", "recon_l1", "recon_l2", "calibrated"):
                row.append("%.3f" % statistics.mean(sums[key]) if len(sums[key]) == nmod else "–")
            refs = [TORCH_REF_AUROC.get(b["classes"][i]["class"]) for i in sub]
            row.append("%.3f" % statistics.mean(refs) if None not in refs else "")
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        if nmod < len(b["classes"]):
            L.append("GANomaly models exist for %d of %d classes%s; compare them with the "
                     "baselines on the last row." % (nmod, len(b["classes"]),
                                                    "" if TRAIN else " (the others have no file in %s/)" % MODELS))
        if multi:
            L.append("± is the standard deviation over seeds.")
        if ntest == 10000:
            L.append("eval.md's figures for the same baselines: PCA %.3f mean, 1-NN %.3f mean "
                     "(per class %s)." % (EVAL_MD_PCA_MEAN, statistics.mean(EVAL_MD_NN),
                                          ", ".join("%.3f" % v for v in EVAL_MD_NN)))
        L.append("")
        L.append("Commands:")
        L.append("")
        L.append("    " + b["command"] + "   # baselines, %.1f s" % b["seconds"])
        for r in a["models"]:
            if r.get("train_command"):
                L.append("    " + r["train_command"] + "   # %.0f s" % r["train_wall_seconds"])
            L.append("    " + r["command"] + "   # %d images scored in %.1f s"
                     % (r["n"], r["score_seconds"]))
        L.append("")

    if "speed" in res:
        L.append("## 2. Scoring throughput, images/second")
        L.append("")
        L.append("Median of %d repeat(s), ours and PyTorch alternating. **SQL** = `SELECT "
                 "sum(anomaly_score(image, m)) FROM bench_images` over the first N Fashion-MNIST "
                 "test PNGs: one image at a time (batch 1), PNG decode and fit included. **core** = "
                 "model_score on tensors already decoded and fitted (tests/bench/bench_core.c). "
                 "**PyTorch** = the reference NetG (tests/bench/reference/ganomaly_ref.py) on the "
                 "same weights and the same fitted inputs, eval mode, no_grad, decode and fit not "
                 "timed. Ratios are ours ÷ PyTorch throughput (above 1: ours is faster), median "
                 "(min–max) of the per-repeat ratios." % REPEATS)
        L.append("")
        L.append("| model | params | N | SQL b1 | core b1 | core b64 | PyTorch b1 | PyTorch b64 | "
                 "SQL b1 ÷ PyTorch b1 | SQL b1 ÷ PyTorch b64 | core b1 ÷ PyTorch b1 | core b64 ÷ PyTorch b64 |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in res["speed"]:
            L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s["label"], "{:,}".format(s["params"]), s["images"], f0(s["sql_b1"]),
                f0(s["core_b1"]), f0(s["core_b64"]), f0(s["torch_b1"]), f0(s["torch_b64"]),
                fr(s["ratio_sql_torch_b1"]), fr(s["ratio_sql_torch_b64"]),
                fr(s["ratio_core_torch_b1"]), fr(s["ratio_core_torch_b64"])))
        L.append("")
        for s in res["speed"]:
            ss = s["score_sum"]
            L.append("- %s: %s; input %s, fit %s. Sum of the N scores (same weights, same "
                     "images): SQL %.7g, core %.7g, PyTorch %s." % (
                         s["label"], s["origin"], "×".join(map(str, s["shape"])), s["fit"],
                         ss["sql"], ss["core"], "%.7g" % ss["torch"] if ss["torch"] is not None else "–"))
        L.append("")
        L.append("Commands (per model):")
        L.append("")
        for s in res["speed"]:
            for k in ("prepare", "sql", "core", "torch"):
                L.append("    " + s["commands"][k])
        L.append("")

    if "train" in res:
        t = res["train"]
        L.append("## 3. Training time, GANomaly full size (nz 100, ngf 64, 32×32×1, batch 64)")
        L.append("")
        L.append("Ours: `anomaly_train` for 1 epoch on the first %d class-0 training images (%d "
                 "batches after the 10%% hold-out); seconds from its JSON summary (training loop "
                 "only: no decode, no calibration; the first batch is timed) ÷ batches_per_epoch. "
                 "PyTorch: the reference's training step (ganomaly_train_bench.py, random batches, "
                 "1 untimed warm-up batch) for the same number of batches. Median of %d repeat(s), "
                 "alternating. Epoch = 5,400 images = 84 batches."
                 % (t["images"], t["batches"], len(t["repeats"])))
        L.append("")
        L.append("| | seconds per batch | seconds per epoch (84 batches) |")
        L.append("|---|---|---|")
        L.append("| ours (anomaly_train) | %s | %s |" % (f3(t["ours_seconds_per_batch"]),
                                                      "%.1f" % t["ours_seconds_per_epoch_84"]))
        L.append("| PyTorch reference | %s | %s |" % (
            f3(t["torch_seconds_per_batch"]),
            "%.1f" % t["torch_seconds_per_epoch_84"] if t["torch_seconds_per_epoch_84"] else "–"))
        L.append("| ours ÷ PyTorch speed (above 1: ours is faster) | %s | |" % fr(t["speed_ratio"]))
        L.append("")
        L.append("Commands:")
        L.append("")
        L.append("    " + t["commands"]["ours"])
        L.append("    " + t["commands"]["torch"])
        L.append("")
    if res.get("methods"):
        L.append("")
        L.append("## 4. The other detectors (reduced: one class, one seed)")
        L.append("")
        L.append("`tests/bench/method_auroc.sh` trains each with `anomaly_train` on the class's "
                 "training images (10% held out, 15 epochs, seed 0, padded to 32×32) and gives "
                 "the test AUROC of every score part.")
        L.append("")
        L.append("| method | class | options | test images | AUROC of each part |")
        L.append("|---|---|---|---|---|")
        for r in res["methods"]:
            parts = ", ".join("%s %s" % (k, v) for k, v in r["auroc"].items())
            L.append("| %s | %d | `%s` | idx < %d | %s |" % (r["method"], r["class"], r["options"],
                                                            r["test_limit"], parts))
        L.append("")
        L.append("Commands:")
        L.append("")
        for r in res["methods"]:
            L.append("    " + r["command"] + "   # " + r["summary"])
    if res.get("methods_speed"):
        L.append("")
        L.append("Scoring time per image through SQL (`SELECT sum(anomaly_score(image, 'm')) ...`, "
                 "one image a call, PNG decode included; the fastest of 2 runs), the models above, "
                 "same run. **AnoGAN ÷** = how many images the method scores in the time AnoGAN's "
                 "default search takes for one.")
        L.append("")
        L.append("| method | images | ms per image | AnoGAN (500 steps) ÷ method |")
        L.append("|---|---|---|---|")
        for o in res["methods_speed"]:
            L.append("| %s | %d | %.2f | %s |" % (o["method"], o["images"], o["ms_per_image"],
                                                 "%.0f×" % o["anogan_ratio"] if o["anogan_ratio"] else "–"))
        L.append("")
        L.append("Commands:")
        L.append("")
        for o in res["methods_speed"]:
            L.append("    " + o["command"])
    return "\n".join(L)


HAVE_TORCH = False
# method[:options JSON[:test images]], split at white space: no spaces in the JSON
DEFAULT_METHODS = 'anogan:{"steps":100}:1000 skipganomaly egbad alad:{"nf":64} defectgan caae'


def method_specs():
    return os.environ.get("BENCH_METHODS", DEFAULT_METHODS).split()


def methods():
    """Section 4: each other detector trained on one class by method_auroc.sh."""
    cls = env_int("BENCH_METHOD_CLASS", 1)
    rows = []
    for spec in method_specs():
        method, _, rest = spec.partition(":")     # method[:options JSON[:test images]]
        opts, limit = rest or "{}", "10000"
        m = re.match(r"^(.*):(\d+)$", rest)
        if m:
            opts, limit = m.group(1) or "{}", m.group(2)
        if QUICK:
            opts = json.dumps(dict(json.loads(opts), epochs=1))
            limit = str(min(int(limit), 200))
        cmd = ["tests/bench/method_auroc.sh", method, str(cls), opts, limit]
        log("training %s on class %d (method_auroc.sh)" % (method, cls))
        out, _ = run(cmd)
        lines = [ln for ln in out.strip().splitlines() if ln]
        parts = dict(ln.split("|", 1) for ln in lines if "|" in ln and not ln.startswith("{"))
        rows.append({"method": method, "class": cls, "options": opts, "test_limit": int(limit),
                     "auroc": parts, "summary": lines[-1],
                     "command": ENV_TEXT + " " + " ".join(shlex.quote(c) for c in cmd)})
    return rows


def methods_speed(rows):
    """Section 4's speed table: each model trained by methods() scores the same
    first test images through SQL, one image a call, in one run; AnoGAN at its
    default 500 search steps on fewer images (its cost is per image)."""
    n = env_int("BENCH_METHOD_IMAGES", 400, 40)
    out = []
    for r in rows:
        db = "build/bench/%s-class%d.db" % (r["method"], r["class"])
        if not os.path.exists(db):
            continue
        runs = [(r["method"], "", n)]
        if r["method"] == "anogan":
            # explicit steps: a model may store another default (method_auroc.sh
            # trains with 100 to keep calibration short)
            runs = [("anogan, 100 steps", ', \'{"steps": 100}\'', max(n // 8, 2)),
                    ("anogan, 500 steps (default)", ', \'{"steps": 500}\'', max(n // 40, 1))]
        for label, opt, k in runs:
            script = write_script("speed-%s.sql" % re.sub(r"[^a-z0-9]+", "_", label),
                                  "SELECT sum(anomaly_score(image, 'm'%s)) FROM fashion "
                                  "WHERE split = 'test' AND idx < %d;" % (opt, k))
            times = []
            for _ in range(2):
                _, dt = sql_file(script, db)
                times.append(dt)
            t = min(times)
            out.append({"method": label, "images": k, "seconds": t, "ms_per_image": 1000 * t / k,
                        "command": ENV_TEXT + " sqlite3 %s < %s" % (db, script)})
    base = [o for o in out if o["method"] == "anogan, 500 steps (default)"]
    for o in out:
        o["anogan_ratio"] = base[0]["ms_per_image"] / o["ms_per_image"] if base else None
    return out


def main():
    global HAVE_TORCH
    os.makedirs(OUT, exist_ok=True)
    HAVE_TORCH = have_torch()
    if not HAVE_TORCH:
        log("torch (python3-torch) or numpy not found: the PyTorch columns stay empty")
    res = {"quick": QUICK, "settings": {
        "threads": THREADS, "repeats": REPEATS, "score_images": SCORE_IMAGES,
        "train_images": TRAIN_IMAGES, "train_repeats": TRAIN_REPEATS, "test_limit": TEST_LIMIT,
        "models": MODELS, "train": TRAIN, "epochs": EPOCHS, "seeds": SEEDS, "classes": CLASSES,
        "parts": PARTS}}
    res["machine"] = machine_info()
    import_fashion()
    if "accuracy" in PARTS:
        res["accuracy"] = accuracy()
    if "speed" in PARTS:
        res["speed"] = speed()
    if "train" in PARTS:
        res["train"] = training()
    if "methods" in PARTS:
        res["methods"] = methods()
        res["methods_speed"] = methods_speed(res["methods"])
    elif "methods_speed" in PARTS:
        # the speed table alone, over the models an earlier "methods" run left
        cls = env_int("BENCH_METHOD_CLASS", 1)
        res["methods_speed"] = methods_speed([{"method": m.partition(":")[0], "class": cls}
                                              for m in method_specs()])
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    text = report(res)
    with open(OUT + "/report.md", "w") as f:
        f.write(text + "\n")
    with open(OUT + "/results.json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(text)
    log("wrote %s/report.md and %s/results.json" % (OUT, OUT))


if __name__ == "__main__":
    main()
