"""make_golden_anomalib.py - write the golden files of anomalib's GANomaly (first conv padded by 4).

  /usr/bin/python3 tests/bench/reference/make_golden_anomalib.py

anomalib's GANomaly pads the first conv of its encoders (E1, E2 and D's
features) by 4 where the authors pad by 1; our ganomaly builds that network
with the hyper-parameter first_pad 4. This script builds the tiny
configuration (isize 32, nc 3, nz 16, ngf 8) with anomalib_ganomaly_ref.py and
first_padding=4 from a fixed seed, makes batch norm non-trivial
(make_golden.set_batchnorm) and writes
  tests/data/tiny-anomalib-ganomaly.safetensors   the model, tensors under our
                                                  (the authors') names,
                                                  hparams with "first_pad":4
  tests/data/golden-anomalib-tiny.safetensors     4 inputs and the eval-mode
                                                  outputs (as make_golden.py's
                                                  golden files), and two
                                                  training steps from the
                                                  model's weights ("train.input",
                                                  "before.", "step1.", "step2.",
                                                  as make_golden_train.py's)
Outputs and steps are computed in float64 (a double copy of the float32
weights) and rounded to float32; the float32 run's largest differences are
printed. The self-check reloads both files, rebuilds the networks from the
model file alone and requires the float64 outputs and steps bit for bit.
Needs torch and numpy; deterministic (fixed seeds, one thread), about 2 s.
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

import anomalib_ganomaly_ref as ar  # noqa: E402
import ganomaly_ref as gr  # noqa: E402
import make_golden as mg  # noqa: E402
import make_golden_train as mt  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
MODEL = os.path.join(DATA, "tiny-anomalib-ganomaly.safetensors")
GOLDEN = os.path.join(DATA, "golden-anomalib-tiny.safetensors")

CFG = {"isize": 32, "nc": 3, "nz": 16, "ngf": 8, "extralayers": 0}
FIRST_PAD = 4
SEED = 2461      # see the note in main() on the choice
BATCH = 8
STEPS = 2
HPARAMS = {"nz": CFG["nz"], "ngf": CFG["ngf"], "extralayers": CFG["extralayers"],
           "first_pad": FIRST_PAD}


def build():
    """(generator, discriminator) of anomalib's GanomalyModel, DCGAN init."""
    net = ar.GanomalyModel(CFG["isize"], CFG["nc"], CFG["ngf"], CFG["nz"], CFG["extralayers"],
                           first_padding=FIRST_PAD)
    return net.generator, net.discriminator


def our_names(netg, netd):
    """anomalib state_dict key -> our name ("netg." + the authors' key, "netd." + key).
    The authors' NetG lists its tensors in the same order as anomalib's
    Generator (encoder: initial, extra, pyramid, final; decoder: initial,
    pyramid, extra, final) with the same shapes; D's keys are the same."""
    authors = gr.NetG(CFG).state_dict()
    ours = {}
    for (ka, va), (kg, vg) in zip(netg.state_dict().items(), authors.items()):
        assert va.shape == vg.shape and ka.rsplit(".", 1)[1] == kg.rsplit(".", 1)[1], (ka, kg)
        assert ka.split(".")[0] == kg.split(".")[0], (ka, kg)
        ours[ka] = "netg." + kg
    assert len(ours) == len(authors) == len(netg.state_dict())
    return ours, {k: "netd." + k for k in netd.state_dict()}


def tensors_of(netg, netd, dtype=np.float32):
    """Our name -> numpy array, in model-file order (num_batches_tracked skipped)."""
    gmap, dmap = our_names(netg, netd)
    out = {}
    for net, names in ((netg, gmap), (netd, dmap)):
        for k, v in net.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[names[k]] = v.detach().cpu().numpy().astype(dtype)
    return out


def load_tensors(netg, netd, tensors, prefix=""):
    """Copy tensors[prefix + our name] into netg and netd."""
    gmap, dmap = our_names(netg, netd)
    for net, names in ((netg, gmap), (netd, dmap)):
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            src = tensors[prefix + names[k]]
            assert tuple(src.shape) == tuple(v.shape), k
            with torch.no_grad():
                v.copy_(torch.from_numpy(np.asarray(src, dtype=np.float64)))


def train_batch():
    """(BATCH, 3, isize, isize) float32 in [-0.9, 0.9]: make_golden_train's
    patterns, mirrored and transposed in the other two channels."""
    b = mt.make_batch(BATCH, CFG["isize"], SEED)[:, 0]
    return np.ascontiguousarray(np.stack([b, b[:, :, ::-1], 0.8 * b.transpose(0, 2, 1)], axis=1))


def train(netg, netd, x):
    """STEPS of the authors' training step (ganomaly_ref.Trainer, which only
    needs G(x) -> (x_hat, z, z') and D(x) -> (prob, features)): [our tensors
    after each step], [losses]."""
    tr = gr.Trainer(netg, netd)
    states, losses = [], []
    for _ in range(STEPS):
        loss = tr.step(x)
        assert not loss["reinit_d"], "D was re-initialised"
        states.append(tensors_of(netg, netd, np.float64))
        losses.append(loss)
    return states, losses


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    netg, netd = build()
    u8 = mg.make_inputs(CFG["nc"], CFG["isize"], SEED)
    x32 = torch.from_numpy((u8.astype(np.float64) / 127.5 - 1.0).astype(np.float32))
    mg.set_batchnorm(netg, x32)
    mg.set_batchnorm(netd, x32)
    netg.eval()
    netd.eval()
    with torch.no_grad():
        feat_shape = tuple(netd(x32)[1].shape[1:])
        z_shape = tuple(netg(x32)[1].shape[1:])
    assert z_shape == (CFG["nz"], 1, 1), z_shape
    out32 = mg.forward(netg, netd, x32)
    out64 = mg.forward(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x32.double())
    diffs = mg.max_diffs(out32, out64)

    # the model file: the same writer as the other references, our names
    tensors = tensors_of(netg, netd)
    data = st.encode(tensors, {})
    _, section = st.decode_raw(data)
    meta = gr.model_metadata(CFG, gr.crc32_hex(section), hparams=HPARAMS)
    model_size = st.save(MODEL, tensors, meta)

    # training from the model's weights, in float32 and float64
    xt = torch.from_numpy(train_batch())
    g32, d32 = copy.deepcopy(netg), copy.deepcopy(netd)
    g64, d64 = copy.deepcopy(netg).double(), copy.deepcopy(netd).double()
    s32, l32 = train(g32, d32, xt)
    s64, l64 = train(g64, d64, xt.double())
    # The seed is one under which every weight's step-1 update is at least
    # 0.99 lr: no gradient sits within float32 noise of 0, so the C test can
    # hold every weight to 1e-3 lr. (Of seeds 2460..2475, 2468 left one
    # weight at 0.91 lr whose float32 error was 1.8e-2 lr, and 2473 one whose
    # update changes sign in float32; see README.md, "Training golden".)
    moved = min((np.abs(s64[0][k] - tensors[k]) / gr.TRAIN_DEFAULTS["lr"]).min()
                for k in tensors if "running" not in k)
    assert moved >= 0.99, "a step-1 update of %.3f lr: pick another seed" % moved

    golden = {"input_u8": u8.astype(np.float32), "input": x32.numpy()}
    for k in mg.OUTPUTS:
        golden[k] = out64[k].float().numpy()
    golden["train.input"] = xt.numpy()
    golden.update({"before." + k: v for k, v in tensors.items()})
    for i in range(STEPS):
        golden.update({"step%d.%s" % (i + 1, k): v for k, v in s64[i].items()})
        golden.update({"step%d.%s" % (i + 1, k): np.array([l64[i][k]]) for k in mt.LOSSES})
    golden = {k: np.asarray(v, dtype=np.float32) for k, v in golden.items()}
    gmeta = {
        "description": "anomalib's GANomaly (first conv padded by %d): eval-mode outputs of "
                       "tiny-anomalib-ganomaly.safetensors for 4 inputs, and two training steps "
                       "(the authors' optimize_params) from its weights on train.input; "
                       "computed in float64 and rounded to float32" % FIRST_PAD,
        "model": os.path.basename(MODEL),
        "input_order": "gradient,checkerboard,noise,constant128",
        "d_features_shape": "N,%d,%d,%d" % feat_shape,
        "first_pad": str(FIRST_PAD),
        "torch_seed": str(SEED),
        "software": gr.SOFTWARE,
    }
    golden_size = st.save(GOLDEN, golden, gmeta)

    # ---- self-check: everything again from the files alone ----
    g, m2 = st.load(GOLDEN)
    assert m2 == gmeta and list(g) == list(golden)
    assert all(np.array_equal(g[k], golden[k]) for k in golden)
    header, data = st.read_raw(MODEL)
    meta2 = header["__metadata__"]
    assert meta2 == meta and meta2["checksum"] == gr.crc32_hex(data)
    assert json.loads(meta2["hparams"])["first_pad"] == FIRST_PAD
    t, _ = st.load(MODEL)
    torch.manual_seed(0)
    ng, nd = build()
    load_tensors(ng, nd, t)
    ng, nd = ng.double().eval(), nd.double().eval()
    re64 = mg.forward(ng, nd, torch.from_numpy(g["input"]).double())
    for k in mg.OUTPUTS:
        assert np.array_equal(re64[k].float().numpy(), g[k]), "float64 rerun differs on " + k
    rs, rl = train(ng, nd, torch.from_numpy(g["train.input"]).double())
    for i in range(STEPS):
        pre = "step%d." % (i + 1)
        for k, v in rs[i].items():
            assert np.array_equal(v.astype(np.float32), g[pre + k]), pre + k
        for k in mt.LOSSES:
            assert np.float32(rl[i][k]) == g[pre + k][0], pre + k

    print("anomalib tiny, first_pad %d: %s" % (FIRST_PAD, CFG))
    print("  %-46s %7d bytes, %d tensors, %s" % (os.path.relpath(MODEL, ROOT), model_size,
                                                 len(tensors), meta["checksum"]))
    print("  %-46s %7d bytes, %d tensors" % (os.path.relpath(GOLDEN, ROOT), golden_size, len(golden)))
    print("  d_features %s, z %s" % (feat_shape, z_shape))
    print("  score %s" % np.array2string(g["score"], precision=6))
    print("  float32 run vs float64 truth (max abs, max abs / max |truth|):")
    for k in mg.OUTPUTS:
        print("    %-10s %.3e  %.3e" % (k, diffs[k][0], diffs[k][1]))
    for i in range(STEPS):
        worst = max(np.abs(s32[i][k] - s64[i][k]).max() for k in s64[i] if "running" not in k)
        lw = max(abs(l32[i][k] - l64[i][k]) / max(abs(l64[i][k]), 1e-3) for k in mt.LOSSES)
        print("  step %d: float32 weights within %.2e lr, losses within %.2e relative, err_d %.6f"
              % (i + 1, worst / gr.TRAIN_DEFAULTS["lr"], lw, l64[i]["err_d"]))
    print("  self-check ok: files reload, nets rebuilt from the model file reproduce the "
          "float64 outputs and steps bit for bit")


if __name__ == "__main__":
    main()
