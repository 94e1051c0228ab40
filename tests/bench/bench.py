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
  4. ("methods", "methods_speed") The other detectors trained on one
     Fashion-MNIST class by tests/bench/method_auroc.sh, and their scoring
     speed.
  5. ("tiles") The magnetic-tile set (../shared/eval.md 1B): each detector
     trained and evaluated by tests/bench/tile_auroc.sh: image AUROC of each
     score part, pixel AUROC, F1 at the model's threshold, a heat-map gallery.
     In the default parts when the tile folder exists (not in quick mode:
     tile_auroc.sh overwrites its models in build/bench/tiles-METHOD.db).
  6. ("peers") Speed against ONNX Runtime and PyTorch: GANomaly (nz 100,
     ngf 64, 1 channel) at 32x32 and 64x64, batch 1 and 64, 1 and 2 threads:
     our core (bench_core --threads T), ONNX Runtime (tests/bench/peers/
     onnx_score.js, onnxruntime-node installed into build/bench/node on first
     use) and PyTorch (torch_score.py) on the same weights and inputs (models
     made once by tests/bench/peers/make_models.py), beside one core's FMA
     peak measured in the same run (build/bench/fma_peak); GFLOP/s and the
     issue's two targets. Needs torch (it makes the models); without node or
     npm the ONNX Runtime columns stay empty.
  7. ("methods_torch") Every detector against its PyTorch reference: the
     models that tests/bench/method_auroc.sh left in build/bench/METHOD-class1.db
     (extracted to build/bench/methods/METHOD.safetensors; a method without
     its DB is skipped, with the reason) scored by build/bench/bench_core and
     by tests/bench/torch_methods.py on the same inputs, batch 1 and 64; AnoGAN
     at the search its model stores (fewer repeats) and at the default 500
     steps on a few images (a copy of the model with steps 500 in its
     metadata). Needs torch. About 6 to 9 minutes.
  ("scan") End to end in SQL over PNG BLOBs: tests/bench/scan_bench.py times
     anomaly_score row by row against anomaly_scan at 1 and 2 threads, with
     decoding's share measured apart (bench_core). About 2 minutes.
  ("threads") What anomaly_config('threads', n) does: tests/bench/threads_bench.py
     times anomaly_score, anomaly_scan and one epoch of anomaly_train with the
     BLAS at 1 and at 2 threads. About 2 minutes.
  8. ("memory") Resident memory while scoring: tests/bench/memory_bench.py
     (VmRSS along a 100,000-row scan, plain and batched; per connection; per
     model). About 5 to 10 minutes on a quiet machine, 17 on a loaded one; not in
     quick mode's default parts (its --quick still scans 40,000 rows).
  ("figures") ROC pictures with build/bench/roc_plot: the section-4 detectors
     on their class (docs/img/roc-fashion-class1.png, from the
     build/bench/METHOD-class1-scores.csv that method_auroc.sh writes, exported
     first from an older run's METHOD-class1.db when missing) and the tile
     detectors (docs/img/roc-tiles.png, with their galleries copied to
     docs/img/tiles-gallery-METHOD.png). Runs by itself, and after "methods"
     and "tiles".

Timed runs alternate ours and the peer and are repeated; the report gives
medians and the median of the paired ratios. Writes build/bench/report.md
(also printed) and build/bench/results.json, and each part's results, with
the machine and date of its run, to build/bench/results/PART.json (a later run
of other parts leaves them; quick runs write build/bench/results/quick/).
Then, unless BENCH_QUICK or BENCH_DOCS=0, it rewrites the generated blocks of
docs/benchmarks.md, the lines between "<!-- bench:NAME -->" and
"<!-- /bench:NAME -->", for the parts that ran (blocks "tiles", "peers",
"methods_torch", "scan", "memory" and "figure_fashion"; a block without its markers is
appended at the end) and
leaves every other line alone; pictures then go to docs/img/, else to
build/bench/img/. Only the standard library is used here; torch is imported
by the PyTorch scripts only, and their columns are left out when it is missing.

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
  BENCH_PARTS="accuracy speed train peers methods_torch scan threads memory"   which parts to run
                         (these eight by default, and "tiles" when the tile folder
                         exists; quick mode leaves out "memory" and "tiles");
                         add "methods" for section 4: the other detectors
                         trained on one class with tests/bench/method_auroc.sh
                         (hours), or "methods_speed" for its speed table alone, on
                         the models an earlier "methods" run left in build/bench/;
                         "figures" for the ROC pictures alone
  BENCH_METHODS="anogan:{\"steps\":100}:1000 skipganomaly egbad alad:{\"nf\":64} defectgan caae"
                         section 4's runs: method[:options JSON[:test images]],
                         white-space separated (no spaces inside the JSON)
  BENCH_METHOD_CLASS=1   section 4's normal class
  BENCH_METHOD_IMAGES=n  section 4's speed table: test images each trained
                         detector scores through SQL (400; AnoGAN at its default
                         500 search steps scores n/40 of them)
  BENCH_TILE_METHODS="ganomaly skipganomaly egbad alad:{\"nf\":64} defectgan caae anogan:{\"steps\":100}"
                         section 5's runs: method[:options JSON] (quick mode adds
                         {"epochs": 1})
  BENCH_TILE_REUSE=1     evaluate the tile models an earlier run left (trained with
                         the same options) instead of training them again (0)
  BENCH_TILE_CMD="sh tests/bench/tile_auroc.sh"   the command run as CMD METHOD
                         OPTIONS for each tile method (for tests: a stand-in that
                         prints tile_auroc.sh's output)
  TILE_DIR=dir           the magnetic-tile folder (../shared/data/magnetic_tile),
                         passed on to tile_auroc.sh
  BENCH_TILE_LOGS=dir    read each method's tile_auroc.sh output from dir/tiles-METHOD.txt
                         (runs made earlier, e.g. several at once) instead of running it
  BENCH_PEER_IMAGES_32=n, BENCH_PEER_IMAGES_64=n   images per run of part "peers"
                         (1024 and 256; quick 64 and 64)
  BENCH_TORCH_IMAGES=n   images per run of part "methods_torch" (256; quick 64)
  BENCH_ANOGAN_SEARCH_IMAGES=n   its images for AnoGAN's 500-step search, 1 repeat
                         (16; quick 2)
  BENCH_DOCS=0           leave docs/ alone (pictures go to build/bench/img/)
"""

import datetime
import json
import os
import platform
import re
import shlex
import shutil
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
TILE_DIR = os.environ.get("TILE_DIR", "../shared/data/magnetic_tile")
HAVE_TILES = os.path.isdir(os.path.join(TILE_DIR, "train", "good"))
PARTS = os.environ.get("BENCH_PARTS", "accuracy speed train peers methods_torch scan threads" + (
    " memory" if not QUICK else "") + (" tiles" if HAVE_TILES and not QUICK else "")).split()
DOCS = os.environ.get("BENCH_DOCS", "") != "0" and not QUICK
DOC = "docs/benchmarks.md"
IMG = "docs/img" if DOCS else OUT + "/img"          # where the pictures go
RESULTS = OUT + ("/results/quick" if QUICK else "/results")
ROC_PLOT = OUT + "/roc_plot"

CORETYPE = os.environ.get("OPENBLAS_CORETYPE", "")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
if CORETYPE:
    ENV["OPENBLAS_CORETYPE"] = CORETYPE
ENV_TEXT = "OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d" % (
    CORETYPE or "(unset)", THREADS, THREADS)


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class CommandError(RuntimeError):
    """A command that exited with a status other than 0 (in .status)."""

    def __init__(self, cmd, status, stderr):
        super().__init__("%s failed (status %d):\n%s" % (shlex.join(cmd), status, stderr.strip()))
        self.status = status


def run(cmd, stdin=None, check=True, env=None):
    """Run cmd (a list) with the benchmark environment, plus env (a dict) if given;
    returns (stdout, seconds). Raises CommandError when check and it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, input=stdin, env=dict(ENV, **env) if env else ENV, cwd=ROOT,
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise CommandError(cmd, p.returncode, p.stderr)
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
    if res.get("tiles"):
        L.append("")
        L.append("## 5. Magnetic tiles (../shared/eval.md 1B)")
        L.append("")
        L.append(block_tiles(res["tiles"], res.get("figures"), m, OUT))
    if res.get("peers"):
        L.append("")
        L.append("## 6. Speed against ONNX Runtime and PyTorch")
        L.append("")
        L.append(block_peers(res["peers"], m))
    if res.get("methods_torch"):
        L.append("")
        L.append("## 7. Every detector against its PyTorch reference")
        L.append("")
        L.append(block_methods_torch(res["methods_torch"], m))
    if res.get("memory"):
        L.append("")
        L.append("## 8. Memory while scoring")
        L.append("")
        L.append(block_memory(res["memory"], m))
    fig = res.get("figures") or {}
    if fig.get("fashion") or fig.get("tiles"):
        L.append("")
        L.append("## ROC pictures")
        L.append("")
        for key in ("fashion", "tiles"):
            if fig.get(key):
                f = fig[key]
                L.append("![%s](%s)" % (f["title"], img_ref(f["picture"], OUT)))
                L.append("")
                L.append("    " + f["command"])
                L.append("")
    return "\n".join(L)


HAVE_TORCH = False
# method[:options JSON[:test images]], split at white space: no spaces in the JSON
DEFAULT_METHODS = 'anogan:{"steps":100}:1000 skipganomaly egbad alad:{"nf":64} defectgan caae'


def method_specs():
    return os.environ.get("BENCH_METHODS", DEFAULT_METHODS).split()


def split_spec(spec):
    """method[:options JSON[:test images]] -> (method, options JSON, test images or None)."""
    method, _, rest = spec.partition(":")
    opts, limit = rest or "{}", None
    m = re.match(r"^(.*):(\d+)$", rest)
    if m:
        opts, limit = m.group(1) or "{}", m.group(2)
    return method, opts, limit


def methods():
    """Section 4: each other detector trained on one class by method_auroc.sh."""
    cls = env_int("BENCH_METHOD_CLASS", 1)
    rows = []
    for spec in method_specs():
        method, opts, limit = split_spec(spec)
        limit = limit or "10000"
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
                     "scores_csv": "%s/%s-class%d-scores.csv" % (OUT, method, cls),
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

# ---------------------------------------------------------------------------
# 5. Magnetic tiles
# ---------------------------------------------------------------------------

# method[:options JSON], split at white space: no spaces in the JSON
DEFAULT_TILE_METHODS = ('ganomaly skipganomaly egbad alad:{"nf":64} defectgan caae '
                        'anogan:{"steps":100}')
TILE_CMD = shlex.split(os.environ.get("BENCH_TILE_CMD", "sh tests/bench/tile_auroc.sh"))
TILE_REUSE = os.environ.get("BENCH_TILE_REUSE", "0") not in ("", "0")
TILE_LOGS = os.environ.get("BENCH_TILE_LOGS", "")

METHOD_NAMES = {"ganomaly": "GANomaly", "skipganomaly": "Skip-GANomaly", "egbad": "EGBAD",
                "alad": "ALAD", "anogan": "AnoGAN", "defectgan": "defectgan", "caae": "caae"}


def method_name(method, opts="{}", *notes):
    """How the pictures and tables name a method: "ALAD (nf 64)" for alad with {"nf": 64};
    notes (strings) go in the brackets too."""
    o = ["%s %s" % (k, v) for k, v in json.loads(opts or "{}").items() if k != "epochs"]
    o += [n for n in notes if n]
    return METHOD_NAMES.get(method, method) + (" (%s)" % ", ".join(o) if o else "")


def method_order(methods, specs):
    """methods sorted as specs (method[:...] strings) name them, GANomaly first, others after."""
    first = ["ganomaly"] + [sp.partition(":")[0] for sp in specs]
    return sorted(methods, key=lambda m: (first.index(m) if m in first else len(first), m))


def parse_tile_output(out):
    """tile_auroc.sh's stdout: "key value" lines and a final "# ..." summary, as a dict
    (values as floats; image_auroc.PART lines gathered into "image_auroc")."""
    r = {"image_auroc": {}, "summary": ""}
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            r["summary"] = line.lstrip("# ")
            continue
        key, _, value = line.partition(" ")
        try:
            v = float(value)
        except ValueError:
            log("tile_auroc.sh: unexpected line %r" % line)
            continue
        if key.startswith("image_auroc."):
            r["image_auroc"][key[len("image_auroc."):]] = v
        else:
            r[key] = v
    return r


def tiles():
    """Section 5: each detector trained on the magnetic tiles' good training images and
    evaluated by tile_auroc.sh. None when the tile folder is missing."""
    rows = []
    extra = {"TILE_REUSE": "1"} if TILE_REUSE else None
    for spec in os.environ.get("BENCH_TILE_METHODS", DEFAULT_TILE_METHODS).split():
        method, _, opts = spec.partition(":")
        opts = opts or "{}"
        if QUICK:
            opts = json.dumps(dict(json.loads(opts), epochs=1))
        cmd = TILE_CMD + [method, opts]
        if TILE_LOGS:
            # the output of runs made earlier (several methods at once, say)
            path = "%s/tiles-%s.txt" % (TILE_LOGS, method)
            log("reading %s (the output of %s)" % (path, shlex.join(cmd)))
            with open(path) as f:
                out, dt = f.read(), None
            if "pixel_auroc" not in out:
                raise RuntimeError("%s: the run has not finished" % path)
        else:
            log("%s %s on the magnetic tiles (%s)" % ("evaluating" if TILE_REUSE else "training",
                                                      method, shlex.join(cmd)))
        try:
            if not TILE_LOGS:
                out, dt = run(cmd, env=extra)
        except CommandError as err:
            if err.status == 2:       # tile_auroc.sh: no tile folder
                log("no magnetic-tile folder (TILE_DIR=%s): part \"tiles\" skipped" % TILE_DIR)
                return None
            raise
        r = parse_tile_output(out)
        if "score" not in r["image_auroc"]:
            raise RuntimeError("%s: no image_auroc.score line in its output:\n%s"
                               % (shlex.join(cmd), out))
        csv = "%s/tiles-%s-scores.csv" % (OUT, method)
        gallery = "%s/tiles-%s-gallery.png" % (OUT, method)
        rows.append({
            "method": method, "options": opts, "image_auroc": r["image_auroc"],
            "pixel_auroc": r.get("pixel_auroc"), "f1": r.get("f1_at_threshold"),
            "threshold": r.get("threshold"), "train_seconds": r.get("train_seconds"),
            "score_seconds": r.get("score_seconds"), "pixel_seconds": r.get("pixel_seconds"),
            "wall_seconds": dt, "reuse": TILE_REUSE,
            "scores_csv": csv if os.path.exists(csv) else None,
            "gallery": gallery if os.path.exists(gallery) else None,
            "summary": r["summary"],
            "command": ENV_TEXT + (" TILE_REUSE=1 " if TILE_REUSE else " ") + shlex.join(cmd)})
    return rows


# ---------------------------------------------------------------------------
# 6. ("peers") Speed against ONNX Runtime and PyTorch
# ---------------------------------------------------------------------------

PEER_SIZES = (32, 64)
PEER_THREADS = (1, 2)
PEER_NZ, PEER_NGF, PEER_NC = 100, 64, 1
NODE_DIR = OUT + "/node"
ORT_MODULE = NODE_DIR + "/node_modules/onnxruntime-node"
NPM_INSTALL = ["npm", "install", "--prefix", NODE_DIR, "onnxruntime-node"]
PEAK_TARGET = 0.75          # the issue's target: batched 64x64 at >= 75% of the FMA peak


def ganomaly_flops(isize, nz=PEER_NZ, ngf=PEER_NGF, nc=PEER_NC):
    """FLOP to score one image with GANomaly's generator (encoder1, decoder, encoder2):
    2 per multiply-add of every Conv2d and ConvTranspose2d (4x4 kernels), laid out as
    tests/bench/reference/ganomaly_ref.py builds them (no extra layers)."""
    k = 16
    enc, size, ch = 2 * nc * ngf * k * (isize // 2) ** 2, isize // 2, ngf
    while size > 4:                       # pyramid: ch -> 2ch, size halves
        enc += 2 * ch * 2 * ch * k * (size // 2) ** 2
        ch, size = 2 * ch, size // 2
    enc += 2 * ch * nz * k                # final 4x4 conv to 1x1
    ch, size = ngf // 2, 4
    while size != isize:
        ch, size = ch * 2, size * 2
    dec, size = 2 * nz * ch * k, 4        # 1x1 -> 4x4: each input pixel meets k weights
    while size < isize // 2:
        dec += 2 * ch * (ch // 2) * k * size ** 2
        ch, size = ch // 2, size * 2
    dec += 2 * ch * nc * k * size ** 2
    return 2 * enc + dec


def env_text(threads_blas, threads_omp):
    return "OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d" % (
        CORETYPE or "(unset)", threads_blas, threads_omp)


def ensure_ort():
    """(True, None) when onnxruntime-node loads from build/bench/node (installed there
    first when missing), else (False, why)."""
    if not shutil.which("node"):
        return False, "node (Node.js) not found"
    if not os.path.isdir(ORT_MODULE):
        if not shutil.which("npm"):
            return False, "npm not found, and %s is not installed" % ORT_MODULE
        log("installing onnxruntime-node into %s (once): %s" % (NODE_DIR, shlex.join(NPM_INSTALL)))
        os.makedirs(NODE_DIR, exist_ok=True)
        try:
            # skip: its install script would otherwise fetch GPU libraries
            p = subprocess.run(NPM_INSTALL, env=dict(ENV, ONNXRUNTIME_NODE_INSTALL="skip"),
                               cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            return False, "npm install failed: %s" % err
        if p.returncode != 0 or not os.path.isdir(ORT_MODULE):
            tail = " ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            return False, "npm install failed (status %d; no network?): %s" % (p.returncode, tail)
    try:
        run(["node", "-e", "require(%s)" % json.dumps(os.path.join(ROOT, ORT_MODULE))])
    except (CommandError, OSError) as err:
        return False, "onnxruntime-node does not load: %s" % str(err).splitlines()[-1]
    return True, None


def core_has_threads(model):
    """Whether build/bench/bench_core takes --threads (usage error, status 2, when not)."""
    try:
        run(["build/bench/bench_core", model, "--images", "1", "--threads", "1"],
            env={"OPENBLAS_NUM_THREADS": "1"})
        return True
    except CommandError as err:
        if err.status == 2:
            return False
        raise


def fma_peak():
    return json.loads(run(["build/bench/fma_peak"], env={"OPENBLAS_NUM_THREADS": "1"})[0])


def peers():
    """Our core against ONNX Runtime and PyTorch: GANomaly (nz 100, ngf 64, 1 channel)
    at 32x32 and 64x64, batch 1 and 64, 1 and 2 threads, same weights, same inputs;
    and one core's FMA peak, all measured in this run. None without torch (it makes the
    models)."""
    if not HAVE_TORCH:
        log("peers: no torch: it makes the models and the ONNX files: part skipped")
        return None
    make_cmd = [PY, "tests/bench/peers/make_models.py", "--out", OUT]
    log("peers: models (made once, cached in %s): %s" % (OUT, shlex.join(make_cmd)))
    models = json.loads(run(make_cmd, env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})[0])
    for s in PEER_SIZES:
        want = ganomaly_flops(s)
        if models[str(s)]["flops"] != want:
            raise RuntimeError("peers: %dx%d: the layers count %d FLOP per image, the "
                               "architecture %d" % (s, s, models[str(s)]["flops"], want))
    ort_ok, ort_why = ensure_ort()
    if not ort_ok:
        log("peers: ONNX Runtime not measured: " + ort_why)
    threads_ok = core_has_threads(models["32"]["model"])
    if not threads_ok:
        log("peers: build/bench/bench_core takes no --threads yet: ours runs at 1 thread only")
    # keys are strings, as in results/peers.json
    images = {"32": env_int("BENCH_PEER_IMAGES_32", 1024, 64),
              "64": env_int("BENCH_PEER_IMAGES_64", 256, 64)}
    cells = []
    for s in PEER_SIZES:
        m = models[str(s)]
        n = images[str(s)]
        inputs = "%s/inputs-peers-%d.f32" % (OUT, s)
        dump = ["build/bench/bench_core", m["model"], "--images", str(n), "--dump", inputs]
        run(dump, env={"OPENBLAS_NUM_THREADS": "1"})
        for t in PEER_THREADS:
            ours = ["build/bench/bench_core", m["model"], "--images", str(n)]
            if threads_ok:
                ours += ["--threads", str(t)]
            elif t != 1:
                ours = None
            ort = ["node", "tests/bench/peers/onnx_score.js", m["onnx"], inputs, str(n),
                   "--size", str(s), "--channels", str(PEER_NC), "--threads", str(t)]
            torch_cmd = [PY, "tests/bench/torch_score.py", m["model"], inputs, str(n),
                         "--threads", str(t)]
            cells.append({
                "size": s, "threads": t, "images": n, "flops": m["flops"], "params": m["params"],
                "model": m["model"], "onnx": m["onnx"], "dump_command": env_text(1, 1) + " " +
                shlex.join(dump),
                "cmds": {"ours": (ours, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),
                         "ort": (ort if ort_ok else None,
                                 {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": str(t)}),
                         "torch": (torch_cmd, {"OPENBLAS_NUM_THREADS": "1",
                                               "OMP_NUM_THREADS": str(t)})},
                "reps": []})
    peaks = []
    for i in range(REPEATS):
        log("peers: FMA peak, repeat %d of %d" % (i + 1, REPEATS))
        peaks.append(fma_peak())
        for c in cells:
            log("peers: %dx%d, %d thread(s): repeat %d of %d"
                % (c["size"], c["size"], c["threads"], i + 1, REPEATS))
            order = ["ours", "ort", "torch"]
            if i % 2:
                order.reverse()           # alternate who goes first
            r = {}
            for k in order:
                cmd, env = c["cmds"][k]
                if cmd is None:
                    r[k] = None
                    continue
                try:
                    r[k] = json.loads(run(cmd, env=env)[0])
                except CommandError as err:
                    if k == "ours":
                        raise
                    log("peers: %s failed, its cell left empty: %s" % (k, err))
                    r[k] = None
            c["reps"].append(r)
    # the peak: the best of the runs (other work on the machine only lowers it)
    best = {}
    for p in peaks:
        for t, g in p["fma_gflops"].items():
            if g is not None and g > best.get(t, 0):
                best[t] = g
    sgemm = {}
    for p in peaks:
        for g in p["sgemm"]:
            key = "%dx%dx%d" % (g["m"], g["n"], g["k"])
            if g["gflops"] is not None and g["gflops"] > sgemm.get(key, 0):
                sgemm[key] = g["gflops"]
    rows = []
    for c in cells:
        reps = c["reps"]
        for b in (1, 64):
            key = "batch%d" % b

            def ips(impl):
                vals = [r[impl][key]["images_per_second"] for r in reps if r[impl] is not None]
                return median(vals) if len(vals) == len(reps) else None

            def paired(impl):
                vals = [r["ours"][key]["images_per_second"] / r[impl][key]["images_per_second"]
                        for r in reps if r["ours"] is not None and r[impl] is not None]
                if len(vals) != len(reps):
                    return None
                return {"median": median(vals), "min": min(vals), "max": max(vals)}

            ours = ips("ours")
            gflops = ours * c["flops"] * 1e-9 if ours else None
            peak = best.get(str(c["threads"]))
            r_ort = paired("ort")
            row = {"size": c["size"], "batch": b, "threads": c["threads"], "images": c["images"],
                   "ours": ours, "ort": ips("ort"), "torch": ips("torch"),
                   "ours_over_ort": r_ort, "ours_over_torch": paired("torch"),
                   "ours_gflops": gflops, "fma_peak_gflops": peak,
                   "peak_fraction": gflops / peak if gflops and peak else None,
                   "score_sum": {k: reps[0][k][key]["score_sum"] if reps[0][k] else None
                                 for k in ("ours", "ort", "torch")}}
            row["met_ort"] = r_ort["median"] >= 1 if r_ort else None
            row["met_peak"] = (row["peak_fraction"] >= PEAK_TARGET
                               if c["size"] == 64 and b == 64 and row["peak_fraction"] else None)
            sums = [v for v in row["score_sum"].values() if v is not None]
            row["score_rel_diff"] = ((max(sums) - min(sums)) / abs(statistics.mean(sums))
                                     if len(sums) > 1 and statistics.mean(sums) else None)
            rows.append(row)
    versions = {"ort": None, "torch": None}
    for c in cells:
        for r in c["reps"]:
            if r["ort"]:
                versions["ort"] = r["ort"].get("version")
            if r["torch"]:
                versions["torch"] = r["torch"].get("torch")
    commands = {"make_models": env_text(1, 1) + " " + shlex.join(make_cmd),
                "npm": "ONNXRUNTIME_NODE_INSTALL=skip " + shlex.join(NPM_INSTALL),
                "fma_peak": env_text(1, 1) + " build/bench/fma_peak",
                "dump": {str(c["size"]): c["dump_command"] for c in cells}, "cells": []}
    for c in cells:
        cmd = {"size": c["size"], "threads": c["threads"]}
        for k, (argv, env) in c["cmds"].items():
            cmd[k] = (env_text(int(env["OPENBLAS_NUM_THREADS"]), int(env["OMP_NUM_THREADS"]))
                      + " " + shlex.join(argv)) if argv else None
        commands["cells"].append(cmd)
    return {"rows": rows, "fma_peak": best, "fma_isa": peaks[0]["isa"], "sgemm_1thread": sgemm,
            "peaks": peaks, "images": images, "repeats": REPEATS, "ort": ort_ok,
            "ort_why": ort_why, "core_threads": threads_ok, "versions": versions,
            "flops": {str(s): ganomaly_flops(s) for s in PEER_SIZES},
            "params": {str(s): models[str(s)]["params"] for s in PEER_SIZES},
            "runs": [{"size": c["size"], "threads": c["threads"], "repeats": c["reps"]}
                     for c in cells],
            "commands": commands}


def block_peers(p, machine):
    """The "peers" block: the speed table against ONNX Runtime and PyTorch, the FMA peak,
    the score sums, the commands."""
    def ips(x):
        return "–" if x is None else "{:,.0f}".format(x) if x >= 100 else "%.1f" % x

    def met(row):
        marks = []
        if row["met_ort"] is not None:
            marks.append("≥ ONNX RT %s" % ("✓" if row["met_ort"] else "✗"))
        if row["met_peak"] is not None:
            marks.append("≥ 75%% of peak %s" % ("✓" if row["met_peak"] else "✗"))
        return "; ".join(marks) or "–"

    v = p["versions"]
    L = []
    if QUICK:
        L += ["**BENCH_QUICK smoke run: not a result** (few images, %d repeat(s))." % p["repeats"],
              ""]
    L.append("From `make bench`'s part \"peers\" (`BENCH_PARTS=peers` runs it alone), %s, %s "
             "(%d cores), OpenBLAS core %s, ONNX Runtime %s (onnxruntime-node), PyTorch %s. "
             "Images per second, median of %d repeat(s); in each repeat the three run one after "
             "the other, in alternating order; %s images at 32×32, %s at 64×64 (the first "
             "Fashion-MNIST test images, resized, the same input tensors for all three)."
             % (machine["date"], machine["cpu"], machine["cores"], machine["openblas_core"],
                v["ort"] or "not measured", v["torch"] or "not measured", p["repeats"],
                "{:,}".format(p["images"]["32"]), "{:,}".format(p["images"]["64"])))
    L.append("")
    L.append("What is timed: the generator's forward pass encoder1 → decoder → encoder2 and the "
             "latent score mean (z − z′)², on tensors already fitted (nz 100, ngf 64, 1 channel; "
             "weights untrained, from tests/bench/peers/make_models.py). **ours** = "
             "`model_score` (tests/bench/bench_core.c): T worker threads, each scoring its share "
             "of the images, OpenBLAS at 1 thread each. **ONNX RT** = onnxruntime-node on the "
             "same weights exported to ONNX (intraOpNumThreads T, interOpNumThreads 1, "
             "graphOptimizationLevel all; tests/bench/peers/onnx_score.js). **PyTorch** = the "
             "reference NetG (torch.set_num_threads(T), no_grad, eval; tests/bench/torch_score.py). "
             "Ratios: median (min–max) of the per-repeat ratios, above 1 ours is faster. "
             "**GFLOP/s** = ours images/s × %.3f GFLOP (32×32) or %.3f GFLOP (64×64) per image "
             "(2 per multiply-add over the convolutions). **%% of peak** = of the FMA peak of "
             "T thread(s) measured in the same run (build/bench/fma_peak: %s FMA chains, "
             "best of the run's %d measurements): %s GFLOP/s on 1 thread, %s on 2."
             % (p["flops"]["32"] * 1e-9, p["flops"]["64"] * 1e-9, p["fma_isa"], len(p["peaks"]),
                "%.0f" % p["fma_peak"]["1"] if "1" in p["fma_peak"] else "–",
                "%.0f" % p["fma_peak"]["2"] if "2" in p["fma_peak"] else "–"))
    L.append("")
    if not p["ort"]:
        L.append("ONNX Runtime was not measured: %s." % p["ort_why"])
        L.append("")
    if not p["core_threads"]:
        L.append("bench_core took no `--threads` in this run: ours at 2 threads not measured.")
        L.append("")
    L.append("| input | batch | threads | ours | ONNX RT | PyTorch | ours ÷ ONNX RT | "
             "ours ÷ PyTorch | ours GFLOP/s | % of FMA peak | met? |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(p["rows"], key=lambda r: (r["size"], r["batch"], r["threads"])):
        L.append("| %d×%d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["size"], r["size"], r["batch"], r["threads"], ips(r["ours"]), ips(r["ort"]),
            ips(r["torch"]), fr(r["ours_over_ort"]), fr(r["ours_over_torch"]),
            "–" if r["ours_gflops"] is None else "%.1f" % r["ours_gflops"],
            "–" if r["peak_fraction"] is None else "%.0f%%" % (100 * r["peak_fraction"]),
            met(r)))
    L.append("")
    met_ort = [r["met_ort"] for r in p["rows"]]
    met_peak = [r["met_peak"] for r in p["rows"] if r["met_peak"] is not None]
    L.append("Targets: ours at least as fast as ONNX Runtime in every cell: %s; batched 64×64 at "
             "≥ 75%% of the FMA peak: %s." % (
                 "not measured" if None in met_ort else
                 "met" if all(met_ort) else "not met (%d of %d cells)" % (sum(met_ort), len(met_ort)),
                 "not measured" if not met_peak else
                 "met" if all(met_peak) else "not met (%d of %d cells)" % (sum(met_peak), len(met_peak))))
    if p["sgemm_1thread"]:
        L.append("For scale, OpenBLAS's cblas_sgemm on 1 thread, same run (GFLOP/s, M×N×K): %s."
                 % ", ".join("%s %.0f" % (k, g) for k, g in p["sgemm_1thread"].items()))
    L.append("")
    worst = max((r["score_rel_diff"] or 0) for r in p["rows"])
    L.append("Sums of the latent scores of the N images (first repeat; the three should agree to "
             "float rounding; largest relative spread %.1e):" % worst)
    L.append("")
    for r in sorted(p["rows"], key=lambda r: (r["size"], r["threads"], r["batch"])):
        ss = r["score_sum"]
        L.append("- %d×%d, batch %d, %d thread(s): ours %s, ONNX RT %s, PyTorch %s" % (
            r["size"], r["size"], r["batch"], r["threads"],
            *["–" if ss[k] is None else "%.7g" % ss[k] for k in ("ours", "ort", "torch")]))
    L.append("")
    c = p["commands"]
    L.append("Commands (the models and the inputs first, then each cell's three runs; "
             "onnxruntime-node installed once with `%s`):" % c["npm"])
    L.append("")
    L.append("    " + c["make_models"])
    L.append("    " + c["fma_peak"])
    for s in sorted(c["dump"], key=int):
        L.append("    " + c["dump"][s])
    for cell in c["cells"]:
        for k in ("ours", "ort", "torch"):
            if cell[k]:
                L.append("    " + cell[k])
    return "\n".join(L)


def threads():
    """tests/bench/threads_bench.py's JSON: anomaly_score, anomaly_scan and anomaly_train
    with the BLAS at 1 and 2 threads (anomaly_config('threads', n)), with its command."""
    return json_script("threads", "tests/bench/threads_bench.py", 1024, 128)


def block_threads(r, machine):
    """The docs block of part "threads"."""
    L = ["From `make bench`'s part \"threads\" (`BENCH_PARTS=threads` runs it alone), %s, %s, "
         "%s cores. Images per second, best of the runs, with OpenBLAS at 1 and at 2 threads "
         "(`SELECT anomaly_config('threads', n)`). **score** = `SELECT sum(anomaly_score(image, "
         "'m')) FROM t`, one row at a time; **scan** = `anomaly_scan` with `{\"threads\": 2}`, "
         "two workers with batches of 64; **train** = one epoch of `anomaly_train` (GANomaly, "
         "batch 64)." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         machine.get("cpu", "?"), r.get("cpus")), "",
         "| images | form | BLAS 1 thread | BLAS 2 threads | 2 ÷ 1 |", "|---|---|---|---|---|"]
    for key, label in (("fashion28", "28×28 PNG, 32×32 model"), ("fashion64", "64×64 PNG, 64×64 model")):
        m = r.get(key)
        if not isinstance(m, dict):
            L.append("| %s | %s | | | |" % (label, m))
            continue
        for form in ("score", "scan", "train"):
            a, b = (m.get("%s_blas%d_images_per_second" % (form, k)) for k in (1, 2))
            L.append("| %s × %d | %s | %s | %s | %s |" % (
                label, m["images"], form, f0(a), f0(b),
                "%.2f×" % (b / a) if a and b else "?"))
    L += ["", "Command:", "", "    " + r["command"]]
    return "\n".join(L)


# ---------------------------------------------------------------------------
# 8. ("memory") Resident memory while scoring
# ---------------------------------------------------------------------------

def scan():
    """End to end in SQL over PNG BLOBs: tests/bench/scan_bench.py's JSON (anomaly_score row by
    row against anomaly_scan at 1 and 2 threads; 28x28 PNGs with the 32x32 model, 64x64 PNGs
    with the 64x64 one), with its command."""
    return json_script("scan", "tests/bench/scan_bench.py", 2000, 256)


def json_script(part, script, n, n_quick):
    """The JSON line a benchmark script prints as its last, run as `script N REPEATS`
    (n_quick images and one repeat in quick mode), with its command."""
    cmd = [PY, script, str(n_quick if QUICK else n), str(1 if QUICK else REPEATS)]
    log("%s: %s" % (part, shlex.join(cmd)))
    out, _ = run(cmd)
    r = json.loads(out.strip().splitlines()[-1])
    r["command"] = ENV_TEXT + " " + shlex.join(cmd)
    return r


def block_scan(r, machine):
    """The docs block of part "scan"."""
    L = ["From `make bench`'s part \"scan\" (`BENCH_PARTS=scan` runs it alone), %s, %s. "
         "Each figure is the best of the runs. **anomaly_score** = `SELECT sum(anomaly_score(image, "
         "'m')) FROM t`, one row at a time on one thread; **scan** = `SELECT sum(score) FROM "
         "anomaly_scan('m', 'SELECT rowid, image FROM t', '{\"threads\": T}')` (batches of 64). "
         "Both include reading the row, decoding the PNG, fitting it and scoring. **decode share** = "
         "decoding and fitting one PNG alone (build/bench/bench_core: the same Fashion-MNIST "
         "images as 28×28 PNGs, fitted to the model's input) ÷ the "
         "scan's CPU time per image at one thread." % (
             time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine.get("cpu", "?")), "",
         "| images | model | anomaly_score | scan, 1 thread | scan, 2 threads | scan 2 ÷ anomaly_score "
         "| decode + fit ms | decode share |",
         "|---|---|---|---|---|---|---|---|"]
    for key, label in (("fashion28", "28×28 PNG"), ("fashion64", "64×64 PNG")):
        m = r.get(key)
        if not isinstance(m, dict):
            L.append("| %s | %s | | | | | | |" % (label, m))
            continue
        a, s1, s2 = (m["anomaly_score_images_per_second"], m["scan_threads1_images_per_second"],
                     m["scan_threads2_images_per_second"])
        share = m.get("decode_fit_share")
        L.append("| %s × %d | %s | %s | %s | %s | %.2f× | %s | %s |" % (
            label, m["images"], os.path.basename(m["model"]), f0(a), f0(s1), f0(s2), s2 / a,
            m.get("decode_fit_ms_per_image"), "%.1f%%" % (100 * share) if share else "?"))
    L += ["", "Sums of the scores agree between the forms to float rounding: " + "; ".join(
        "%s: %s" % (k, ", ".join("%s %.6g" % (f, v) for f, v in r[k]["score_sums"].items()))
        for k in ("fashion28", "fashion64") if isinstance(r.get(k), dict)) + ".", "",
          "Command:", "", "    " + r["command"]]
    return "\n".join(L)


def memory():
    """tests/bench/memory_bench.py's JSON (--quick in quick mode), with its command and
    wall time."""
    cmd = [PY, "tests/bench/memory_bench.py"] + (["--quick"] if QUICK else [])
    log("memory: %s (full: 2 scans of 100,000 rows, 5 to 10 minutes)" % shlex.join(cmd))
    t0 = time.perf_counter()
    # its progress lines (stderr) go straight to ours: the scans take minutes
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise CommandError(cmd, p.returncode, "(its messages are above)")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall_seconds"] = dt
    r["command"] = ENV_TEXT + " " + shlex.join(cmd)
    return r


def block_memory(r, machine):
    """The "memory" block: RSS along the scans, per connection, per model; the notes."""
    def mbk(kb):
        return "–" if kb is None else "%.1f" % (kb * 1024 / 1e6)

    L = []
    if r.get("quick"):
        L += ["**BENCH_QUICK smoke run: not a result** (%s rows, %d connections)."
              % ("{:,}".format(r["rows"]), r["connections_opened"]), ""]
    L.append("From `make bench`'s part \"memory\" (`BENCH_PARTS=memory` runs it alone), %s, %s "
             "(%d cores), SQLite %s, sqlite-anomaly %s; %.0f s in all. MB = 10^6 bytes of "
             "VmRSS (/proc/self/status), each measure in a fresh process (tests/bench/"
             "memory_bench.py)." % (machine["date"], machine["cpu"], machine["cores"],
                                    r.get("sqlite", "?"), r.get("extension", "?"),
                                    r.get("seconds") or r["wall_seconds"]))
    L.append("")
    scans = {k: r.get(k) or {} for k in ("scan", "scan_batched")}
    model = (r.get("connections") or {}).get("model")
    L.append("**Scans** of %s PNG rows with the model 'm'%s: plain = `%s`, batched = `%s`. "
             "VmRSS with the cursor stepped to each row:"
             % ("{:,}".format(r["rows"]), " (%s)" % model if model else "",
                scans["scan"].get("sql", "–"), scans["scan_batched"].get("sql", "–")))
    L.append("")
    by_row = {}
    for k in scans:
        for smp in scans[k].get("samples", []):
            by_row.setdefault(smp["row"], {})[k] = smp["rss_kb"]
    L.append("| rows | VmRSS MB plain | VmRSS MB batched |")
    L.append("|---|---|---|")
    for row in sorted(by_row):
        label = ("0 (connection open)" if row == 0 else "{:,}".format(row))
        L.append("| %s | %s | %s |" % (label, mbk(by_row[row].get("scan")),
                                       mbk(by_row[row].get("scan_batched"))))
    L.append("")
    for k, name in (("scan", "plain"), ("scan_batched", "batched")):
        s = scans[k]
        if "skipped" in s:
            L.append("- %s: skipped, %s." % (name, s["skipped"]))
        elif "error" in s or "rss_growth_mb" not in s:
            L.append("- %s: %s." % (name, s.get("error", "no result")))
        else:
            L.append("- %s: VmRSS %+.2f MB from row %s to row %s (%.1f bytes a row; %s), peak "
                     "VmHWM %s MB; %s rows/s; score sum %s." % (
                         name, s["rss_growth_mb"], "{:,}".format(s["growth_from_row"]),
                         "{:,}".format(s["growth_to_row"]), s["rss_growth_bytes_per_row"],
                         "flat" if s["flat"] else "not flat",
                         mbk(max(x["hwm_kb"] for x in s["samples"])),
                         "{:,.0f}".format(s["rows_per_second"]), "%.4f" % s["score_sum"]))
    L.append("")
    c = r.get("connections") or {}
    if "per_connection" in c:
        L.append("**Connections**: %d connections to the same database in one process, each "
                 "scoring one row with 'm' and keeping its statement open; the model's float32 "
                 "weights are %s MB (%s params; file %s MB)."
                 % (len(c["per_connection"]), "%.2f" % c["weight_mb_f32"],
                    "{:,}".format(c["params"]), "%.2f" % (c["file_bytes"] / 1e6)))
        L.append("")
        L.append("| connection | VmRSS MB | increment MB | of which open + load | first score | "
                 "increment ÷ weights |")
        L.append("|---|---|---|---|---|---|")
        w = c["weight_bytes_f32"]
        for p in c["per_connection"]:
            L.append("| %d | %s | %s | %s | %s | %.2f× |" % (
                p["connection"], mbk(p["rss_kb"]), mbk(p["increment_kb"]),
                mbk(p["open_and_load_kb"]), mbk(p["first_score_kb"]),
                p["increment_kb"] * 1024 / w))
        L.append("")
        if "one_copy" in c:
            L.append("One copy of the weights per process: **%s** (connections 2 to %d cost %.2f "
                     "MB on average, at most %.2f MB: %.2f× the weights; the first cost %.2f MB)%s."
                     % ("yes" if c["one_copy"] else "no", len(c["per_connection"]),
                        c["later_connection_mean_mb"], c["later_connection_max_mb"],
                        c["later_mean_over_weights"], c["first_connection_mb"],
                        "" if c.get("scores_equal", True) else "; the connections' scores differ"))
            L.append("")
    elif c:
        L.append("**Connections**: %s." % c.get("error", "no result"))
        L.append("")
    m = r.get("models") or {}
    if "per_model" in m:
        L.append("**Models**: one connection scores one row with each distinct model file of "
                 "models/ (statements kept open), after a warm-up on %s (+%.2f MB, first-use "
                 "costs); the VmRSS increment of each:" % (m["warmup_model"],
                                                           m["warmup_increment_mb"]))
        L.append("")
        L.append("| model file | file bytes | params | VmRSS increment MB | × float32 weights |")
        L.append("|---|---|---|---|---|")
        for p in m["per_model"]:
            L.append("| %s | %s | %s | %.2f | %.2f× |" % (
                p["file"], "{:,}".format(p["file_bytes"]), "{:,}".format(p["params"]),
                p["increment_mb"], p["increment_over_weights"]))
        L.append("")
        if m.get("second_statement_same_model_mb") is not None:
            L.append("A second statement on the last model added %.2f MB (its per-statement "
                     "buffers)%s." % (m["second_statement_same_model_mb"],
                                      "; skipped as duplicates: " + "; ".join(m["duplicates_skipped"])
                                      if m.get("duplicates_skipped") else ""))
            L.append("")
    elif m:
        L.append("**Models**: %s." % m.get("error", "no result"))
        L.append("")
    if r.get("notes"):
        L += ["Notes from memory_bench.py:", ""] + ["- " + n for n in r["notes"]]
    else:
        L.append("Notes from memory_bench.py: none.")
    L.append("")
    L.append("Command (builds build/bench/memory.db once: 100,000 rows from build/bench/fashion.db):")
    L.append("")
    L.append("    " + r["command"] + "   # %.0f s" % r["wall_seconds"])
    return "\n".join(L)


# ---------------------------------------------------------------------------
# 7. ("methods_torch") Every detector against its PyTorch reference
# ---------------------------------------------------------------------------

TORCH_METHODS = ("ganomaly", "skipganomaly", "anogan", "egbad", "alad", "defectgan", "caae")
ANOGAN_SEARCH_STEPS = 500        # AnoGAN's default search (anomaly_train's "steps")
METHODS_DIR = OUT + "/methods"


def extract_model(db, path):
    """Writes the model 'm' of db's registry (method_auroc.sh's name) to path with the
    sqlite3 shell's writefile; returns the command, or None when db holds no such model."""
    query = "SELECT writefile(%s, model) FROM anomaly_models_data WHERE name = 'm';" % q(path)
    out, _ = run(["sqlite3", "-bail", db, query])
    return 'sqlite3 %s "%s"' % (db, query) if out.strip() not in ("", "0") else None


def with_hparams(src, dst, **changes):
    """Copies the model file src to dst with changes merged into its hyper-parameters
    (__metadata__.hparams). The data section, and so its checksum, is unchanged; the
    header is written again as writers do (compact JSON, padded with spaces so that
    8 + its length is a multiple of 8; docs/model-format.md)."""
    with open(src, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header["__metadata__"]
    meta["hparams"] = json.dumps(dict(json.loads(meta["hparams"]), **changes),
                                 separators=(",", ":"))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * ((-(8 + len(text))) % 8)
    with open(dst, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n:])


def model_hparams(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(json.loads(f.read(n).decode("utf-8"))["__metadata__"]["hparams"])


def methods_torch():
    """Each detector trained by method_auroc.sh (build/bench/METHOD-class1.db) scored by our
    core (bench_core) and by its PyTorch reference (torch_methods.py) on the same weights
    and inputs, batch 1 and 64, alternating, median of the repeats; AnoGAN also at its
    default 500-step search on a few images (a copy of its model with steps 500)."""
    if not HAVE_TORCH:
        log("methods_torch: no torch: part skipped")
        return None
    cls = env_int("BENCH_METHOD_CLASS", 1)
    n = env_int("BENCH_TORCH_IMAGES", 256, 64)
    n_search = env_int("BENCH_ANOGAN_SEARCH_IMAGES", 16, 2)
    os.makedirs(METHODS_DIR, exist_ok=True)
    skipped, runs, prep = [], [], []
    for method in TORCH_METHODS:
        db = "%s/%s-class%d.db" % (OUT, method, cls)
        if not os.path.exists(db):
            skipped.append((method, "no %s (tests/bench/method_auroc.sh %s %d makes it)"
                            % (db, method, cls)))
            log("methods_torch: %s skipped: %s" % (method, skipped[-1][1]))
            continue
        model = "%s/%s.safetensors" % (METHODS_DIR, method)
        got = extract_model(db, model)
        if not got:
            skipped.append((method, "%s holds no model 'm'" % db))
            log("methods_torch: %s skipped: %s" % (method, skipped[-1][1]))
            continue
        inputs = "%s/inputs-%s.f32" % (METHODS_DIR, method)
        k = max(n, n_search) if method == "anogan" else n
        dump = ["build/bench/bench_core", model, "--images", str(k), "--dump", inputs]
        run(dump)
        prep += [got, ENV_TEXT + " " + shlex.join(dump)]
        steps = model_hparams(model).get("steps") if method == "anogan" else None
        runs.append({"method": method, "model": model, "inputs": inputs, "images": n,
                     "steps": steps, "repeats": max(1, REPEATS // 2) if method == "anogan"
                     else REPEATS, "warmup": None})
        if method == "anogan" and steps != ANOGAN_SEARCH_STEPS:
            long_model = "%s/anogan-steps%d.safetensors" % (METHODS_DIR, ANOGAN_SEARCH_STEPS)
            with_hparams(model, long_model, steps=ANOGAN_SEARCH_STEPS)
            prep.append("# %s: %s with \"steps\": %d in its hparams (bench.py's with_hparams)"
                        % (long_model, model, ANOGAN_SEARCH_STEPS))
            runs.append({"method": "anogan", "model": long_model, "inputs": inputs,
                         "images": n_search, "steps": ANOGAN_SEARCH_STEPS, "repeats": 1,
                         "warmup": 1})
    for r in runs:
        r["ours_cmd"] = ["build/bench/bench_core", r["model"], "--images", str(r["images"])]
        r["torch_cmd"] = [PY, "tests/bench/torch_methods.py", r["method"], r["model"],
                          r["inputs"], str(r["images"]), "--threads", str(THREADS)]
        if r["warmup"] is not None:
            r["torch_cmd"] += ["--warmup", str(r["warmup"])]
        r["reps"] = []
    for i in range(REPEATS):
        for r in runs:
            if len(r["reps"]) >= r["repeats"]:
                continue
            log("methods_torch: %s%s, %d images: repeat %d of %d" % (
                r["method"], ", %d steps" % r["steps"] if r["steps"] else "", r["images"],
                i + 1, r["repeats"]))
            order = [("ours", r["ours_cmd"]), ("torch", r["torch_cmd"])]
            if i % 2:
                order.reverse()            # alternate who goes first
            try:
                r["reps"].append({k: json.loads(run(cmd)[0]) for k, cmd in order})
            except CommandError as err:
                log("methods_torch: %s failed, its row left out: %s" % (r["method"], err))
                r["error"] = str(err).splitlines()[-1]
                r["repeats"] = 0
    rows = []
    for r in runs:
        if r.get("error"):
            skipped.append((r["method"], "failed: " + r["error"]))
            continue
        row = {"method": r["method"], "steps": r["steps"], "images": r["images"],
               "repeats": len(r["reps"]), "model": r["model"]}
        for b in (1, 64):
            key = "batch%d" % b
            for impl in ("ours", "torch"):
                row["%s_b%d_ms" % (impl, b)] = 1e3 / median(
                    [x[impl][key]["images_per_second"] for x in r["reps"]])
                row["%s_b%d_cpu_ms" % (impl, b)] = 1e3 * median(
                    [x[impl][key]["cpu_seconds"] / r["images"] for x in r["reps"]])
            ratios = [x["ours"][key]["images_per_second"] / x["torch"][key]["images_per_second"]
                      for x in r["reps"]]
            row["ratio_b%d" % b] = {"median": median(ratios), "min": min(ratios),
                                    "max": max(ratios)}
            row["cpu_ratio_b%d" % b] = row["torch_b%d_cpu_ms" % b] / row["ours_b%d_cpu_ms" % b]
            ours, ref = (r["reps"][0][k][key]["score_sum"] for k in ("ours", "torch"))
            row["score_sum_b%d" % b] = {"ours": ours, "torch": ref}
            row["rel_diff_b%d" % b] = abs(ours - ref) / abs(ref) if ref else None
        rows.append(row)
    if not rows:
        log("methods_torch: no detector measured: part left out")
        return None
    versions = [r["reps"][0]["torch"].get("torch") for r in runs if r["reps"]]
    return {"rows": rows, "skipped": skipped, "class": cls, "images": n,
            "search_images": n_search, "repeats": REPEATS, "threads": THREADS,
            "torch": versions[0] if versions else None,
            "runs": [{"method": r["method"], "steps": r["steps"], "repeats": r["reps"]}
                     for r in runs],
            "commands": {"prepare": prep,
                         "runs": [ENV_TEXT + " " + shlex.join(c) for r in runs
                                  for c in (r["ours_cmd"], r["torch_cmd"])]}}


def block_methods_torch(p, machine):
    """The "methods_torch" block: ms per image of ours and of the PyTorch reference for each
    detector, the ratios, the score sums, the commands."""
    def ms(x):
        return "%.1f" % x if x >= 10 else "%.2f" % x

    def name(row):
        if row["method"] != "anogan":
            return method_name(row["method"])
        return "AnoGAN (%d steps%s)" % (row["steps"], ", default" if row["steps"] ==
                                        ANOGAN_SEARCH_STEPS else ", as stored")

    L = []
    if QUICK:
        L += ["**BENCH_QUICK smoke run: not a result** (few images, %d repeat(s))." % p["repeats"],
              ""]
    L.append("From `make bench`'s part \"methods_torch\" (`BENCH_PARTS=methods_torch` runs it "
             "alone), %s, %s (%d cores), OpenBLAS core %s, PyTorch %s, %d thread(s). Models: "
             "the detectors trained on Fashion-MNIST class %d by tests/bench/method_auroc.sh "
             "(build/bench/METHOD-class%d.db, extracted to %s/). Milliseconds per image, wall "
             "clock, median of %d repeat(s)%s, ours and PyTorch one after the other "
             "in alternating order, on the first %d Fashion-MNIST test images already fitted "
             "(the same input tensors for both). **ours** = `model_score` "
             "(tests/bench/bench_core.c); **PyTorch** = the reference networks of each method "
             "with the same score formula (tests/bench/torch_methods.py; no_grad, eval). "
             "**ratio** = ours speed ÷ PyTorch speed, median (min–max) of the per-repeat "
             "ratios: above 1 ours is faster."
             % (machine["date"], machine["cpu"], machine["cores"], machine["openblas_core"],
                p["torch"] or "?", p["threads"], p["class"], p["class"], METHODS_DIR,
                p["repeats"], " (AnoGAN fewer, see the table)" if any(
                    r["method"] == "anogan" for r in p["rows"]) else "", p["images"]))
    L.append("")
    L.append("| method | images × repeats | ours b1 ms/img | PyTorch b1 | ratio | ours b64 | "
             "PyTorch b64 | ratio | score sums agree (rel. diff) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in p["rows"]:
        diff = max(d for d in (r["rel_diff_b1"], r["rel_diff_b64"]) if d is not None) \
            if r["rel_diff_b1"] is not None or r["rel_diff_b64"] is not None else None
        L.append("| %s | %d × %d | %s | %s | %s | %s | %s | %s | %s |" % (
            name(r), r["images"], r["repeats"], ms(r["ours_b1_ms"]), ms(r["torch_b1_ms"]),
            fr(r["ratio_b1"]), ms(r["ours_b64_ms"]), ms(r["torch_b64_ms"]), fr(r["ratio_b64"]),
            "–" if diff is None else "%s (%.1e)" % ("yes" if diff < 1e-4 else "NO", diff)))
    L.append("")
    if any(r["method"] == "anogan" for r in p["rows"]):
        L.append("AnoGAN scores by searching its latent space (Adam steps on z, each a forward "
                 "and a backward pass): the class-%d model stores a short search in its "
                 "hyper-parameters, so it is timed as stored and again at the default %d steps "
                 "on %d images (a copy of the model with only `steps` changed in its metadata, "
                 "%s/anogan-steps%d.safetensors; at batch 64 those images form one batch)."
                 % (p["class"], ANOGAN_SEARCH_STEPS, p["search_images"], METHODS_DIR,
                    ANOGAN_SEARCH_STEPS))
        L.append("")
    L.append("Ratios from CPU seconds instead (steadier on a busy machine), b1 / b64: " +
             "; ".join("%s %.2f× / %.2f×" % (name(r), r["cpu_ratio_b1"], r["cpu_ratio_b64"])
                       for r in p["rows"]) + ".")
    L.append("")
    L.append("Score sums agree: the sums of the N scores (first repeat, batch 1 and batch 64) "
             "differ by less than 1e-4 relative; ours, PyTorch: " +
             "; ".join("%s %.7g, %.7g" % (name(r), r["score_sum_b1"]["ours"],
                                          r["score_sum_b1"]["torch"]) for r in p["rows"]) + ".")
    L.append("")
    for m, why in p["skipped"]:
        L.append("- %s not measured: %s." % (method_name(m), why))
    if p["skipped"]:
        L.append("")
    L.append("Commands (each model extracted and its inputs written first; then ours and "
             "PyTorch for each row):")
    L.append("")
    for c in p["commands"]["prepare"] + p["commands"]["runs"]:
        L.append("    " + c)
    return "\n".join(L)


# ---------------------------------------------------------------------------
# Figures: ROC curves
# ---------------------------------------------------------------------------

def roc_plot(png, title, curves):
    """Draw curves [(name, csv)] into png with roc_plot; returns what it measured."""
    cmd = [ROC_PLOT, png, title]
    for name, path in curves[:10]:           # roc_plot draws at most 10
        cmd += [name, path]
    out, _ = run(cmd)
    got = []
    for line in out.splitlines():
        m = re.match(r"^(.*) auroc=([0-9.]+) n=(\d+) positives=(\d+)$", line)
        if m:
            got.append({"name": m.group(1), "auroc": float(m.group(2)), "n": int(m.group(3)),
                        "positives": int(m.group(4))})
    log("drew " + png)
    return {"picture": png, "title": title, "curves": got,
            "command": ENV_TEXT + " " + shlex.join(cmd)}


def csv_rows(path):
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def scored_keys(db, expr):
    """The score parts (sorted, comma-separated) of the JSON that expr gives in db."""
    return sql("SELECT group_concat(key) FROM (SELECT key FROM json_each((%s)) ORDER BY key);"
               % expr, db).strip()


def class_scores(method, cls, images=10000):
    """build/bench/METHOD-classCLS-scores.csv; exported first, when missing, from the
    scored table of build/bench/METHOD-classCLS.db (method_auroc.sh's, from a run before
    it wrote the file) if that table is its model's (same score parts) and holds the
    number of test images that BENCH_METHODS gives the method. GANomaly's DB (the
    pretrained model as 'm' beside the fashion table) is scored here, all 10,000 test
    images, when its table is missing or not so. None when there is nothing to draw."""
    csv = "%s/%s-class%d-scores.csv" % (OUT, method, cls)
    db = "%s/%s-class%d.db" % (OUT, method, cls)
    if os.path.exists(csv) or not os.path.exists(db):
        return csv if os.path.exists(csv) else None
    have = sql("SELECT count(*) FROM sqlite_master WHERE name = 'scored';", db).strip() == "1"
    if have:
        ours = scored_keys(db, "SELECT j FROM scored LIMIT 1")
        model = scored_keys(db, "SELECT anomaly_scores(image, 'm') FROM fashion "
                                "WHERE split = 'test' LIMIT 1")
        n = int(sql("SELECT count(*) FROM scored;", db))
        if ours != model:
            log("%s: its scored table holds the parts %s, its model gives %s: not this model's"
                % (db, ours, model))
            have = False
        elif n != (10000 if method == "ganomaly" else images):
            log("%s: its scored table holds %d test images, not %d: not the run BENCH_METHODS "
                "describes" % (db, n, images))
            have = False
    if not have:
        if method != "ganomaly":
            log("%s: no scored table to use: %s left out of the picture" % (db, method))
            return None
        log("scoring the Fashion-MNIST test set with the GANomaly model in %s" % db)
        sql("DROP TABLE IF EXISTS scored;\n"
            "CREATE TABLE scored AS SELECT label, anomaly_scores(image, 'm') AS j FROM fashion\n"
            "  WHERE split = 'test' ORDER BY idx;", db)
    log("exporting %s from %s" % (csv, db))
    sql(".headers off\n.mode csv\n.once %s\n"
        "SELECT j ->> 'score', label <> %d FROM scored ORDER BY rowid;" % (csv, cls), db)
    return csv


def figure_fashion():
    """ROC curves of the section-4 detectors (and GANomaly) on the methods' class."""
    cls = env_int("BENCH_METHOD_CLASS", 1)
    found = set()
    for suffix in ("-class%d-scores.csv" % cls, "-class%d.db" % cls):
        for path in os.listdir(OUT):
            m = re.match(r"^([a-z0-9_]+)%s$" % re.escape(suffix), path)
            if m:
                found.add(m.group(1))
    specs = {split_spec(sp)[0]: split_spec(sp) for sp in method_specs()}
    curves = []
    for method in method_order(found, method_specs()):
        _, opts, limit = specs.get(method, (method, "{}", None))
        csv = class_scores(method, cls, int(limit or 10000))
        if csv:
            n = csv_rows(csv)
            curves.append((method_name(method, opts, "%d images" % n if n != 10000 else ""),
                           csv))
    if not curves:
        log("no build/bench/*-class%d-scores.csv: no Fashion-MNIST ROC picture" % cls)
        return None
    r = roc_plot("%s/roc-fashion-class%d.png" % (IMG, cls),
                 "Fashion-MNIST class %d normal, test ROC" % cls, curves)
    r["class"] = cls
    drawn = [c[1] for c in curves]
    r["missing"] = [m for m in method_order({split_spec(sp)[0] for sp in method_specs()},
                                            method_specs())
                    if "%s/%s-class%d-scores.csv" % (OUT, m, cls) not in drawn]
    return r


def figure_tiles(rows=None):
    """ROC curves of the tile detectors, from the rows of a tiles() run or else from
    every build/bench/tiles-METHOD-scores.csv; the galleries copied beside them."""
    if rows is not None:
        methods = [(r["method"], r["options"]) for r in rows if r["scores_csv"]]
    else:
        found = [m.group(1) for m in (re.match(r"^tiles-([a-z0-9_]+)-scores\.csv$", p)
                                      for p in os.listdir(OUT)) if m]
        specs = os.environ.get("BENCH_TILE_METHODS", DEFAULT_TILE_METHODS).split()
        opts = dict((sp.partition(":")[0], sp.partition(":")[2] or "{}") for sp in specs)
        methods = [(m, opts.get(m, "{}")) for m in method_order(found, specs)]
    if not methods:
        return None
    epochs = "1 epoch, quick" if QUICK else "15 epochs"
    r = roc_plot(IMG + "/roc-tiles.png", "Magnetic tiles, image-level ROC (64x64, %s)" % epochs,
                 [(method_name(m, o), "%s/tiles-%s-scores.csv" % (OUT, m)) for m, o in methods])
    r["galleries"] = {}
    for m, _ in methods:
        src = "%s/tiles-%s-gallery.png" % (OUT, m)
        if os.path.exists(src):
            dst = "%s/tiles-gallery-%s.png" % (IMG, m)
            shutil.copyfile(src, dst)
            r["galleries"][m] = dst
    return r


def figures(tile_rows=None):
    """The "figures" part: both ROC pictures (each None when it has no data)."""
    if not os.path.exists(ROC_PLOT):
        log("%s is missing (tests/bench/run.sh builds it): no pictures" % ROC_PLOT)
        return None
    os.makedirs(IMG, exist_ok=True)
    return {"fashion": figure_fashion(), "tiles": figure_tiles(tile_rows)}


# ---------------------------------------------------------------------------
# Generated blocks of docs/benchmarks.md, results/PART.json
# ---------------------------------------------------------------------------

def img_ref(path, base):
    """path (a picture) as a link from a document in the folder base."""
    return os.path.relpath(path, base)


def tile_kinds():
    """The defect kinds of the tile test set, as tile_auroc.sh's gallery orders them."""
    if not os.path.exists(OUT + "/tiles.db"):
        return None
    try:
        out = sql("SELECT group_concat(kind, ', ') FROM (SELECT DISTINCT kind FROM images\n"
                  "  WHERE split = 'test' AND kind <> 'good' ORDER BY kind);", OUT + "/tiles.db")
        return out.strip() or None
    except (CommandError, OSError):
        return None


def block_tiles(rows, fig, machine, base):
    """Section 5's generated block: the table, the ROC picture, the galleries, the commands.
    base: the folder of the document it goes into (for the picture links)."""
    def sec(x):
        return "–" if x is None else "{:,.0f}".format(x)

    L = ["From `make bench`'s part \"tiles\" (`BENCH_PARTS=tiles` runs it alone), %s, %s (%d "
         "cores), OpenBLAS core %s, %d thread(s)%s; seconds are wall-clock." % (machine["date"], machine["cpu"], machine["cores"],
                                      machine["openblas_core"], machine["threads"],
                                      ", models of an earlier run (BENCH_TILE_REUSE=1)"
                                      if TILE_REUSE else
                                      ", from the outputs of the commands below run beforehand, "
                                      "up to four at once beside other work (BENCH_TILE_LOGS)"
                                      if TILE_LOGS else ""),
         "",
         "| method | options | image AUROC | parts | pixel AUROC | F1 at the threshold | "
         "training s | scoring s |",
         "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["image_auroc"]
        parts = ", ".join("%s %.4f" % (k, v) for k, v in a.items() if k != "score")
        train = sec(r["train_seconds"])
        if r.get("reuse") and (r["train_seconds"] or 0) <= 1:
            train = "reused"
        L.append("| %s | %s | %.4f | %s | %s | %s | %s | %s |" % (
            method_name(r["method"]), "`%s`" % r["options"] if json.loads(r["options"]) else "",
            a["score"], parts, "–" if r["pixel_auroc"] is None else "%.4f" % r["pixel_auroc"],
            "–" if r["f1"] is None else "%.3f" % r["f1"], train, sec(r["score_seconds"])))
    L.append("")
    if fig and fig.get("tiles"):
        t = fig["tiles"]
        L.append("![Image-level ROC curves of the methods above on the magnetic-tile test set, "
                 "AUROC in the legend](%s)" % img_ref(t["picture"], base))
        L.append("")
        if t["galleries"]:
            kinds = tile_kinds()
            L.append("### Heat maps")
            L.append("")
            L.append("`anomaly_montage` of the same test tiles for each method, top to bottom: "
                     "three good tiles, then one of each defect kind%s. Each row shows the input "
                     "as the model saw it, its repair and its heat map on the model's calibrated "
                     "colour scale, with the score under them, in red when it is over the model's "
                     "threshold." % (" (%s)" % kinds if kinds else ""))
            L.append("")
            ms = list(t["galleries"])
            L.append("| " + " | ".join(method_name(m) for m in ms) + " |")
            L.append("|" + "---|" * len(ms))
            L.append("| " + " | ".join("![%s](%s)" % (method_name(m), img_ref(t["galleries"][m], base))
                                       for m in ms) + " |")
            L.append("")
    L.append("Commands (the pixel AUROC and the gallery took a further %s s in all):"
             % sec(sum(r["pixel_seconds"] or 0 for r in rows)))
    L.append("")
    for r in rows:
        L.append("    " + r["command"] + "   # " + r["summary"])
    return "\n".join(L)


def block_figure_fashion(fig, base):
    """The picture of the section-4 detectors' ROC curves, and what it is."""
    f = fig["fashion"]
    counted = any(c["n"] != 10000 for c in f["curves"])
    gan = any(c["name"].startswith("GANomaly") for c in f["curves"])
    missing = ", ".join(method_name(m) for m in f.get("missing", []))
    return "\n".join([
        "![ROC curves of the detectors above on Fashion-MNIST class %d, AUROC in the legend](%s)"
        % (f["class"], img_ref(f["picture"], base)),
        "",
        "The ROC curves of the detectors above (class %d normal, the other nine classes anomalous, "
        "test scores%s%s%s), drawn by `BENCH_PARTS=figures make bench` with build/bench/roc_plot "
        "from the build/bench/METHOD-class%d-scores.csv files that "
        "tests/bench/method_auroc.sh writes." % (
            f["class"], ", all 10,000 test images unless the legend gives a count" if counted else "",
            "; GANomaly is the pretrained models/fashion-ganomaly-class%d.safetensors" % f["class"]
            if gan else "", "; not drawn, for want of a scores file: " + missing if missing else "",
            f["class"])])


BLOCK_TITLES = {"tiles": "Magnetic tiles (generated)",
                "scan": "9. End to end in SQL: row by row and batched",
                "peers": "6. Speed against ONNX Runtime and PyTorch",
                "methods_torch": "7. Every detector against its PyTorch reference",
                "memory": "8. Memory while scoring",
                "threads": "10. The BLAS's threads: anomaly_config('threads', n)",
                "figure_fashion": "Fashion-MNIST ROC curves (generated)"}


def update_doc(blocks, path=DOC):
    """Replace the lines between "<!-- bench:NAME -->" and "<!-- /bench:NAME -->" in path
    by blocks[NAME]; a block without its markers goes at the end as a new section.
    Every other line is left as it is."""
    with open(path) as f:
        lines = f.read().split("\n")
    for name, text in blocks.items():
        begin, end = "<!-- bench:%s -->" % name, "<!-- /bench:%s -->" % name
        body = text.rstrip("\n").split("\n")
        stripped = [ln.strip() for ln in lines]
        if begin in stripped and end in stripped[stripped.index(begin):]:
            i = stripped.index(begin)
            j = stripped.index(end, i)
            lines[i + 1:j] = [""] + body + [""]
            log("%s: block %s rewritten" % (path, name))
        else:
            while lines and lines[-1] == "":
                lines.pop()
            lines += ["", "## " + BLOCK_TITLES.get(name, name), "", begin, ""] + body + ["", end, ""]
            log("%s: no markers for block %s: appended at the end" % (path, name))
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)


def save_part(name, data, res):
    """build/bench/results/NAME.json: one part's results with its run's machine and settings."""
    os.makedirs(RESULTS, exist_ok=True)
    with open("%s/%s.json" % (RESULTS, name), "w") as f:
        json.dump({"part": name, "quick": QUICK, "machine": res["machine"],
                   "settings": res["settings"], name: data}, f, indent=1)
        f.write("\n")


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
    if {"accuracy", "speed", "train"} & set(PARTS):
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
    if "peers" in PARTS:
        res["peers"] = peers()
    if "methods_torch" in PARTS:
        res["methods_torch"] = methods_torch()
    if "scan" in PARTS:
        res["scan"] = scan()
    if "memory" in PARTS:
        res["memory"] = memory()
    if "threads" in PARTS:
        res["threads"] = threads()
    tile_rows = tiles() if "tiles" in PARTS else None
    if tile_rows is not None:
        res["tiles"] = tile_rows
    if "figures" in PARTS or "methods" in PARTS or tile_rows is not None:
        res["figures"] = figures(tile_rows)
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    for part in ("accuracy", "speed", "train", "methods", "methods_speed", "tiles", "figures",
                 "peers", "methods_torch", "scan", "memory", "threads"):
        if res.get(part) is not None:
            save_part(part, res[part], res)
    blocks = {}
    if res.get("tiles"):
        blocks["tiles"] = block_tiles(res["tiles"], res.get("figures"), res["machine"],
                                      os.path.dirname(DOC))
    if res.get("peers"):
        blocks["peers"] = block_peers(res["peers"], res["machine"])
    if res.get("methods_torch"):
        blocks["methods_torch"] = block_methods_torch(res["methods_torch"], res["machine"])
    if res.get("memory"):
        blocks["memory"] = block_memory(res["memory"], res["machine"])
    if res.get("scan"):
        blocks["scan"] = block_scan(res["scan"], res["machine"])
    if res.get("threads"):
        blocks["threads"] = block_threads(res["threads"], res["machine"])
    if res.get("figures") and res["figures"]["fashion"]:
        blocks["figure_fashion"] = block_figure_fashion(res["figures"], os.path.dirname(DOC))
    if DOCS and blocks:
        update_doc(blocks)
    text = report(res)
    with open(OUT + "/report.md", "w") as f:
        f.write(text + "\n")
    with open(OUT + "/results.json", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(text)
    log("wrote %s/report.md, %s/results.json and %s/" % (OUT, OUT, RESULTS))


if __name__ == "__main__":
    main()
