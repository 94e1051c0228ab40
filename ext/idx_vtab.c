/*
** idx_vtab.c - anomaly_idx(images [, labels]): the images of an IDX file
** (MNIST, Fashion-MNIST; plain or gzipped) as rows of PNG BLOBs, so that a
** dataset on disk becomes a table of images like any archive.
**
**   CREATE TABLE fashion(id INTEGER PRIMARY KEY, split TEXT, label INT, image BLOB);
**   INSERT INTO fashion(split, label, image)
**     SELECT 'train', label, image FROM anomaly_idx(
**       '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz',
**       '/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz');
**
** Columns: idx (0-based position in the file), label (NULL without a labels
** file), image (an 8-bit grey PNG). A table-valued function that reads
** files: SQLITE_VTAB_DIRECTONLY, so no view or trigger can reach it.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include "core/idx.h"
#include "core/image.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum { COL_IDX, COL_LABEL, COL_IMAGE, COL_IMAGES_PATH, COL_LABELS_PATH };

typedef struct idx_cursor {
  sqlite3_vtab_cursor base;  /* Base class - must be first */
  idx_file images, labels;
  int has_labels;
  size_t row;
} idx_cursor;

static int idxConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **out, char **pzErr) {
  (void)aux; (void)argc; (void)argv; (void)pzErr;
  int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(idx INTEGER, label INTEGER, "
                                "image BLOB, images HIDDEN, labels HIDDEN)");
  if( rc ) return rc;
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  sqlite3_vtab *vt = sqlite3_malloc(sizeof(*vt));
  if( !vt ) return SQLITE_NOMEM;
  memset(vt, 0, sizeof(*vt));
  *out = vt;
  return SQLITE_OK;
}

static int idxDisconnect(sqlite3_vtab *vt) {
  sqlite3_free(vt);
  return SQLITE_OK;
}

/* idxNum bit 1: images path given (argv[0]); bit 2: labels path (next argv). */
static int idxBestIndex(sqlite3_vtab *vt, sqlite3_index_info *info) {
  int slot[2] = {-1, -1};
  for(int i = 0; i < info->nConstraint; i++){
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    if( c->op != SQLITE_INDEX_CONSTRAINT_EQ ) continue;
    if( c->iColumn != COL_IMAGES_PATH && c->iColumn != COL_LABELS_PATH ) continue;
    if( !c->usable ) return SQLITE_CONSTRAINT;
    slot[c->iColumn - COL_IMAGES_PATH] = i;
  }
  if( slot[0] < 0 ){
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: the images file is required: "
                                  "anomaly_idx('images-idx3-ubyte.gz' [, 'labels-idx1-ubyte.gz'])");
    return SQLITE_ERROR;
  }
  int next = 1;
  info->idxNum = 0;
  for(int k = 0; k < 2; k++){
    if( slot[k] < 0 ) continue;
    info->aConstraintUsage[slot[k]].argvIndex = next++;
    info->aConstraintUsage[slot[k]].omit = 1;
    info->idxNum |= 1 << k;
  }
  info->estimatedCost = 100000;
  info->estimatedRows = 60000;
  return SQLITE_OK;
}

static int idxOpen(sqlite3_vtab *vt, sqlite3_vtab_cursor **out) {
  (void)vt;
  idx_cursor *cur = sqlite3_malloc(sizeof(*cur));
  if( !cur ) return SQLITE_NOMEM;
  memset(cur, 0, sizeof(*cur));
  *out = &cur->base;
  return SQLITE_OK;
}

static int idxClose(sqlite3_vtab_cursor *base) {
  idx_cursor *cur = (idx_cursor *)base;
  idx_free(&cur->images);
  idx_free(&cur->labels);
  sqlite3_free(cur);
  return SQLITE_OK;
}

/* Read and parse the IDX file at path into f; on failure set the error. */
static int load_file(sqlite3_vtab *vt, const char *path, idx_file *f) {
  FILE *fp = path ? fopen(path, "rb") : NULL;
  unsigned char *buf = NULL;
  long size = -1;
  int rc = SQLITE_ERROR;
  anom_err e;
  anom_err_clear(&e);
  sqlite3_free(vt->zErrMsg);
  vt->zErrMsg = NULL;
  if( !fp ){
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: cannot open '%s': %s",
                                  path ? path : "NULL", path ? strerror(errno) : "no path");
    return SQLITE_ERROR;
  }
  if( fseek(fp, 0, SEEK_END) == 0 ) size = ftell(fp);
  if( size < 0 || (size_t)size > IDX_MAX_BYTES || fseek(fp, 0, SEEK_SET) != 0 ){
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: cannot read '%s'", path);
  }else if( !(buf = anom_malloc((size_t)size + 1)) ){
    rc = SQLITE_NOMEM;
  }else if( fread(buf, 1, (size_t)size, fp) != (size_t)size ){
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: short read from '%s'", path);
  }else if( (rc = idx_load(f, buf, (size_t)size, &e)) != ANOM_OK ){
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: '%s': %s", path, e.msg);
    rc = rc == ANOM_ENOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
  }else{
    rc = SQLITE_OK;
  }
  anom_free(buf);
  fclose(fp);
  return rc;
}

static int idxFilter(sqlite3_vtab_cursor *base, int idxNum, const char *idxStr,
                     int argc, sqlite3_value **argv) {
  (void)idxStr; (void)argc;
  idx_cursor *cur = (idx_cursor *)base;
  sqlite3_vtab *vt = base->pVtab;
  idx_free(&cur->images);
  idx_free(&cur->labels);
  cur->row = 0;
  cur->has_labels = 0;
  int rc = load_file(vt, (const char *)sqlite3_value_text(argv[0]), &cur->images);
  if( rc ) return rc;
  if( cur->images.ndim != 3 ){
    vt->zErrMsg = sqlite3_mprintf("anomaly_idx: the images file has %d dimension(s), "
                                  "expected 3 (count, rows, columns)", cur->images.ndim);
    return SQLITE_ERROR;
  }
  if( (idxNum & 2) && sqlite3_value_type(argv[1]) != SQLITE_NULL ){
    if( (rc = load_file(vt, (const char *)sqlite3_value_text(argv[1]), &cur->labels)) )
      return rc;
    if( cur->labels.ndim != 1 || cur->labels.count != cur->images.count ){
      vt->zErrMsg = sqlite3_mprintf("anomaly_idx: the labels file holds %lld labels "
                                    "for %lld images", (long long)cur->labels.count,
                                    (long long)cur->images.count);
      return SQLITE_ERROR;
    }
    cur->has_labels = 1;
  }
  return SQLITE_OK;
}

static int idxNext(sqlite3_vtab_cursor *base) {
  ((idx_cursor *)base)->row++;
  return SQLITE_OK;
}

static int idxEof(sqlite3_vtab_cursor *base) {
  idx_cursor *cur = (idx_cursor *)base;
  return cur->row >= cur->images.count;
}

static int idxColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col) {
  idx_cursor *cur = (idx_cursor *)base;
  switch( col ){
    case COL_IDX: sqlite3_result_int64(ctx, (sqlite3_int64)cur->row); break;
    case COL_LABEL:
      if( cur->has_labels ) sqlite3_result_int(ctx, cur->labels.data[cur->row]);
      break;
    case COL_IMAGE: {
      const idx_file *f = &cur->images;
      unsigned char *png;
      size_t n;
      anom_err e;
      int rc = image_encode_png(&png, &n, f->data + cur->row * f->item_bytes,
                                f->dims[2], f->dims[1], 1, &e);
      if( rc ){ sqlite3_result_error_nomem(ctx); break; }
      sqlite3_result_blob64(ctx, png, n, anom_free);
      break;
    }
    default: break;
  }
  return SQLITE_OK;
}

static int idxRowid(sqlite3_vtab_cursor *base, sqlite_int64 *rowid) {
  *rowid = (sqlite_int64)((idx_cursor *)base)->row;
  return SQLITE_OK;
}

static sqlite3_module idx_module = {
  0, 0, idxConnect, idxBestIndex, idxDisconnect, 0, idxOpen, idxClose, idxFilter,
  idxNext, idxEof, idxColumn, idxRowid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};

int anom_register_idx(sqlite3 *db) {
  return sqlite3_create_module(db, "anomaly_idx", &idx_module, 0);
}
