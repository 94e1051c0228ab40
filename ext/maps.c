/*
** maps.c - where the anomaly is: per-pixel maps, contact sheets and the
** pixel-level AUROC.
**
**   anomaly_map(image, model [, options])       -> BLOB  PNG at the image's size
**   anomaly_montage(image, model [, label])     -> BLOB  aggregate: a contact sheet
**   anomaly_pixel_auroc(image, model, mask [, options]) -> REAL  aggregate
**
**   SELECT writefile('heat.png', anomaly_map(image, 'tiles')) FROM photos WHERE id = 42;
**   SELECT writefile('worst.png', anomaly_montage(image, 'tiles', id))
**     FROM (SELECT id, image FROM photos ORDER BY anomaly_score(image, 'tiles') DESC LIMIT 16);
**   SELECT anomaly_pixel_auroc(image, 'tiles', mask) FROM photos LEFT JOIN masks USING (id);
**
** The map is the detector's own (core/model.h, model_map: the reconstruction
** residual, or DefectGAN's LBP map) at the model's input size, smoothed
** there with a Gaussian, cut back out of the input tensor and resampled onto
** the original image. Options of anomaly_map, a JSON object; every other key
** is one of the method's scoring options, as for anomaly_score:
**
**   style   "heat" (default), "grey" or "overlay" (the colours over the image)
**   scale   "model": the model's calibrated range, so that maps of different
**           images compare (the default when the model has one); "image": the
**           image's own range; or [lo, hi]
**   sigma   the smoothing, in model input pixels (default 1, 0 for none, at most 16)
**   alpha   how strongly the overlay shows the colours (0..1, default 0.6)
**   format  "png" (default) or "f32": the smoothed map at the model's input
**           size, width x height little-endian float32 values, row by row
**           (width and height are the model's, in anomaly_models)
**
** anomaly_montage writes one row per image (at most anomaly_config
** ('max_montage_rows'), 64 by default): the input, its reconstruction and its
** map, the label and the score under them, in red when the score is over the
** model's threshold; rows in the order received. anomaly_pixel_auroc scores
** every pixel of every image against its mask (pixels over 127 are defect;
** a NULL mask is an image without defects; the mask has the image's size),
** at the original size; it takes sigma and the method's scoring options.
** NULL images are skipped by the aggregates and give NULL from anomaly_map.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/heatmap.h"
#include "core/image.h"
#include "core/metrics.h"
#include "core/montage.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { SCALE_DEFAULT, SCALE_MODEL, SCALE_IMAGE, SCALE_FIXED };

typedef struct map_opts {
  int style;          /* HEATMAP_* */
  int f32;            /* format "f32" */
  int scale;          /* SCALE_* */
  double lo, hi;      /* SCALE_FIXED's range */
  double sigma, alpha;
  cJSON *det;         /* the method's scoring options, or NULL */
} map_opts;

static void map_opts_free(void *p) {
  map_opts *o = p;
  if( !o ) return;
  cJSON_Delete(o->det);
  anom_free(o);
}

/*
** Parse the options value v (NULL or SQL NULL: the defaults). With
** presentation 0 (anomaly_pixel_auroc) only sigma and the method's keys are
** taken. Returns NULL with the error set on ctx.
*/
static map_opts *parse_map_opts(sqlite3_context *ctx, const char *fn,
                                sqlite3_value *v, int presentation) {
  map_opts *o = anom_calloc(1, sizeof(*o));
  if( !o ){ sqlite3_result_error_nomem(ctx); return NULL; }
  o->style = HEATMAP_HEAT;
  o->scale = SCALE_DEFAULT;
  o->sigma = HEATMAP_SIGMA;
  o->alpha = 0.6;
  if( !v || sqlite3_value_type(v) == SQLITE_NULL ) return o;
  const char *s = (const char *)sqlite3_value_text(v);
  cJSON *j = s ? cJSON_Parse(s) : NULL;
  if( !j || !cJSON_IsObject(j) ){
    cJSON_Delete(j);
    map_opts_free(o);
    anom_result_errorf(ctx, "%s: options must be a JSON object, e.g. '{\"style\": "
                       "\"overlay\"}'", fn);
    return NULL;
  }
  static const char *const ours[] = {"style", "scale", "sigma", "alpha", "format"};
  for(size_t k = 0; k < sizeof(ours) / sizeof(ours[0]); k++){
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, ours[k]);
    if( !it ) continue;
    const char *key = ours[k];
    int bad = 0;
    if( !presentation && k != 2 ){
      anom_result_errorf(ctx, "%s: option '%s' does not apply here (it takes sigma and "
                         "the method's scoring options)", fn, key);
      goto fail;
    }
    switch( k ){
      case 0:
        if( !cJSON_IsString(it) ) bad = 1;
        else if( !strcmp(it->valuestring, "heat") ) o->style = HEATMAP_HEAT;
        else if( !strcmp(it->valuestring, "grey") || !strcmp(it->valuestring, "gray") )
          o->style = HEATMAP_GREY;
        else if( !strcmp(it->valuestring, "overlay") ) o->style = HEATMAP_OVERLAY;
        else bad = 1;
        if( bad ){
          anom_result_errorf(ctx, "%s: option 'style' must be \"heat\", \"grey\" or "
                             "\"overlay\"", fn);
          goto fail;
        }
        break;
      case 1:
        if( cJSON_IsString(it) && !strcmp(it->valuestring, "model") ) o->scale = SCALE_MODEL;
        else if( cJSON_IsString(it) && !strcmp(it->valuestring, "image") ) o->scale = SCALE_IMAGE;
        else if( cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2
                 && cJSON_IsNumber(cJSON_GetArrayItem(it, 0))
                 && cJSON_IsNumber(cJSON_GetArrayItem(it, 1))
                 && cJSON_GetArrayItem(it, 0)->valuedouble
                    < cJSON_GetArrayItem(it, 1)->valuedouble ){
          o->scale = SCALE_FIXED;
          o->lo = cJSON_GetArrayItem(it, 0)->valuedouble;
          o->hi = cJSON_GetArrayItem(it, 1)->valuedouble;
        }else{
          anom_result_errorf(ctx, "%s: option 'scale' must be \"model\", \"image\" or "
                             "[lo, hi] with lo < hi", fn);
          goto fail;
        }
        break;
      case 2:
        if( !cJSON_IsNumber(it) || !(it->valuedouble >= 0)
            || it->valuedouble > HEATMAP_MAX_SIGMA ){
          anom_result_errorf(ctx, "%s: option 'sigma' must be a number from 0 to %g "
                             "(model input pixels)", fn, HEATMAP_MAX_SIGMA);
          goto fail;
        }
        o->sigma = it->valuedouble;
        break;
      case 3:
        if( !cJSON_IsNumber(it) || !(it->valuedouble >= 0) || it->valuedouble > 1 ){
          anom_result_errorf(ctx, "%s: option 'alpha' must be a number from 0 to 1", fn);
          goto fail;
        }
        o->alpha = it->valuedouble;
        break;
      default:
        if( cJSON_IsString(it) && !strcmp(it->valuestring, "png") ) o->f32 = 0;
        else if( cJSON_IsString(it) && !strcmp(it->valuestring, "f32") ) o->f32 = 1;
        else{
          anom_result_errorf(ctx, "%s: option 'format' must be \"png\" or \"f32\"", fn);
          goto fail;
        }
        break;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
  }
  if( j->child ) o->det = j;
  else cJSON_Delete(j);
  return o;
fail:
  cJSON_Delete(j);
  map_opts_free(o);
  return NULL;
}

/*
** Decode v and map it: sm->map (H, W) smoothed with o->sigma, sm->recon the
** reconstruction, *r the score. keep, if not NULL, receives the decoded
** image. Returns 1 when a result (NULL or an error) is set instead.
*/
static int map_image(sqlite3_context *ctx, const char *fn, sqlite3_value *v,
                     stmt_model *sm, const map_opts *o, score_result *r,
                     image_u8 *keep) {
  const anom_model *m = sm->cm->model;
  if( anom_decode(ctx, fn, v, sm, keep) ) return 1;
  anom_err e;
  anom_err_clear(&e);
  int rc = model_map(m, 1, sm->x, sm->work, sm->map, r, sm->recon, o->det, &e);
  if( rc ){
    if( keep ) image_free(keep);
    if( rc == ANOM_EINVAL && o->det )
      anom_result_errorf(ctx, "%s: %s (the function's own options: style, scale, sigma, "
                         "alpha, format)", fn, e.msg);
    else anom_result_error(ctx, fn, rc, e.msg);
    return 1;
  }
  heatmap_smooth(sm->map, m->width, m->height, o->sigma, sm->tmp);
  return 0;
}

/* The colour range for the n values of map under o; 1 with the error set. */
static int map_range(sqlite3_context *ctx, const char *fn, const map_opts *o,
                     const anom_model *m, const float *map, size_t n,
                     double *lo, double *hi) {
  if( o->scale == SCALE_FIXED ){
    *lo = o->lo;
    *hi = o->hi;
  }else if( o->scale == SCALE_MODEL || (o->scale == SCALE_DEFAULT && m->cal.map_ok) ){
    if( !m->cal.map_ok ){
      anom_result_errorf(ctx, "%s: the model has no calibrated map scale (it was "
                         "trained before maps were calibrated); use \"scale\": \"image\"", fn);
      return 1;
    }
    *lo = m->cal.map_lo;
    *hi = m->cal.map_hi;
  }else{
    float a, b;
    heatmap_range(map, n, &a, &b);
    *lo = a;
    *hi = b;
  }
  return 0;
}

/* The smoothed map as width*height little-endian float32 values. */
static void result_f32(sqlite3_context *ctx, const float *map, size_t n) {
  size_t bytes = n * 4;
  if( anom_too_big(ctx, bytes) ) return;
  unsigned char *b = sqlite3_malloc64(bytes ? bytes : 1);
  if( !b ){ sqlite3_result_error_nomem(ctx); return; }
  for(size_t i = 0; i < n; i++){
    uint32_t u;
    memcpy(&u, &map[i], 4);
    b[4 * i] = (unsigned char)u;
    b[4 * i + 1] = (unsigned char)(u >> 8);
    b[4 * i + 2] = (unsigned char)(u >> 16);
    b[4 * i + 3] = (unsigned char)(u >> 24);
  }
  sqlite3_result_blob64(ctx, b, bytes, sqlite3_free);
}

static void mapFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "anomaly_map";
  map_opts *o = argc > 2 ? sqlite3_get_auxdata(ctx, 2) : NULL;
  int fresh_opts = 0, fresh_model = 0;
  if( !o ){
    if( !(o = parse_map_opts(ctx, fn, argc > 2 ? argv[2] : NULL, 1)) ) return;
    fresh_opts = 1;
  }
  stmt_model *sm = sqlite3_get_auxdata(ctx, 1);
  if( !sm ){
    if( !(sm = anom_stmt_model_open(ctx, fn, argv[1])) ){
      if( fresh_opts ) map_opts_free(o);
      return;
    }
    fresh_model = 1;
  }
  const anom_model *m = sm->cm->model;
  image_u8 im;
  score_result r;
  if( !map_image(ctx, fn, argv[0], sm, o, &r, &im) ){
    size_t hw = (size_t)m->width * m->height, n = (size_t)im.w * im.h;
    int c = o->style == HEATMAP_GREY ? 1 : 3;
    float *big = NULL;
    unsigned char *px = NULL;
    double lo, hi;
    if( o->f32 ){
      result_f32(ctx, sm->map, hw);
    }else if( !(big = anom_malloc(n * sizeof(float))) || !(px = anom_malloc(n * c)) ){
      sqlite3_result_error_nomem(ctx);
    }else{
      heatmap_resample(big, im.w, im.h, sm->map, m->width, m->height, m->fit);
      if( !map_range(ctx, fn, o, m, big, n, &lo, &hi) ){
        heatmap_paint(px, big, n, lo, hi, o->style, im.px, im.c, o->alpha);
        anom_result_png(ctx, fn, px, im.w, im.h, c);
      }
    }
    anom_free(px);
    anom_free(big);
    image_free(&im);
  }
  if( fresh_opts ){
    if( argc > 2 ) sqlite3_set_auxdata(ctx, 2, o, map_opts_free);
    else map_opts_free(o);
  }
  if( fresh_model ) sqlite3_set_auxdata(ctx, 1, sm, anom_stmt_model_free);
}

/* ---- anomaly_montage --------------------------------------------------- */

typedef struct montage_agg {
  stmt_model *sm;
  char *name;          /* the model every row must name */
  map_opts *o;
  montage *mt;
  int failed;
} montage_agg;

static void montage_agg_free(montage_agg *a) {
  anom_stmt_model_free(a->sm);
  sqlite3_free(a->name);
  map_opts_free(a->o);
  montage_free(a->mt);
  memset(a, 0, sizeof(*a));
}

/*
** The first row's model for an aggregate, or check that a later row names
** the same one; 1 with the error set.
*/
static int agg_model(sqlite3_context *ctx, const char *fn, sqlite3_value *name,
                     stmt_model **sm, char **saved) {
  if( *sm ){
    const char *z = (const char *)sqlite3_value_text(name);
    if( sqlite3_value_type(name) != SQLITE_TEXT || !z || strcmp(z, *saved) ){
      anom_result_errorf(ctx, "%s: every row must name the same model ('%s')", fn, *saved);
      return 1;
    }
    return 0;
  }
  if( !(*sm = anom_stmt_model_open(ctx, fn, name)) ) return 1;
  if( !(*saved = sqlite3_mprintf("%s", sqlite3_value_text(name))) ){
    sqlite3_result_error_nomem(ctx);
    return 1;
  }
  return 0;
}

static void montageStep(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "anomaly_montage";
  anom_conn *cn = sqlite3_user_data(ctx);
  montage_agg *a = sqlite3_aggregate_context(ctx, sizeof(*a));
  if( !a ){ sqlite3_result_error_nomem(ctx); return; }
  if( a->failed ) return;
  a->failed = 1;
  if( agg_model(ctx, fn, argv[1], &a->sm, &a->name) ) return;
  const anom_model *m = a->sm->cm->model;
  anom_err e;
  anom_err_clear(&e);
  if( !a->mt ){
    int rc = montage_new(&a->mt, m->width, m->height, m->channels,
                         (int)cn->max_montage_rows, &e);
    if( rc == ANOM_OK && !(a->o = parse_map_opts(ctx, fn, NULL, 1)) ) return;
    if( rc ){ anom_result_error(ctx, fn, rc, e.msg); return; }
  }
  if( sqlite3_value_type(argv[0]) == SQLITE_NULL ){ a->failed = 0; return; }
  if( montage_rows(a->mt) >= cn->max_montage_rows ){
    anom_result_errorf(ctx, "%s: a montage holds at most %lld rows (add LIMIT %lld, or "
                       "raise anomaly_config('max_montage_rows', n))", fn,
                       cn->max_montage_rows, cn->max_montage_rows);
    return;
  }
  score_result r;
  if( map_image(ctx, fn, argv[0], a->sm, a->o, &r, NULL) ) return;
  double lo, hi;
  size_t hw = (size_t)m->width * m->height;
  if( map_range(ctx, fn, a->o, m, a->sm->map, hw, &lo, &hi) ) return;
  const char *label = argc > 2 ? (const char *)sqlite3_value_text(argv[2]) : NULL;
  int flagged = isfinite(m->threshold) && r.score > m->threshold;
  int rc = montage_add(a->mt, a->sm->x, a->sm->recon, a->sm->map, lo, hi, r.score,
                       flagged, label, &e);
  if( rc ){ anom_result_error(ctx, fn, rc, e.msg); return; }
  a->failed = 0;
}

static void montageFinal(sqlite3_context *ctx) {
  const char *fn = "anomaly_montage";
  montage_agg *a = sqlite3_aggregate_context(ctx, 0);
  if( !a ){ sqlite3_result_null(ctx); return; }
  if( !a->failed ){
    if( !a->mt || montage_rows(a->mt) == 0 ){
      sqlite3_result_null(ctx);
    }else{
      unsigned char *png = NULL;
      size_t npng = 0;
      anom_err e;
      anom_err_clear(&e);
      int rc = montage_png(a->mt, &png, &npng, &e);
      if( rc ) anom_result_error(ctx, fn, rc, e.msg);
      else if( !anom_too_big(ctx, npng) ){
        sqlite3_result_blob64(ctx, png, npng, anom_free);
        png = NULL;
      }
      anom_free(png);
    }
  }
  montage_agg_free(a);
}

/* ---- anomaly_pixel_auroc ----------------------------------------------- */

typedef struct pixel_agg {
  stmt_model *sm;
  char *name;
  map_opts *o;
  auroc_hist h;
  int have_hist;
  float *big;          /* the map at the image's size */
  size_t cap;
  int failed;
} pixel_agg;

static void pixel_agg_free(pixel_agg *a) {
  anom_stmt_model_free(a->sm);
  sqlite3_free(a->name);
  map_opts_free(a->o);
  if( a->have_hist ) auroc_hist_free(&a->h);
  anom_free(a->big);
  memset(a, 0, sizeof(*a));
}

static void pixelStep(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "anomaly_pixel_auroc";
  anom_conn *cn = sqlite3_user_data(ctx);
  pixel_agg *a = sqlite3_aggregate_context(ctx, sizeof(*a));
  if( !a ){ sqlite3_result_error_nomem(ctx); return; }
  if( a->failed ) return;
  a->failed = 1;
  if( agg_model(ctx, fn, argv[1], &a->sm, &a->name) ) return;
  anom_err e;
  anom_err_clear(&e);
  if( !a->have_hist ){
    if( !(a->o = parse_map_opts(ctx, fn, argc > 3 ? argv[3] : NULL, 0)) ) return;
    int rc = auroc_hist_init(&a->h, &e);
    if( rc ){ anom_result_error(ctx, fn, rc, e.msg); return; }
    a->have_hist = 1;
  }
  if( sqlite3_value_type(argv[0]) == SQLITE_NULL ){ a->failed = 0; return; }
  int mt = sqlite3_value_type(argv[2]);
  if( mt != SQLITE_NULL && mt != SQLITE_BLOB ){
    anom_result_errorf(ctx, "%s: mask must be an image BLOB (defect pixels over 127) or "
                       "NULL (no defect), got %s", fn, anom_type_name(mt));
    return;
  }
  const anom_model *m = a->sm->cm->model;
  image_u8 im, mask = {0};
  score_result r;
  if( map_image(ctx, fn, argv[0], a->sm, a->o, &r, &im) ) return;
  size_t n = (size_t)im.w * im.h;
  int rc = ANOM_OK;
  if( mt == SQLITE_BLOB ){
    rc = image_decode(&mask, sqlite3_value_blob(argv[2]),
                      (size_t)sqlite3_value_bytes(argv[2]), cn->max_pixels, &e);
    if( rc == ANOM_OK && (mask.w != im.w || mask.h != im.h) ){
      rc = anom_fail(&e, ANOM_EINVAL, "the mask is %dx%d but the image is %dx%d",
                     mask.w, mask.h, im.w, im.h);
    }else if( rc ){
      char msg[ANOM_ERR_MAX];
      memcpy(msg, e.msg, sizeof(msg));
      anom_fail(&e, rc, "mask: %.500s", msg);
    }
  }
  if( rc == ANOM_OK && n > a->cap ){
    float *b = anom_realloc(a->big, n * sizeof(float));
    if( b ){ a->big = b; a->cap = n; }
    else rc = anom_fail(&e, ANOM_ENOMEM, "out of memory");
  }
  if( rc == ANOM_OK ){
    heatmap_resample(a->big, im.w, im.h, a->sm->map, m->width, m->height, m->fit);
    for(size_t p = 0; p < n; p++)
      auroc_hist_add(&a->h, a->big[p], mask.px ? mask.px[p * mask.c] > 127 : 0);
    a->failed = 0;
  }else{
    anom_result_error(ctx, fn, rc, e.msg);
  }
  image_free(&mask);
  image_free(&im);
}

static void pixelFinal(sqlite3_context *ctx) {
  const char *fn = "anomaly_pixel_auroc";
  pixel_agg *a = sqlite3_aggregate_context(ctx, 0);
  if( a && a->failed ){ pixel_agg_free(a); return; }
  double v;
  anom_err e;
  anom_err_clear(&e);
  int rc = a && a->have_hist ? auroc_hist_result(&a->h, &v, &e)
         : anom_fail(&e, ANOM_EINVAL, "both classes are needed, found no rows");
  if( rc ) anom_result_error(ctx, fn, rc, e.msg);
  else sqlite3_result_double(ctx, v);
  if( a ) pixel_agg_free(a);
}

int anom_register_maps(sqlite3 *db, anom_conn *cn) {
  /* Like anomaly_score: they read the registry, which changes, so none is
  ** DETERMINISTIC; none reads files or changes state. */
  int rc = SQLITE_OK;
  for(int n = 2; n <= 3 && rc == SQLITE_OK; n++){
    rc = sqlite3_create_function_v2(db, "anomaly_map", n, SQLITE_UTF8, cn, mapFunc,
                                    0, 0, 0);
    if( rc == SQLITE_OK )
      rc = sqlite3_create_function_v2(db, "anomaly_montage", n, SQLITE_UTF8, cn, 0,
                                      montageStep, montageFinal, 0);
  }
  for(int n = 3; n <= 4 && rc == SQLITE_OK; n++)
    rc = sqlite3_create_function_v2(db, "anomaly_pixel_auroc", n, SQLITE_UTF8, cn, 0,
                                    pixelStep, pixelFinal, 0);
  return rc;
}
