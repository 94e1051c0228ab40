/*
** model.c - building, loading, saving and scoring models. See model.h and
** docs/model-format.md.
*/
#include "model.h"

#include "image.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENSOR_NAME_MAX 160

void model_limits_default(model_limits *l) {
  l->max_bytes = (size_t)1 << 30;
  l->max_params = (int64_t)256 << 20;
  l->max_side = 1024;
}

const char *model_fit_name(int fit) {
  return fit == IMAGE_FIT_PAD ? "pad" : "resize";
}

int model_fit_parse(const char *s) {
  if( s && strcmp(s, "resize") == 0 ) return IMAGE_FIT_RESIZE;
  if( s && strcmp(s, "pad") == 0 ) return IMAGE_FIT_PAD;
  return -1;
}

void model_free(anom_model *m) {
  if( !m ) return;
  if( m->ops && m->ops->destroy && m->det ) m->ops->destroy(m);
  anom_free(m->det);
  for(int i = 0; i < m->nnets; i++){
    net_free(m->nets[i]);
    anom_free(m->nets[i]);
  }
  anom_free(m->block);
  anom_free(m);
}

int model_add_net(anom_model *m, net *nt, anom_err *e) {
  if( nt->failed ){
    int rc = anom_fail(e, nt->err.code ? nt->err.code : ANOM_EINVAL, "%s", nt->err.msg);
    net_free(nt);
    return rc;
  }
  net *copy = NULL;
  if( m->nnets == MODEL_MAX_NETS || !(copy = anom_malloc(sizeof(*copy))) ){
    net_free(nt);
    return anom_fail(e, m->nnets == MODEL_MAX_NETS ? ANOM_EINVAL : ANOM_ENOMEM,
                     m->nnets == MODEL_MAX_NETS ? "too many networks" : "out of memory");
  }
  *copy = *nt;
  memset(nt, 0, sizeof(*nt));
  m->nets[m->nnets++] = copy;
  return ANOM_OK;
}

int64_t model_param_count(const anom_model *m) {
  return (int64_t)m->nparams;
}

int model_create(anom_model **out, const char *method, int width, int height,
                 int channels, const cJSON *hp, const model_limits *lim,
                 anom_err *e) {
  model_limits dl;
  if( !lim ){ model_limits_default(&dl); lim = &dl; }
  *out = NULL;
  const detector_ops *ops = detector_find(method);
  if( !ops )
    return anom_fail(e, ANOM_EINVAL, "unknown method '%s' (known: %s)", method,
                     detector_names());
  if( channels != 1 && channels != 3 )
    return anom_fail(e, ANOM_EINVAL, "channels must be 1 or 3, found %d", channels);
  if( width < 1 || height < 1 || width > lim->max_side || height > lim->max_side )
    return anom_fail(e, ANOM_EINVAL, "input size %dx%d is outside 1..%d",
                     width, height, lim->max_side);
  if( hp && !cJSON_IsObject(hp) )
    return anom_fail(e, ANOM_EINVAL, "hyper-parameters must be a JSON object");

  anom_model *m = anom_calloc(1, sizeof(*m));
  if( !m ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  m->ops = ops;
  m->width = width;
  m->height = height;
  m->channels = channels;
  m->threshold = NAN;
  int rc = ops->create(m, hp, e);
  if( rc ) goto fail;

  size_t np = 0, nb = 0, total;
  for(int i = 0; i < m->nnets; i++){
    np += m->nets[i]->nparams;
    nb += m->nets[i]->nbufs;
  }
  if( anom_add_size(np, nb, &total) || (int64_t)total > lim->max_params ){
    rc = anom_fail(e, ANOM_ETOOBIG,
                   "the model has %zu parameters, over the limit of %lld",
                   np + nb, (long long)lim->max_params);
    goto fail;
  }
  m->block = anom_calloc(total, sizeof(float));
  if( !m->block ){ rc = anom_fail(e, ANOM_ENOMEM, "out of memory for %zu weights", total); goto fail; }
  m->nparams = np;
  m->nbufs = nb;
  float *p = m->block, *b = m->block + np;
  for(int i = 0; i < m->nnets; i++){
    net_bind(m->nets[i], p, b);
    p += m->nets[i]->nparams;
    b += m->nets[i]->nbufs;
  }
  *out = m;
  return ANOM_OK;
fail:
  model_free(m);
  return rc;
}

/* Parse a whole decimal integer in [lo, hi]; -1 if it is not one. */
static int parse_int(const char *s, int lo, int hi, int *v) {
  if( !s || !*s ) return -1;
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if( errno || *end || x < lo || x > hi ) return -1;
  *v = (int)x;
  return 0;
}

/* Parse a whole finite decimal number. */
static int parse_double(const char *s, double *v) {
  if( !s || !*s ) return -1;
  char *end;
  errno = 0;
  double x = strtod(s, &end);
  if( errno || *end || !isfinite(x) ) return -1;
  *v = x;
  return 0;
}

static int load_calibration(model_calibration *cal, const char *s, anom_err *e) {
  memset(cal, 0, sizeof(*cal));
  cJSON *j = cJSON_Parse(s);
  int rc = ANOM_EFORMAT;
  if( !j || !cJSON_IsObject(j) ){
    rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration' is not a JSON object");
    goto done;
  }
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n");
  if( !cJSON_IsNumber(n) || n->valuedouble < 0 || n->valuedouble > 1e9
      || n->valuedouble != floor(n->valuedouble) ){
    rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': 'n' must be a count");
    goto done;
  }
  cal->n = (int)n->valuedouble;
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantiles"), *it;
  if( q && !cJSON_IsArray(q) ){
    rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': 'quantiles' must be an array");
    goto done;
  }
  cJSON_ArrayForEach(it, q){
    const cJSON *p = cJSON_GetArrayItem(it, 0), *v = cJSON_GetArrayItem(it, 1);
    if( cal->nq == MODEL_MAX_QUANTILES || !cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2
        || !cJSON_IsNumber(p) || !cJSON_IsNumber(v) || p->valuedouble < 0 || p->valuedouble > 1
        || !isfinite(v->valuedouble) || (cal->nq && p->valuedouble <= cal->qp[cal->nq - 1]) ){
      rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': quantile %d must be "
                     "[level in 0..1 ascending, finite score] (at most %d)",
                     cal->nq, MODEL_MAX_QUANTILES);
      goto done;
    }
    cal->qp[cal->nq] = p->valuedouble;
    cal->qv[cal->nq++] = v->valuedouble;
  }
  const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "scales");
  if( sc && !cJSON_IsObject(sc) ){
    rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': 'scales' must be an object");
    goto done;
  }
  cJSON_ArrayForEach(it, sc){
    if( cal->nscales == SCORE_MAX_PARTS || !cJSON_IsNumber(it) || !isfinite(it->valuedouble)
        || strlen(it->string) >= sizeof(cal->scale_name[0]) ){
      rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': bad scale '%.32s'", it->string);
      goto done;
    }
    strcpy(cal->scale_name[cal->nscales], it->string);
    cal->scale[cal->nscales++] = it->valuedouble;
  }
  const cJSON *mp = cJSON_GetObjectItemCaseSensitive(j, "map");
  if( mp ){
    const cJSON *sg = cJSON_GetObjectItemCaseSensitive(mp, "sigma");
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(mp, "lo");
    const cJSON *hi = cJSON_GetObjectItemCaseSensitive(mp, "hi");
    if( !cJSON_IsObject(mp) || !cJSON_IsNumber(sg) || !cJSON_IsNumber(lo)
        || !cJSON_IsNumber(hi) || !(sg->valuedouble >= 0) || !isfinite(sg->valuedouble)
        || !isfinite(lo->valuedouble) || !isfinite(hi->valuedouble)
        || lo->valuedouble > hi->valuedouble ){
      rc = anom_fail(e, ANOM_EFORMAT, "metadata 'calibration': 'map' must be "
                     "{\"sigma\": >= 0, \"lo\": x, \"hi\": y} with lo <= hi");
      goto done;
    }
    cal->map_ok = 1;
    cal->map_sigma = sg->valuedouble;
    cal->map_lo = lo->valuedouble;
    cal->map_hi = hi->valuedouble;
  }
  rc = ANOM_OK;
done:
  cJSON_Delete(j);
  return rc;
}

/* Check the tensors of f against the ones m declares and copy them in. */
static int load_tensors(anom_model *m, const st_file *f, anom_err *e) {
  char name[TENSOR_NAME_MAX];
  int found = 0;
  for(int ni = 0; ni < m->nnets; ni++){
    const net *nt = m->nets[ni];
    int cnt = net_tensor_count(nt);
    for(int ti = 0; ti < cnt; ti++){
      int ndim, is_buf;
      int64_t shape[4];
      float *dst;
      net_tensor(nt, ti, name, sizeof(name), &ndim, shape, &dst, &is_buf);
      const st_tensor *t = st_find(f, name);
      if( !t )
        return anom_fail(e, ANOM_EFORMAT, "tensor '%s' is missing (a %s model "
                         "with these hyper-parameters has it)", name, m->ops->name);
      int rc = st_read_f32(t, shape, ndim, dst, e);
      if( rc ) return rc;
      /* running variances must be >= 0, or batch norm takes a square root
      ** of a negative number */
      size_t len = strlen(name);
      int is_var = is_buf && len >= 11 && strcmp(name + len - 11, "running_var") == 0;
      for(int64_t k = 0; k < t->numel; k++){
        if( !isfinite(dst[k]) || (is_var && dst[k] < 0) )
          return anom_fail(e, ANOM_EFORMAT, "tensor '%s' holds a %s value at "
                           "index %lld", name, isfinite(dst[k]) ? "negative" : "non-finite",
                           (long long)k);
      }
      found++;
    }
  }
  if( found == f->ntensors ) return ANOM_OK;
  /* name the first tensor of the file that no network declared */
  for(int i = 0; i < f->ntensors; i++){
    int known = 0;
    for(int ni = 0; ni < m->nnets && !known; ni++){
      int cnt = net_tensor_count(m->nets[ni]);
      for(int ti = 0; ti < cnt && !known; ti++){
        int ndim, is_buf;
        int64_t shape[4];
        float *dst;
        net_tensor(m->nets[ni], ti, name, sizeof(name), &ndim, shape, &dst, &is_buf);
        known = strcmp(name, f->tensors[i].name) == 0;
      }
    }
    if( !known )
      return anom_fail(e, ANOM_EFORMAT, "unexpected tensor '%s' (not part of a %s "
                       "model with these hyper-parameters)", f->tensors[i].name,
                       m->ops->name);
  }
  return ANOM_OK;
}

static const char *need_meta(const st_file *f, const char *key, anom_err *e) {
  const char *v = st_meta(f, key);
  if( !v ) anom_fail(e, ANOM_EFORMAT, "metadata '%s' is missing", key);
  return v;
}

int model_load(anom_model **out, const void *buf, size_t n,
               const model_limits *lim, anom_err *e) {
  model_limits dl;
  if( !lim ){ model_limits_default(&dl); lim = &dl; }
  *out = NULL;
  if( n > lim->max_bytes )
    return anom_fail(e, ANOM_ETOOBIG, "model is %zu bytes, over the limit of %zu",
                     n, lim->max_bytes);
  st_file f;
  int rc = st_parse(&f, buf, n, NULL, e);
  if( rc ) return rc;
  anom_model *m = NULL;
  cJSON *hp = NULL;
  const char *s;
  int version, w, h, c, fit;
  rc = ANOM_EFORMAT;

  if( !(s = st_meta(&f, "format")) || strcmp(s, MODEL_FORMAT) != 0 ){
    anom_fail(e, ANOM_EFORMAT, "not a sqlite-anomaly model: metadata 'format' "
              "is %s%s%s, expected '" MODEL_FORMAT "'", s ? "'" : "", s ? s : "missing",
              s ? "'" : "");
    goto fail;
  }
  if( !(s = need_meta(&f, "format_version", e)) ) goto fail;
  if( parse_int(s, 1, 1 << 30, &version) ){
    anom_fail(e, ANOM_EFORMAT, "metadata 'format_version' is '%s', expected a "
              "positive integer", s);
    goto fail;
  }
  if( version > MODEL_FORMAT_VERSION ){
    anom_fail(e, ANOM_EFORMAT, "model format version %d is newer than this build "
              "reads (%d); upgrade sqlite-anomaly", version, MODEL_FORMAT_VERSION);
    goto fail;
  }
  const char *method = need_meta(&f, "method", e);
  if( !method ) goto fail;
  if( !detector_find(method) ){
    anom_fail(e, ANOM_EFORMAT, "unknown method '%s' (known: %s)", method, detector_names());
    goto fail;
  }
  static const char *dims[3] = {"width", "height", "channels"};
  int *dv[3] = {&w, &h, &c};
  for(int i = 0; i < 3; i++){
    if( !(s = need_meta(&f, dims[i], e)) ) goto fail;
    if( parse_int(s, 1, i < 2 ? lim->max_side : 3, dv[i]) || (i == 2 && c == 2) ){
      anom_fail(e, ANOM_EFORMAT, "metadata '%s' is '%.40s', expected %s", dims[i], s,
                i < 2 ? "an integer from 1 to the size limit" : "1 or 3");
      goto fail;
    }
  }
  if( !(s = need_meta(&f, "fit", e)) ) goto fail;
  if( (fit = model_fit_parse(s)) < 0 ){
    anom_fail(e, ANOM_EFORMAT, "metadata 'fit' is '%.40s', expected 'resize' or 'pad'", s);
    goto fail;
  }
  if( !(s = need_meta(&f, "checksum", e)) ) goto fail;
  {
    /* exactly "crc32:" and 8 lowercase hex digits */
    uint32_t want = 0, got = st_crc32(0, f.data, f.data_len);
    int ok = strlen(s) == 14 && strncmp(s, "crc32:", 6) == 0;
    for(int i = 6; ok && i < 14; i++){
      char ch = s[i];
      int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
      if( d < 0 ) ok = 0;
      else want = want << 4 | (uint32_t)d;
    }
    if( !ok ){
      anom_fail(e, ANOM_EFORMAT, "metadata 'checksum' is '%.40s', expected "
                "'crc32:' and 8 lowercase hex digits", s);
      goto fail;
    }
    if( want != got ){
      anom_fail(e, ANOM_EFORMAT, "checksum mismatch: the file says crc32:%08x, its "
                "tensor data has crc32:%08x (the model is corrupt)", (unsigned)want,
                (unsigned)got);
      goto fail;
    }
  }
  if( !(s = need_meta(&f, "hparams", e)) ) goto fail;
  hp = cJSON_Parse(s);
  if( !hp || !cJSON_IsObject(hp) ){
    anom_fail(e, ANOM_EFORMAT, "metadata 'hparams' is not a JSON object");
    goto fail;
  }
  rc = model_create(&m, method, w, h, c, hp, lim, e);
  if( rc ) goto fail;
  rc = ANOM_EFORMAT;
  m->fit = fit;
  if( (rc = load_tensors(m, &f, e)) != ANOM_OK ) goto fail;
  rc = ANOM_EFORMAT;
  if( !(s = need_meta(&f, "calibration", e)) ) goto fail;
  if( load_calibration(&m->cal, s, e) ) goto fail;
  if( !(s = need_meta(&f, "threshold", e)) ) goto fail;
  if( strcmp(s, "null") != 0 && parse_double(s, &m->threshold) ){
    anom_fail(e, ANOM_EFORMAT, "metadata 'threshold' is '%.40s', expected a "
              "number or null", s);
    goto fail;
  }
  if( (s = st_meta(&f, "created")) != NULL )
    snprintf(m->created, sizeof(m->created), "%s", s);
  cJSON_Delete(hp);
  st_free(&f);
  *out = m;
  return ANOM_OK;
fail:
  cJSON_Delete(hp);
  model_free(m);
  st_free(&f);
  return rc;
}

static char *calibration_json(const model_calibration *cal) {
  cJSON *j = cJSON_CreateObject();
  char *s = NULL;
  if( !j ) return NULL;
  cJSON_AddNumberToObject(j, "n", cal->n);
  cJSON *q = cJSON_AddArrayToObject(j, "quantiles");
  for(int i = 0; q && i < cal->nq; i++){
    cJSON *pair = cJSON_CreateArray();
    if( !pair ) break;
    cJSON_AddItemToArray(pair, cJSON_CreateNumber(cal->qp[i]));
    cJSON_AddItemToArray(pair, cJSON_CreateNumber(cal->qv[i]));
    cJSON_AddItemToArray(q, pair);
  }
  cJSON *sc = cJSON_AddObjectToObject(j, "scales");
  for(int i = 0; sc && i < cal->nscales; i++)
    cJSON_AddNumberToObject(sc, cal->scale_name[i], cal->scale[i]);
  if( cal->map_ok ){
    cJSON *mp = cJSON_AddObjectToObject(j, "map");
    if( mp ){
      cJSON_AddNumberToObject(mp, "sigma", cal->map_sigma);
      cJSON_AddNumberToObject(mp, "lo", cal->map_lo);
      cJSON_AddNumberToObject(mp, "hi", cal->map_hi);
    }
  }
  s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return s;
}

int model_save(const anom_model *m, unsigned char **out, size_t *nout, anom_err *e) {
  int nt = 0, rc = ANOM_ENOMEM;
  for(int i = 0; i < m->nnets; i++) nt += net_tensor_count(m->nets[i]);
  st_out_tensor *ts = anom_calloc((size_t)nt, sizeof(*ts));
  char *names = anom_malloc((size_t)nt * TENSOR_NAME_MAX);
  char *hp_s = NULL, *cal_s = NULL;
  cJSON *hp = NULL;
  *out = NULL;
  *nout = 0;
  if( !ts || !names ) goto fail;
  int k = 0;
  for(int i = 0; i < m->nnets; i++){
    int cnt = net_tensor_count(m->nets[i]);
    for(int ti = 0; ti < cnt; ti++, k++){
      float *data;
      int is_buf;
      char *name = names + (size_t)k * TENSOR_NAME_MAX;
      net_tensor(m->nets[i], ti, name, TENSOR_NAME_MAX, &ts[k].ndim, ts[k].shape,
                 &data, &is_buf);
      ts[k].name = name;
      ts[k].data = data;
    }
  }
  hp = m->ops->hparams(m);
  if( !hp || !(hp_s = cJSON_PrintUnformatted(hp)) || !(cal_s = calibration_json(&m->cal)) )
    goto fail;
  char sw[16], sh[16], sc[16], sthr[40], scrc[20], sver[16];
  snprintf(sw, sizeof(sw), "%d", m->width);
  snprintf(sh, sizeof(sh), "%d", m->height);
  snprintf(sc, sizeof(sc), "%d", m->channels);
  snprintf(sver, sizeof(sver), "%d", MODEL_FORMAT_VERSION);
  if( isfinite(m->threshold) ) snprintf(sthr, sizeof(sthr), "%.17g", m->threshold);
  else snprintf(sthr, sizeof(sthr), "null");
  /* a placeholder of the final length, patched once the data is written */
  snprintf(scrc, sizeof(scrc), "crc32:00000000");
  st_meta_kv meta[] = {
    {"format", MODEL_FORMAT}, {"format_version", sver},
    {"method", (char *)m->ops->name},
    {"width", sw}, {"height", sh}, {"channels", sc},
    {"fit", (char *)model_fit_name(m->fit)},
    {"hparams", hp_s}, {"calibration", cal_s}, {"threshold", sthr},
    {"checksum", scrc}, {"software", "sqlite-anomaly " ANOM_VERSION},
    {"created", (char *)m->created},
  };
  int nmeta = (int)(sizeof(meta) / sizeof(meta[0])) - (m->created[0] ? 0 : 1);
  rc = st_write(out, nout, ts, nt, meta, nmeta, e);
  if( rc == ANOM_OK ){
    /* the checksum covers the data section exactly as written */
    uint64_t hlen = 0;
    for(int i = 7; i >= 0; i--) hlen = hlen << 8 | (*out)[i];
    unsigned char *hdr = *out + 8, *data = hdr + hlen;
    uint32_t crc = st_crc32(0, data, *nout - 8 - (size_t)hlen);
    unsigned char *p = memmem(hdr, (size_t)hlen, "crc32:00000000", 14);
    if( !p ){
      anom_free(*out);
      *out = NULL;
      *nout = 0;
      rc = anom_fail(e, ANOM_EINVAL, "internal error: no checksum slot in the header");
    }else{
      char hex[16];
      snprintf(hex, sizeof(hex), "%08x", (unsigned)crc);
      memcpy(p + 6, hex, 8);
    }
  }
  goto done;
fail:
  rc = anom_fail(e, ANOM_ENOMEM, "out of memory");
done:
  cJSON_free(hp_s);
  cJSON_free(cal_s);
  cJSON_Delete(hp);
  anom_free(names);
  anom_free(ts);
  return rc;
}

size_t model_work_floats(const anom_model *m, int n) {
  /* model_map's residual keeps the reconstructions after the detector's work */
  return m->ops->work_floats(m, n)
         + (size_t)n * m->channels * m->height * m->width;
}

int model_score(const anom_model *m, int n, const float *x, float *work,
                score_result *out, float *recon, const cJSON *opts, anom_err *e) {
  if( opts && !cJSON_IsObject(opts) )
    return anom_fail(e, ANOM_EINVAL, "scoring options must be a JSON object");
  return m->ops->score(m, n, x, work, out, recon, opts, e);
}

int model_map(const anom_model *m, int n, const float *x, float *work, float *map,
              score_result *out, float *recon, const cJSON *opts, anom_err *e) {
  if( opts && !cJSON_IsObject(opts) )
    return anom_fail(e, ANOM_EINVAL, "scoring options must be a JSON object");
  if( m->ops->map ) return m->ops->map(m, n, x, work, map, out, recon, opts, e);
  size_t hw = (size_t)m->height * m->width, img = hw * (size_t)m->channels;
  float *xh = recon ? recon : work + m->ops->work_floats(m, n);
  int rc = m->ops->score(m, n, x, work, out, xh, opts, e);
  if( rc ) return rc;
  for(int i = 0; i < n; i++){
    const float *xi = x + (size_t)i * img, *xhi = xh + (size_t)i * img;
    float *mi = map + (size_t)i * hw;
    for(size_t p = 0; p < hw; p++){
      float s = 0;
      for(int c = 0; c < m->channels; c++)
        s += fabsf(xi[(size_t)c * hw + p] - xhi[(size_t)c * hw + p]);
      mi[p] = s / (float)m->channels;
    }
  }
  return ANOM_OK;
}

cJSON *model_info(const anom_model *m) {
  cJSON *j = cJSON_CreateObject();
  if( !j ) return NULL;
  cJSON_AddStringToObject(j, "format", MODEL_FORMAT);
  cJSON_AddNumberToObject(j, "format_version", MODEL_FORMAT_VERSION);
  cJSON_AddStringToObject(j, "method", m->ops->name);
  cJSON_AddNumberToObject(j, "width", m->width);
  cJSON_AddNumberToObject(j, "height", m->height);
  cJSON_AddNumberToObject(j, "channels", m->channels);
  cJSON_AddStringToObject(j, "fit", model_fit_name(m->fit));
  cJSON *hp = m->ops->hparams(m);
  if( hp ) cJSON_AddItemToObject(j, "hparams", hp);
  char *cal_s = calibration_json(&m->cal);
  cJSON *cal = cal_s ? cJSON_Parse(cal_s) : NULL;
  cJSON_free(cal_s);
  if( cal ) cJSON_AddItemToObject(j, "calibration", cal);
  if( isfinite(m->threshold) ) cJSON_AddNumberToObject(j, "threshold", m->threshold);
  else cJSON_AddNullToObject(j, "threshold");
  cJSON_AddNumberToObject(j, "params", (double)m->nparams);
  cJSON_AddNumberToObject(j, "buffers", (double)m->nbufs);
  cJSON_AddStringToObject(j, "created", m->created);
  return j;
}
