#!/usr/bin/env node
// score_folder.js - sqlite-anomaly from Node, with better-sqlite3 12 (Node 20 or later).
//
//     npm install --prefix build/node-example better-sqlite3@12
//     NODE_PATH=build/node-example/node_modules node examples/node/score_folder.js FOLDER MODEL_FILE [DB]
//
// Loads the extension (./anomaly, or $ANOMALY_EXT), imports every PNG of
// FOLDER into photos(name, image), registers MODEL_FILE as the model 'm' and
// prints the photos from the most anomalous down, with their scores, scored
// in batches on every core by anomaly_scan. DB defaults to an in-memory
// database. Its dependency is in package.json next to it; the test
// tests/sql/example_node.sh installs from that into build/node-example.
//
// better-sqlite3 does not use the system's libsqlite3: it compiles its own
// SQLite into its addon (`SELECT sqlite_version()` says which), and the
// extension is loaded into that one. Its loadExtension(path) works without
// any enable call (the SQL function load_extension() stays off) and takes the
// path without the suffix: SQLite tries it as given, then with .so (.dylib
// on macOS, .dll on Windows). A path that does not load throws a SqliteError
// naming the last file tried, which this script prints before exiting 1:
//     score_folder: /path/to/anomaly.so: cannot open shared object file: No such file or directory

'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Database = require('better-sqlite3');

function main(args) {
  if (args.length < 2 || args.length > 3) {
    throw new Error('usage: node score_folder.js FOLDER MODEL_FILE [DB]');
  }
  const [folder, modelFile, dbFile = ':memory:'] = args;
  if (!fs.statSync(folder, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`no folder '${folder}'`);
  }
  const db = new Database(dbFile);
  // absolute, or dlopen() would look for a bare name on the library path
  db.loadExtension(path.resolve(process.env.ANOMALY_EXT || './anomaly'));

  db.exec('CREATE TABLE IF NOT EXISTS photos(name TEXT PRIMARY KEY, image BLOB)');
  const insert = db.prepare('INSERT OR REPLACE INTO photos VALUES (?, ?)');
  const pngs = fs.readdirSync(folder).filter((name) => name.toLowerCase().endsWith('.png')).sort();
  db.transaction(() => {
    for (const name of pngs) insert.run(name, fs.readFileSync(path.join(folder, name)));
    // a missing model file fails here: "anomaly_model_from_file: cannot open '...': ..."
    db.prepare(`INSERT OR REPLACE INTO anomaly_models(name, model)
                VALUES ('m', anomaly_model_from_file(?))`).run(modelFile);
  })();

  const rows = db.prepare(`SELECT id, score FROM anomaly_scan('m', 'SELECT name, image FROM photos')
                           ORDER BY score DESC`).all();
  for (const { id, score } of rows) console.log(`${String(id).padEnd(12)} ${score.toFixed(4)}`);
  db.close();
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(`score_folder: ${err.message}`);
  process.exitCode = 1;
}
