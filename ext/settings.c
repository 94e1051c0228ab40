/*
** settings.c - the extension's settings, and what it was built with.
**
**   SELECT anomaly_config('max_pixels', 4000000);   -- a per-connection limit
**   SELECT anomaly_config('threads', 1);            -- the BLAS's threads
**   SELECT anomaly_debug() ->> '$.blas.core';       -- 'SkylakeX'
**
** anomaly_config(key [, value]) reads or sets one setting and returns its
** value. Every key but 'threads' is a limit of the calling connection.
** 'threads' is how many threads each matrix product may use; OpenBLAS has
** one such number for the whole process, so it is the one setting that
** reaches every connection (core/layers/gemm.c makes changing it safe while
** other threads score).
**
** anomaly_debug() returns a JSON object for bug reports: version, commit,
** compiler and flags, the SQLite it runs in, the BLAS (its build, the
** kernels it picked, its threads), the CPU features the hand-vectorised
** paths use, the models cached in the process and this connection's limits.
**
** Both are SQLITE_DIRECTONLY: a view or trigger in a database someone else
** wrote must not raise a limit or change the process's threads, nor read
** what the machine is.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/image.h"
#include "core/layers.h"

#include <cjson/cJSON.h>
#include <string.h>

/* the commit and flags of this build, written by the Makefile */
#if defined(__has_include)
#if __has_include("build_info.h")
#include "build_info.h"
#endif
#endif
#ifndef ANOM_COMMIT
#define ANOM_COMMIT "unknown"
#endif
#ifndef ANOM_CFLAGS
#define ANOM_CFLAGS "unknown"
#endif

/* the most threads anomaly_config('threads', n) takes */
#define MAX_BLAS_THREADS 1024

/* The per-connection limits, in the order of config_keys. */
enum { N_LIMITS = 6 };
static const struct { const char *key; long long hi; } config_keys[N_LIMITS] = {
  {"max_pixels", (long long)1 << 40}, {"max_model_bytes", (long long)1 << 40},
  {"max_model_params", (long long)1 << 40}, {"max_model_side", IMAGE_MAX_TENSOR_SIDE},
  {"max_train_mb", (long long)1 << 30}, {"max_montage_rows", 4096}};

static void limits_get(const anom_conn *cn, long long v[N_LIMITS]) {
  v[0] = cn->max_pixels;
  v[1] = (long long)cn->limits.max_bytes;
  v[2] = (long long)cn->limits.max_params;
  v[3] = cn->limits.max_side;
  v[4] = cn->max_train_mb;
  v[5] = cn->max_montage_rows;
}

static void limits_set(anom_conn *cn, const long long v[N_LIMITS]) {
  cn->max_pixels = v[0];
  cn->limits.max_bytes = (size_t)v[1];
  cn->limits.max_params = (int64_t)v[2];
  cn->limits.max_side = (int)v[3];
  cn->max_train_mb = v[4];
  cn->max_montage_rows = v[5];
}

/* the value argument of anomaly_config as an integer in [1, hi], or -1 */
static long long config_value(sqlite3_value *v, long long hi) {
  if( sqlite3_value_type(v) != SQLITE_INTEGER ) return -1;
  long long x = sqlite3_value_int64(v);
  return x >= 1 && x <= hi ? x : -1;
}

/* anomaly_config('threads' [, n]) */
static void config_threads(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  if( argc == 1 ){
    gemm_blas info;
    gemm_blas_info(&info);
    sqlite3_result_int(ctx, info.threads);
    return;
  }
  long long n = config_value(argv[1], MAX_BLAS_THREADS);
  if( n < 0 ){
    anom_result_errorf(ctx, "anomaly_config: 'threads' must be an integer from 1 to %d",
                       MAX_BLAS_THREADS);
    return;
  }
  int now = gemm_set_threads((int)n);
  if( now < 0 ){
    anom_result_errorf(ctx, "anomaly_config: the BLAS this extension was built "
                            "with has no thread setting");
    return;
  }
  sqlite3_result_int(ctx, now);
}

/* anomaly_config(key [, value]): read or set a setting. */
static void configFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  anom_conn *cn = sqlite3_user_data(ctx);
  const char *key = (const char *)sqlite3_value_text(argv[0]);
  if( key && strcmp(key, "threads") == 0 ){
    config_threads(ctx, argc, argv);
    return;
  }
  int k = 0;
  while( k < N_LIMITS && !(key && strcmp(key, config_keys[k].key) == 0) ) k++;
  if( k == N_LIMITS ){
    anom_result_errorf(ctx, "anomaly_config: unknown key '%s' (known: max_pixels, "
                            "max_model_bytes, max_model_params, max_model_side, "
                            "max_train_mb, max_montage_rows, threads)", key ? key : "NULL");
    return;
  }
  long long v[N_LIMITS];
  limits_get(cn, v);
  if( argc == 2 ){
    long long x = config_value(argv[1], config_keys[k].hi);
    if( x < 0 ){
      anom_result_errorf(ctx, "anomaly_config: '%s' must be an integer from 1 "
                              "to %lld", key, config_keys[k].hi);
      return;
    }
    v[k] = x;
    limits_set(cn, v);
  }
  sqlite3_result_int64(ctx, v[k]);
}

static int cpu_has(const char *feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if( strcmp(feature, "avx2") == 0 ) return __builtin_cpu_supports("avx2");
  if( strcmp(feature, "fma") == 0 ) return __builtin_cpu_supports("fma");
  if( strcmp(feature, "avx512f") == 0 ) return __builtin_cpu_supports("avx512f");
#endif
  (void)feature;
  return 0;
}

/* the object anomaly_debug returns; NULL when out of memory */
static cJSON *debug_object(const anom_conn *cn) {
  /* cJSON's adders fail, and return NULL, when given a NULL object: one
  ** failed allocation anywhere leaves ok at 0 */
  cJSON *o = cJSON_CreateObject();
  if( !o ) return NULL;
  int ok = 1;
  ok &= !!cJSON_AddStringToObject(o, "version", ANOM_VERSION);
  ok &= !!cJSON_AddStringToObject(o, "commit", ANOM_COMMIT);

  cJSON *build = cJSON_AddObjectToObject(o, "build");
#ifdef __VERSION__
#if defined(__GNUC__) && !defined(__clang__)
  ok &= !!cJSON_AddStringToObject(build, "compiler", "gcc " __VERSION__);
#else
  ok &= !!cJSON_AddStringToObject(build, "compiler", __VERSION__);
#endif
#endif
  ok &= !!cJSON_AddStringToObject(build, "cflags", ANOM_CFLAGS);
#ifdef SQLITE_CORE
  ok &= !!cJSON_AddStringToObject(build, "linked", "static");
#else
  ok &= !!cJSON_AddStringToObject(build, "linked", "loadable");
#endif

  cJSON *sq = cJSON_AddObjectToObject(o, "sqlite");
  ok &= !!cJSON_AddStringToObject(sq, "version", sqlite3_libversion());
  ok &= !!cJSON_AddStringToObject(sq, "source_id", sqlite3_sourceid());
  ok &= !!cJSON_AddStringToObject(sq, "headers", SQLITE_VERSION);

  gemm_blas info;
  gemm_blas_info(&info);
  cJSON *blas = cJSON_AddObjectToObject(o, "blas");
  ok &= !!cJSON_AddStringToObject(blas, "name", info.name);
  ok &= !!cJSON_AddStringToObject(blas, "config", info.config);
  ok &= !!cJSON_AddStringToObject(blas, "core", info.core);
  ok &= !!cJSON_AddStringToObject(blas, "parallel", info.parallel);
  ok &= !!cJSON_AddNumberToObject(blas, "threads", info.threads);
  ok &= !!cJSON_AddNumberToObject(blas, "processors", info.processors);

  /* OpenBLAS falls back to its generic kernels on CPUs newer than itself
  ** (Debian 12's 0.3.21 on recent Xeons): say what to do about it */
  if( strcmp(info.core, "Prescott") == 0 && cpu_has("avx2") && cpu_has("fma") ){
    ok &= !!cJSON_AddStringToObject(blas, "advice", cpu_has("avx512f")
        ? "OpenBLAS does not know this CPU and uses its generic kernels; start the "
          "program with OPENBLAS_CORETYPE=SkylakeX for its AVX-512 ones (about 5x faster)"
        : "OpenBLAS does not know this CPU and uses its generic kernels; start the "
          "program with OPENBLAS_CORETYPE=Haswell for its AVX2 ones");
  }

  static const char *features[] = {"avx2", "fma", "avx512f"};
  cJSON *cpu = cJSON_AddObjectToObject(o, "cpu");
  for(size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
    ok &= !!cJSON_AddBoolToObject(cpu, features[i], cpu_has(features[i]));

  int models, in_use;
  size_t bytes;
  cache_stats(&models, &in_use, &bytes);
  cJSON *cache = cJSON_AddObjectToObject(o, "models_cached");
  ok &= !!cJSON_AddNumberToObject(cache, "models", models);
  ok &= !!cJSON_AddNumberToObject(cache, "in_use", in_use);
  ok &= !!cJSON_AddNumberToObject(cache, "file_bytes", (double)bytes);

  long long v[N_LIMITS];
  limits_get(cn, v);
  cJSON *limits = cJSON_AddObjectToObject(o, "limits");
  for(int k = 0; k < N_LIMITS; k++)
    ok &= !!cJSON_AddNumberToObject(limits, config_keys[k].key, (double)v[k]);
  if( !ok ){
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

/* anomaly_debug() -> JSON */
static void debugFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc; (void)argv;
  cJSON *o = debug_object(sqlite3_user_data(ctx));
  char *s = o ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  if( !s ){
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
  cJSON_free(s);
}

int anom_register_settings(sqlite3 *db, anom_conn *cn) {
  static const struct {
    int nargs;
    const char *name;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
  } defs[] = {
    {1, "anomaly_config", configFunc},
    {2, "anomaly_config", configFunc},
    {0, "anomaly_debug", debugFunc},
  };
  for(size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++){
    int rc = sqlite3_create_function_v2(db, defs[i].name, defs[i].nargs,
                                        SQLITE_UTF8 | SQLITE_DIRECTONLY, cn,
                                        defs[i].fn, 0, 0, 0);
    if( rc ) return rc;
  }
  return SQLITE_OK;
}
