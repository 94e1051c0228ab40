#!/usr/bin/python3
"""score_folder.py - sqlite-anomaly from Python's sqlite3 module.

    /usr/bin/python3 examples/python/score_folder.py FOLDER MODEL_FILE [DB]

Loads the extension (./anomaly.so, or $ANOMALY_EXT), imports every PNG of
FOLDER into photos(name, image), registers MODEL_FILE as the model 'm' and
prints the photos from the most anomalous down, with their scores, scored
in batches on every core by anomaly_scan. DB defaults to an in-memory
database.

Some Python builds cannot load extensions: their sqlite3 module was
compiled without it (python.org's macOS installers, some distributions'
builds). You can tell by
    python3 -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)"
which fails with AttributeError there. Debian's /usr/bin/python3 can.
"""
import os
import sqlite3
import sys


def connect(path):
    db = sqlite3.connect(path)
    if not hasattr(db, "enable_load_extension"):
        sys.exit("score_folder: this Python's sqlite3 cannot load extensions "
                 "(built without SQLITE_ENABLE_LOAD_EXTENSION); use Debian's /usr/bin/python3")
    db.enable_load_extension(True)
    db.load_extension(os.environ.get("ANOMALY_EXT", "./anomaly"))
    db.enable_load_extension(False)     # nothing else may load one from here on
    return db


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1])
    folder, model_file = sys.argv[1], sys.argv[2]
    db = connect(sys.argv[3] if len(sys.argv) == 4 else ":memory:")
    db.execute("CREATE TABLE IF NOT EXISTS photos(name TEXT PRIMARY KEY, image BLOB)")
    for name in sorted(os.listdir(folder)):
        if name.lower().endswith(".png"):
            with open(os.path.join(folder, name), "rb") as f:
                db.execute("INSERT OR REPLACE INTO photos VALUES (?, ?)", (name, f.read()))
    db.execute("INSERT OR REPLACE INTO anomaly_models(name, model) "
               "VALUES ('m', anomaly_model_from_file(?))", (model_file,))
    db.commit()
    rows = db.execute("SELECT id, score FROM anomaly_scan('m', 'SELECT name, image FROM photos') "
                      "ORDER BY score DESC").fetchall()
    for name, score in rows:
        print("%-12s %.4f" % (name, score))
    db.close()


if __name__ == "__main__":
    main()
