/*
** anomaly.h - sqlite-anomaly linked into a program instead of loaded.
**
** Build the static library with `make static` (libsqlite_anomaly.a) or
** install it with `make install`, then register the extension for every
** connection the program opens:
**
**   #include <sqlite3.h>
**   #include <anomaly.h>
**
**   sqlite3_auto_extension((void (*)(void))sqlite3_anomaly_init);
**   sqlite3_open("photos.db", &db);       anomaly_score() and the rest are there
**
**   cc app.c $(pkg-config --cflags --libs --static sqlite-anomaly)
**
** The same entry point serves `.load anomaly` and sqlite3_load_extension()
** when the extension is built as a shared library (anomaly.so).
*/
#ifndef SQLITE_ANOMALY_H
#define SQLITE_ANOMALY_H

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Registers every function and table of sqlite-anomaly on db. pApi is
** ignored in the static library (pass NULL, or let sqlite3_auto_extension
** pass it). Returns SQLITE_OK, or an error code with *pzErrMsg set (free it
** with sqlite3_free). */
int sqlite3_anomaly_init(sqlite3 *db, char **pzErrMsg, const struct sqlite3_api_routines *pApi);

#ifdef __cplusplus
}
#endif

#endif /* SQLITE_ANOMALY_H */
