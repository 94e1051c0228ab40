// onnx_score.js - GANomaly scoring throughput of ONNX Runtime (onnxruntime-node).
//
//   node tests/bench/peers/onnx_score.js MODEL.onnx INPUTS N --size S [--channels 1]
//        [--threads T] [--ort DIR]
//
// MODEL.onnx is a generator that tests/bench/peers/make_models.py exported:
// input "x" (N, C, S, S), outputs "z" and "z_prime" (N, nz). INPUTS holds N
// images as raw float32 (N, C, S, S), written by bench_core --dump: the same
// fitted inputs our scorer and PyTorch see. The session runs on the CPU with
// intraOpNumThreads T, interOpNumThreads 1, graphOptimizationLevel 'all',
// sequential execution. One untimed batch of 64 warms up; then all N images
// are scored at batch 1 and at batch 64 (score = mean over nz of (z - z')^2,
// computed here; its time is counted). Prints one JSON line with images per
// second at each batch size and the sum of the scores.
//
// onnxruntime-node is loaded from DIR/node_modules (default build/bench/node,
// where `ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix build/bench/node
// onnxruntime-node` puts it).
'use strict';

const fs = require('fs');
const path = require('path');

function usage(msg) {
  process.stderr.write('onnx_score.js: ' + msg + '\nusage: node onnx_score.js MODEL.onnx ' +
                       'INPUTS N --size S [--channels C] [--threads T] [--ort DIR]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { pos: [], size: 0, channels: 1, threads: 1, ort: 'build/bench/node' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--size' || k === '--channels' || k === '--threads') {
      if (i + 1 >= argv.length) usage(k + ' needs a value');
      a[k.slice(2)] = parseInt(argv[++i], 10);
    } else if (k === '--ort') {
      if (i + 1 >= argv.length) usage('--ort needs a folder');
      a.ort = argv[++i];
    } else if (k.startsWith('--')) {
      usage('unknown option ' + k);
    } else {
      a.pos.push(k);
    }
  }
  if (a.pos.length !== 3) usage('expected MODEL.onnx INPUTS N');
  a.model = a.pos[0];
  a.inputs = a.pos[1];
  a.n = parseInt(a.pos[2], 10);
  if (!(a.n >= 1) || !(a.size >= 1) || !(a.channels >= 1) || !(a.threads >= 1)) {
    usage('N, --size, --channels and --threads must be positive integers');
  }
  return a;
}

// Sum over the batch of mean over nz of (z - z')^2.
function scoreSum(out, k) {
  const z = out.z.data, zp = out.z_prime.data;
  const nz = z.length / k;
  let total = 0;
  for (let i = 0; i < k; i++) {
    let s = 0;
    for (let j = i * nz; j < (i + 1) * nz; j++) {
      const d = z[j] - zp[j];
      s += d * d;
    }
    total += s / nz;
  }
  return total;
}

// Score images [0, n) of x at batch b; returns [seconds, sum of scores].
async function timeBatches(ort, session, x, n, img, dims, b) {
  let total = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i += b) {
    const k = Math.min(b, n - i);
    const t = new ort.Tensor('float32', x.subarray(i * img, (i + k) * img), [k, ...dims]);
    const out = await session.run({ x: t });
    total += scoreSum(out, k);
  }
  return [Number(process.hrtime.bigint() - t0) * 1e-9, total];
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const ort = require(path.resolve(a.ort, 'node_modules', 'onnxruntime-node'));
  const dims = [a.channels, a.size, a.size];
  const img = a.channels * a.size * a.size;
  const buf = fs.readFileSync(a.inputs);
  if (buf.length < a.n * img * 4) {
    throw new Error(a.inputs + ': ' + buf.length + ' bytes, ' + a.n + ' images of ' + dims.join('x') +
                    ' need ' + a.n * img * 4);
  }
  // a copy: Buffer's bytes may sit at an offset that Float32Array cannot view
  const x = new Float32Array(a.n * img);
  for (let i = 0; i < x.length; i++) x[i] = buf.readFloatLE(4 * i);
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const res = { impl: 'onnxruntime-node', version: ort.env.versions ? ort.env.versions.node : null,
                threads: a.threads, images: a.n, shape: dims };
  await timeBatches(ort, session, x, Math.min(a.n, 64), img, dims, 64);   // warm-up
  for (const b of [1, 64]) {
    const [s, total] = await timeBatches(ort, session, x, a.n, img, dims, b);
    res['batch' + b] = { seconds: s, images_per_second: a.n / s, score_sum: total };
  }
  await session.release();
  process.stdout.write(JSON.stringify(res) + '\n');
}

main().catch((err) => {
  process.stderr.write('onnx_score.js: ' + (err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
