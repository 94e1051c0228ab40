/*
** test_security.c - a database file you do not trust.
**
** A hostile database can carry views and triggers that call our functions
** when the victim merely reads a table. Whatever reads files or changes
** state or runs SQL it is given (anomaly_model_from_file, anomaly_config,
** anomaly_train, the anomaly_models registry, anomaly_idx, anomaly_scan) is
** SQLITE_DIRECTONLY: refused inside any view or trigger, whatever PRAGMA
** trusted_schema says. Scoring, maps and AUROC are not innocuous (they
** depend on the registry, not only on their arguments, and a scoring option
** can ask for minutes of work), so with PRAGMA trusted_schema = OFF a schema
** cannot reach them either; with the default (ON) it can, within the
** limits. The table this test prints is the one in docs/security.md.
*/
#include "sqltest.h"

#define DB "build/test-hostile.db"

typedef struct probe {
  const char *what;          /* the view or trigger */
  const char *sql;           /* what the victim runs */
  int refused_trusted;       /* refused with trusted_schema = ON */
  int refused_untrusted;     /* refused with trusted_schema = OFF */
  const char *msg;           /* part of the refusal */
} probe;

static const probe probes[] = {
  {"view calling anomaly_model_from_file", "SELECT * FROM v_file", 1, 1,
   "unsafe use of anomaly_model_from_file()"},
  {"view calling anomaly_config", "SELECT * FROM v_config", 1, 1,
   "unsafe use of anomaly_config()"},
  {"view setting the BLAS's threads", "SELECT * FROM v_threads", 1, 1,
   "unsafe use of anomaly_config()"},
  {"view calling anomaly_debug", "SELECT * FROM v_debug", 1, 1,
   "unsafe use of anomaly_debug()"},
  {"view over anomaly_models", "SELECT * FROM v_models", 1, 1,
   "unsafe use of virtual table \"anomaly_models\""},
  {"trigger deleting from anomaly_models", "INSERT INTO photos(image) VALUES (x'00')", 1, 1,
   "unsafe use of virtual table \"anomaly_models\""},
  {"trigger calling anomaly_train", "UPDATE photos SET image = image WHERE id = 1", 1, 1,
   "unsafe use of anomaly_train()"},
  {"view calling anomaly_idx", "SELECT * FROM v_idx", 1, 1,
   "unsafe use of virtual table \"anomaly_idx\""},
  {"view calling anomaly_scan", "SELECT * FROM v_scan", 1, 1,
   "unsafe use of virtual table \"anomaly_scan\""},
  {"view calling anomaly_score", "SELECT * FROM v_score", 0, 1,
   "unsafe use of anomaly_score()"},
  {"view calling anomaly_map", "SELECT * FROM v_map", 0, 1,
   "unsafe use of anomaly_map()"},
  {"view calling anomaly_auroc", "SELECT * FROM v_auroc", 0, 0, NULL},
  {"view calling anomaly_version", "SELECT * FROM v_version", 0, 0, NULL},
};

/* Make the hostile file: a model, photos, and the views and triggers. */
static void make_hostile(void) {
  remove(DB);
  sqlite3 *db = open_db(DB);
  exec_ok(db, "CREATE TABLE photos(id INTEGER PRIMARY KEY, image BLOB)");
  size_t n;
  unsigned char *png = slurp("tests/data/photos/1.png", &n);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO photos(image) VALUES (?1)", -1, &st, 0),
                   SQLITE_OK);
  sqlite3_bind_blob(st, 1, png, (int)n, SQLITE_TRANSIENT);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  free(png);
  exec_ok(db, "INSERT INTO anomaly_models(name, model) VALUES ('m', "
              "anomaly_model_from_file('" TINY "'))");
  exec_ok(db,
    "CREATE VIEW v_file AS SELECT length(anomaly_model_from_file('" TINY "')) AS n;"
    "CREATE VIEW v_config AS SELECT anomaly_config('max_pixels', 1) AS v;"
    "CREATE VIEW v_threads AS SELECT anomaly_config('threads', 64) AS v;"
    "CREATE VIEW v_debug AS SELECT anomaly_debug() AS v;"
    "CREATE VIEW v_models AS SELECT name FROM anomaly_models;"
    "CREATE VIEW v_idx AS SELECT count(*) FROM anomaly_idx('build/none.idx');"
    "CREATE VIEW v_scan AS SELECT count(*) FROM anomaly_scan('m', 'SELECT id, image FROM photos');"
    "CREATE VIEW v_score AS SELECT anomaly_score(image, 'm') AS s FROM photos;"
    "CREATE VIEW v_map AS SELECT length(anomaly_map(image, 'm')) AS n FROM photos;"
    "CREATE VIEW v_auroc AS SELECT anomaly_auroc(column1, column2) FROM (VALUES (0.1, 0), (0.9, 1));"
    "CREATE VIEW v_version AS SELECT anomaly_version();"
    "CREATE TRIGGER t_del AFTER INSERT ON photos BEGIN DELETE FROM anomaly_models; END;"
    "CREATE TRIGGER t_train AFTER UPDATE ON photos BEGIN "
    "  SELECT anomaly_train('evil', 'ganomaly', image) FROM photos; END;");
  sqlite3_close(db);
}

static void run_probes(int trusted) {
  sqlite3 *db = open_db(DB);
  exec_ok(db, trusted ? "PRAGMA trusted_schema = ON" : "PRAGMA trusted_schema = OFF");
  printf("# trusted_schema = %s\n", trusted ? "ON" : "OFF");
  for(size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++){
    const probe *p = &probes[i];
    int want = trusted ? p->refused_trusted : p->refused_untrusted;
    char *err = NULL;
    int rc = sqlite3_exec(db, p->sql, 0, 0, &err);
    printf("#   %-40s %s%s%s\n", p->what, rc ? "refused: " : "runs", rc ? err : "", "");
    if( want ){
      assert_int_not_equal(rc, SQLITE_OK);
      assert_non_null(err);
      assert_non_null(strstr(err, p->msg));
    }else{
      assert_int_equal(rc, SQLITE_OK);
    }
    sqlite3_free(err);
  }
  /* the model is still there, no model 'evil', the limit unchanged */
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models WHERE name = 'm'"), 1);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models WHERE name = 'evil'"), 0);
  assert_int_equal(query_int(db, "SELECT anomaly_config('max_pixels')"), 64LL * 1024 * 1024);
  /* run directly, by the user, the same calls work */
  assert_true(query_double(db, "SELECT anomaly_score(image, 'm') FROM photos") > 0);
  assert_int_equal(query_int(db, "SELECT count(*) FROM anomaly_models"), 1);
  sqlite3_close(db);
}

static void test_trusted(void **state) {
  (void)state;
  make_hostile();
  run_probes(1);
}

static void test_untrusted(void **state) {
  (void)state;
  run_probes(0);
  remove(DB);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_trusted),
    cmocka_unit_test(test_untrusted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
