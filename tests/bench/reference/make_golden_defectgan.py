"""make_golden_defectgan.py - write the DefectGAN golden files under tests/data/ and check them.

  /usr/bin/python3 tests/bench/reference/make_golden_defectgan.py

Uses defectgan_ref.py (PyTorch networks, numpy LBP oracle, the defect
synthesiser replayed with core/rng.c's generator) and writes:

  golden-defectgan-defects.safetensors   the synthesiser: for each case, the
      clean images, the images with defects and the masks, from one Rng(seed)
      drawn image after image; the metadata "<case>" holds the case's options
      as JSON: p, max, size_min, size_max, kinds, seed, shape [C, H, W].
  golden-defectgan-lbp.safetensors       the LBP oracle on small grey images
      (continuous, quantised with ties, 1x1, 2x3, the luma of an RGB image):
      codes for several (P, R), a Hamming map, its box smoothing for windows
      1, 3, 5 and top-fraction means.
  tiny-defectgan.safetensors, tiny32rgb-defectgan.safetensors   the models
  golden-defectgan-tiny.safetensors, golden-defectgan-tiny32rgb.safetensors
      eval-mode outputs for 5 inputs (make_golden's gradient, checkerboard,
      noise, constant, and the gradient with defects): x_hat, d_prob, recon,
      the LBP map and score with the defaults (P 8, R 1, window 3, top 0.01)
      and with P 16, R 2, window 5, top 0.05 (map_opt, score_opt). The maps are
      the oracle's on the golden x_hat (float64 forward rounded to float32).
  golden-defectgan-train-tiny.safetensors   two training steps (Trainer) of the
      small TRAIN_CFG from a fresh DCGAN init on 8 images, the defects drawn
      with the default options from Rng(DEFECT_SEED), image after image and
      step after step: "before.", "step1.", "step2." + every model tensor and
      "stepK.err_g|err_d|err_l1".

Forward and training outputs come from a float64 run (a double copy of the
float32 weights) rounded to float32; the float32 run's distance is printed.
LBP codes on a repair flip where a neighbour is within rounding of its centre:
the script prints the smallest such margin and how many map pixels the float32
run changes, which is why the C test compares its LBP code against the oracle
on the golden x_hat, bit for bit, and its end-to-end maps only loosely.
Needs torch and numpy; deterministic (fixed seeds, one thread), a few seconds.
"""

import copy
import json
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import defectgan_ref as dr  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mgt  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")

# name, (C, H, W), options, seed, images
DEFECT_CASES = [
    ("all", (1, 32, 32), dict(dr.DEFECT_DEFAULTS, p=1.0), 11, 4),
    ("block", (1, 16, 24), {"p": 1.0, "max": 4, "size_min": 0.1, "size_max": 0.6, "kinds": ["block"]}, 12, 2),
    ("line", (1, 16, 24), {"p": 1.0, "max": 4, "size_min": 0.3, "size_max": 1.0, "kinds": ["line"]}, 13, 2),
    ("noise", (1, 16, 24), {"p": 1.0, "max": 4, "size_min": 0.1, "size_max": 0.6, "kinds": ["noise"]}, 14, 2),
    ("shift", (1, 16, 24), {"p": 1.0, "max": 4, "size_min": 0.1, "size_max": 0.6, "kinds": ["shift"]}, 15, 2),
    ("rgb", (3, 16, 16), dict(dr.DEFECT_DEFAULTS, p=1.0, max=4, size_max=0.6), 16, 2),
    ("p05", (1, 8, 8), dict(dr.DEFECT_DEFAULTS, p=0.5, size_max=1.0), 21, 8),
]

LBP_SETTINGS = [(8, 1.0), (4, 1.0), (16, 2.0), (8, 2.5), (12, 1.5), (24, 3.0)]
TOPS = [1e-4, 0.01, 0.1, 0.5, 1.0]

FWD_CONFIGS = [
    ("tiny", {"isize": 32, "nc": 1, "nz": 8, "ngf": 4, "ndf": 4, "extralayers": 0}, 2024),
    ("tiny32rgb", {"isize": 32, "nc": 3, "nz": 8, "ngf": 4, "ndf": 4, "extralayers": 1}, 2025),
]
OPT = {"P": 16, "R": 2.0, "window": 5, "top": 0.05}

TRAIN_CFG = {"isize": 32, "nc": 1, "nz": 8, "ngf": 4, "ndf": 4, "extralayers": 0}
TRAIN_SEED, DEFECT_SEED, BATCH, STEPS = 8642, 77, 8, 2
LOSSES = ["err_g", "err_d", "err_l1"]


def clean_images(c, h, w, n, seed):
    """(n, c, h, w) float32 smooth patterns in about [-0.95, 0.95], plus a little noise."""
    rs = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.arange(h) / max(h - 1, 1), np.arange(w) / max(w - 1, 1), indexing="ij")
    out = np.zeros((n, c, h, w))
    for i in range(n):
        for ch in range(c):
            fx, fy, ph = rs.uniform(0.5, 2.5), rs.uniform(0.5, 2.5), rs.uniform(0, 2 * np.pi)
            out[i, ch] = 0.8 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph) + rs.uniform(-0.15, 0.15, (h, w))
    return np.clip(out, -0.95, 0.95).astype(np.float32)


def golden_defects():
    golden, meta = {}, {}
    print("synthesiser cases:")
    for name, (c, h, w), opts, seed, n in DEFECT_CASES:
        x = clean_images(c, h, w, n, seed)
        y = x.copy()
        masks = np.zeros((n, h, w), np.float32)
        counts = []
        r = dr.Rng(seed)
        for i in range(n):
            k, m = dr.defects_apply(y[i], opts, r)
            masks[i] = m
            counts.append(k)
        assert np.abs(y).max() <= 1.0
        changed = (y != x).any(axis=1)
        assert not (changed & (masks == 0)).any(), "a pixel outside the mask changed"
        kinds = "all" if len(opts["kinds"]) == 4 else ",".join(opts["kinds"])
        meta[name] = json.dumps({"p": opts["p"], "max": opts["max"], "size_min": opts["size_min"],
                                 "size_max": opts["size_max"], "kinds": kinds, "seed": seed,
                                 "shape": [c, h, w]}, separators=(",", ":"))
        golden[name + ".clean"] = x
        golden[name + ".defects"] = y
        golden[name + ".mask"] = masks
        golden[name + ".count"] = np.array(counts, np.float32)
        print("  %-6s %dx%dx%d seed %d: defects per image %s, changed pixels %s"
              % (name, c, h, w, seed, counts, changed.reshape(n, -1).sum(axis=1).tolist()))
    meta["description"] = ("core/defects.c replayed in Python: per case, images drawn one after "
                           "another from Rng(seed); the case's options are the JSON metadata "
                           "under its name")
    meta["cases"] = ",".join(c[0] for c in DEFECT_CASES)
    meta["software"] = dr.SOFTWARE
    path = os.path.join(DATA, "golden-defectgan-defects.safetensors")
    size = st.save(path, golden, meta)
    g, gm = st.load(path)
    assert gm == meta and all(np.array_equal(g[k], golden[k]) for k in golden)
    # rerun from the file: the same images
    for name, _, opts, seed, n in DEFECT_CASES:
        y = g[name + ".clean"].copy()
        r = dr.Rng(seed)
        for i in range(n):
            dr.defects_apply(y[i], opts, r)
        assert np.array_equal(y, g[name + ".defects"]), name
    print("  %s: %d bytes, self-check ok" % (os.path.relpath(path, ROOT), size))


def lbp_images():
    rs = np.random.RandomState(31)
    g1 = rs.uniform(-1, 1, (13, 17)).astype(np.float32)
    g2 = (np.round(rs.uniform(-1, 1, (13, 17)) * 2) / 2).astype(np.float32)  # 5 levels: ties
    g3 = np.array([[0.25]], np.float32)
    g4 = rs.uniform(-1, 1, (2, 3)).astype(np.float32)
    rgb = rs.uniform(-1, 1, (3, 9, 11)).astype(np.float32)
    return {"g1": g1, "g2": g2, "g3": g3, "g4": g4}, rgb


def rname(R):
    return ("%g" % R)


def golden_lbp():
    imgs, rgb = lbp_images()
    golden = {"rgb": rgb, "rgb_grey": dr.grey(rgb)}
    imgs["rgb_grey"] = golden["rgb_grey"]
    for k, v in imgs.items():
        golden[k] = v
    for k, v in imgs.items():
        for P, R in LBP_SETTINGS:
            c = dr.lbp_codes(v, P, R)
            assert c.max() < 2 ** 24
            golden["codes.%s.P%dR%s" % (k, P, rname(R))] = c.astype(np.float32)
    ham = dr.hamming(dr.lbp_codes(imgs["g1"], 8, 1.0), dr.lbp_codes(imgs["g2"], 8, 1.0))
    golden["ham"] = ham
    for win in (1, 3, 5):
        golden["box%d" % win] = dr.box(ham, win)
    golden["tops"] = np.array(TOPS, np.float32)
    golden["top_mean"] = np.array([dr.top_mean(golden["box3"], t) for t in TOPS], np.float32)
    meta = {"description": "numpy LBP oracle (defectgan_ref.py) on small grey images: "
                           "codes.<image>.P<P>R<R>, ham = hamming(codes g1 P8R1, codes g2 P8R1), "
                           "box<w> = its box mean, top_mean[i] = top-fraction mean of box3 at tops[i]",
            "settings": ";".join("%d,%s" % (P, rname(R)) for P, R in LBP_SETTINGS),
            "software": dr.SOFTWARE}
    path = os.path.join(DATA, "golden-defectgan-lbp.safetensors")
    size = st.save(path, golden, meta)
    g, gm = st.load(path)
    assert gm == meta and all(np.array_equal(g[k], golden[k]) for k in golden)
    # sanity: the oracle's constant image is all ones, and codes of g2 (ties) differ from g1
    assert (dr.lbp_codes(np.full((4, 5), 0.3, np.float32), 8, 1.0) == 255).all()
    print("LBP oracle: %s, %d bytes; top means of box3 %s"
          % (os.path.relpath(path, ROOT), size, np.array2string(golden["top_mean"], precision=4)))


def forward(netg, netd, x):
    with torch.no_grad():
        x_hat = netg(x)
        prob, _ = netd(x)
    return x_hat, prob


def lbp_outputs(x, xh):
    """maps and scores of (n, C, H, W) float32 arrays with the defaults and OPT."""
    out = {"map": [], "score": [], "map_opt": [], "score_opt": []}
    for i in range(x.shape[0]):
        m = dr.score_map(x[i], xh[i], 8, 1.0, 3)
        mo = dr.score_map(x[i], xh[i], OPT["P"], OPT["R"], OPT["window"])
        out["map"].append(m)
        out["score"].append(dr.top_mean(m, 0.01))
        out["map_opt"].append(mo)
        out["score_opt"].append(dr.top_mean(mo, OPT["top"]))
    return {k: np.array(v, np.float32) for k, v in out.items()}


def golden_forward(name, cfg, seed):
    torch.manual_seed(seed)
    netg, netd = dr.build(cfg)
    nc, size = cfg["nc"], cfg["isize"]
    u8 = mg.make_inputs(nc, size, seed)
    x = (u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32)
    bad = x[0].copy()
    dr.defects_apply(bad, dict(dr.DEFECT_DEFAULTS, p=1.0, max=3, size_min=0.15, size_max=0.4), dr.Rng(seed))
    x = np.concatenate([x, bad[None]])
    x32 = torch.from_numpy(x)
    mg.set_batchnorm(netg, x32)
    mg.set_batchnorm(netd, x32)
    xh32, p32 = forward(netg, netd, x32)
    xh64, p64 = forward(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x32.double())
    xh = xh64.float().numpy()
    recon = np.abs(x.astype(np.float64) - xh.astype(np.float64)).reshape(x.shape[0], -1).mean(axis=1)
    golden = {"input": x, "x_hat": xh, "d_prob": p64.float().numpy(), "recon": recon.astype(np.float32)}
    golden.update(lbp_outputs(x, xh))
    model_path = os.path.join(DATA, "%s-defectgan.safetensors" % name)
    golden_path = os.path.join(DATA, "golden-defectgan-%s.safetensors" % name)
    model_size = dr.write_model(model_path, netg, netd, cfg)
    meta = {"description": "DefectGAN eval-mode outputs of %s-defectgan.safetensors for 5 inputs; "
                           "x_hat, d_prob, recon in float64 rounded to float32; maps and scores by the "
                           "numpy oracle on that x_hat" % name,
            "input_order": "gradient,checkerboard,noise,constant128,gradient+defects",
            "lbp_default": "P=8,R=1,window=3,top=0.01",
            "lbp_opt": "P=%d,R=%g,window=%d,top=%g" % (OPT["P"], OPT["R"], OPT["window"], OPT["top"]),
            "software": dr.SOFTWARE}
    golden_size = st.save(golden_path, golden, meta)

    # how fragile the codes of x_hat are: the float32 run's maps against the golden ones
    o32 = lbp_outputs(x, xh32.numpy())
    flips = int((o32["map"] != golden["map"]).sum())
    flips_opt = int((o32["map_opt"] != golden["map_opt"]).sum())
    margin = min(min(dr.lbp_margin(dr.grey(xh[i]), P, R) for i in range(x.shape[0]))
                 for P, R in ((8, 1.0), (OPT["P"], OPT["R"])))
    d = np.abs(xh32.double().numpy() - xh64.numpy()).max()
    print("%s: %s, torch seed %d" % (name, cfg, seed))
    print("  %-48s %7d bytes" % (os.path.relpath(model_path, ROOT), model_size))
    print("  %-48s %7d bytes" % (os.path.relpath(golden_path, ROOT), golden_size))
    print("  score %s" % np.array2string(golden["score"], precision=4))
    print("  score_opt %s" % np.array2string(golden["score_opt"], precision=4))
    print("  recon %s" % np.array2string(golden["recon"], precision=4))
    print("  float32 vs float64: x_hat %.2e, d_prob %.2e; smallest non-zero LBP margin on x_hat %.2e; "
          "map pixels the float32 x_hat changes: %d (default), %d (opt) of %d"
          % (d, np.abs(p32.double().numpy() - p64.numpy()).max(), margin, flips, flips_opt,
             golden["map"].size))

    # self-check from the files alone
    g, gm = st.load(golden_path)
    assert gm == meta and all(np.array_equal(g[k], golden[k]) for k in golden)
    ng, nd, cfg2, _ = dr.read_model(model_path)
    assert cfg2 == cfg, cfg2
    re_xh, re_p = forward(ng.double(), nd.double(), torch.from_numpy(g["input"]).double())
    assert np.array_equal(re_xh.float().numpy(), g["x_hat"])
    assert np.array_equal(re_p.float().numpy(), g["d_prob"])
    re = lbp_outputs(g["input"], g["x_hat"])
    assert all(np.array_equal(re[k], g[k]) for k in re)
    print("  self-check ok")


def defect_batch(x, r):
    xt = x.copy()
    for i in range(xt.shape[0]):
        dr.defects_apply(xt[i], dr.DEFECT_DEFAULTS, r)
    return xt


def golden_train():
    torch.manual_seed(TRAIN_SEED)
    netg, netd = dr.build(TRAIN_CFG)
    before = mgt.state(netg, netd)
    x = mgt.make_batch(BATCH, TRAIN_CFG["isize"], TRAIN_SEED)
    r = dr.Rng(DEFECT_SEED)
    xts = [defect_batch(x, r) for _ in range(STEPS)]
    runs = {}
    for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
        g2, d2 = copy.deepcopy(netg).to(dt), copy.deepcopy(netd).to(dt)
        tr = dr.Trainer(g2, d2)
        states, losses = [], []
        for s in range(STEPS):
            loss = tr.step(torch.from_numpy(x).to(dt), torch.from_numpy(xts[s]).to(dt))
            assert not loss["reinit_d"]
            states.append(mgt.state(g2, d2))
            losses.append(loss)
        runs[name] = (states, losses)
    golden = {"input": x}
    for k, v in before.items():
        golden["before." + k] = v.astype(np.float32)
    for i in range(STEPS):
        for k, v in runs["f64"][0][i].items():
            golden["step%d.%s" % (i + 1, k)] = v.astype(np.float32)
        for k in LOSSES:
            golden["step%d.%s" % (i + 1, k)] = np.array([runs["f64"][1][i][k]], np.float32)
    path = os.path.join(DATA, "golden-defectgan-train-tiny.safetensors")
    meta = {"description": "two DefectGAN training steps (defectgan_ref.Trainer) of the tiny network "
                           "on one batch of 8, defects from Rng(defect_seed) with the default options; "
                           "float64 rounded to float32",
            "defect_seed": str(DEFECT_SEED), "torch_seed": str(TRAIN_SEED),
            "cfg": str(TRAIN_CFG), "software": dr.SOFTWARE}
    size = st.save(path, golden, meta)
    lr = dr.TRAIN_DEFAULTS["lr"]
    changed = [int((xt != x).any(axis=(1, 2, 3)).sum()) for xt in xts]
    print("training %s, %d steps, images with defects per step %s" % (TRAIN_CFG, STEPS, changed))
    print("  %s: %d bytes" % (os.path.relpath(path, ROOT), size))
    for i in range(STEPS):
        s32, s64 = runs["f32"][0][i], runs["f64"][0][i]
        wd = max(np.abs(s32[k] - s64[k]).max() / lr for k in s64 if "running" not in k)
        rd = max(np.abs(s32[k] - s64[k]).max() / max(np.abs(s64[k]).max(), 1e-3) for k in s64 if "running" in k)
        ld = max(abs(runs["f32"][1][i][k] - runs["f64"][1][i][k]) / abs(runs["f64"][1][i][k]) for k in LOSSES)
        print("  step %d: losses %s; float32 vs float64: weights %.2e lr, running stats %.2e, losses %.2e"
              % (i + 1, ", ".join("%s %.6f" % (k, runs["f64"][1][i][k]) for k in LOSSES), wd, rd, ld))
    t, tm = st.load(path)
    assert tm == meta and all(np.array_equal(t[k], golden[k]) for k in golden)
    print("  self-check ok")


def main():
    torch.set_num_threads(1)
    os.makedirs(DATA, exist_ok=True)
    golden_defects()
    golden_lbp()
    for name, cfg, seed in FWD_CONFIGS:
        golden_forward(name, cfg, seed)
    golden_train()


if __name__ == "__main__":
    main()
