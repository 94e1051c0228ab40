/*
** extension.c - sqlite-anomaly's entry point.
**
**   .load ./anomaly
**   SELECT anomaly_version();
**
** Registers the functions (functions.c) and the anomaly_models registry
** (models_vtab.c) on a connection. The library stays loaded for the life of
** the process (SQLITE_OK_LOAD_PERMANENTLY), since parsed models are shared
** between connections through model_cache.c. Compiled with SQLITE_CORE it
** is the static library's entry point (anomaly.h), for
** sqlite3_auto_extension().
*/
#include "anomaly_ext.h"
#include "anomaly.h"        /* the prototype programs link against */
SQLITE_EXTENSION_INIT1

#include "core/image.h"

#include <string.h>

#ifdef _WIN32
__declspec(dllexport)
#endif
__attribute__((visibility("default")))
int sqlite3_anomaly_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
#ifndef SQLITE_CORE
  /* SQLITE_EXTENSION_INIT2 stores pApi on every load, while other threads'
  ** connections call through it: the same pointer each time, but a data
  ** race all the same. Store it only when it changes, i.e. once. */
  if( __atomic_load_n(&sqlite3_api, __ATOMIC_ACQUIRE) != pApi )
    __atomic_store_n(&sqlite3_api, pApi, __ATOMIC_RELEASE);
#else
  (void)pApi;
#endif
  if( sqlite3_libversion_number() < 3031000 ){
    *pzErrMsg = sqlite3_mprintf("sqlite-anomaly needs SQLite 3.31 or later, found %s",
                                sqlite3_libversion());
    return SQLITE_ERROR;
  }
  anom_conn *cn = anom_calloc(1, sizeof(*cn));
  if( !cn ) return SQLITE_NOMEM;
  cn->db = db;
  cn->max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
  model_limits_default(&cn->limits);
  cn->max_montage_rows = ANOM_MONTAGE_ROWS;
  cn->max_train_mb = ANOM_TRAIN_MB;
  /* the anomaly_models module owns cn: SQLite frees it when the connection
  ** closes (or at once, should registering the module fail) */
  int rc = anom_register_models_vtab(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_functions(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_train(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_eval(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_maps(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_idx(db);
  if( rc == SQLITE_OK ) rc = anom_register_scan(db, cn);
  if( rc == SQLITE_OK ) rc = anom_register_settings(db, cn);
  if( rc != SQLITE_OK ){
    *pzErrMsg = sqlite3_mprintf("sqlite-anomaly: registering functions: %s",
                                sqlite3_errmsg(db));
    return rc;
  }
#ifdef SQLITE_CORE
  /* linked in (anomaly.h): sqlite3_auto_extension counts any other code as
  ** a failure */
  return SQLITE_OK;
#else
  return SQLITE_OK_LOAD_PERMANENTLY;
#endif
}
