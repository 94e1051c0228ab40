/*
** model_cache.c - parsed models shared by every connection of the process.
**
** Parsing and validating a model costs far more than scoring one image, so
** a model is parsed once and kept, keyed by a 128-bit hash of its bytes. A
** statement takes a reference for as long as it runs (see functions.c); a
** model whose row changes is marked stale and freed when its last user lets
** go. Up to CACHE_IDLE unused models are kept for the next statement, the
** least recently used dropped first. A key is computed from the bytes every
** time a statement starts, so a row rewritten behind the registry's back (by
** another process, or a hand-edited database) is never served from a stale
** entry. A stored model is hashed 64 KiB at a time through an incremental
** BLOB handle (cache_acquire_blob), so a statement that finds its model
** cached never holds a second copy of the file.
*/
#include "anomaly_ext.h"
SQLITE_EXTENSION_INIT3

#include <pthread.h>
#include <string.h>

#define CACHE_IDLE 4

static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static cached_model *cache_head;  /* guarded by cache_mutex */
static uint64_t cache_clock;      /* guarded by cache_mutex */

/*
** The key: two independent 64-bit multiply-xorshift lanes over 8-byte
** words, then the bytes left over. It can be fed in pieces (a stored model
** is read 64 KiB at a time), every piece but the last a multiple of 8 bytes.
*/
typedef struct hash_state {
  uint64_t a, b;
} hash_state;

static void hash_begin(hash_state *h, size_t n) {
  h->a = 0x243f6a8885a308d3ULL ^ n;
  h->b = 0x13198a2e03707344ULL + n;
}

static void hash_feed(hash_state *h, const void *buf, size_t n) {
  const unsigned char *p = buf;
  uint64_t a = h->a, b = h->b;
  size_t i = 0;
  for(; i + 8 <= n; i += 8){
    uint64_t w;
    memcpy(&w, p + i, 8);
    a = (a ^ w) * 0x9e3779b97f4a7c15ULL;
    a ^= a >> 29;
    b = (b + w) * 0xbf58476d1ce4e5b9ULL;
    b ^= b >> 31;
  }
  for(; i < n; i++){
    a = (a ^ p[i]) * 0x100000001b3ULL;
    b = (b + p[i]) * 0x94d049bb133111ebULL;
  }
  h->a = a;
  h->b = b;
}

static void hash_end(hash_state *h, uint64_t key[2]) {
  uint64_t a = h->a, b = h->b;
  a ^= a >> 33; a *= 0xff51afd7ed558ccdULL; a ^= a >> 33;
  b ^= b >> 33; b *= 0xc4ceb9fe1a85ec53ULL; b ^= b >> 33;
  key[0] = a;
  key[1] = b;
}

static void hash_bytes(const void *buf, size_t n, uint64_t key[2]) {
  hash_state h;
  hash_begin(&h, n);
  hash_feed(&h, buf, n);
  hash_end(&h, key);
}

static cached_model *find_locked(const uint64_t key[2], size_t n) {
  for(cached_model *c = cache_head; c; c = c->next)
    if( !c->stale && c->nbytes == n && c->key[0] == key[0] && c->key[1] == key[1] )
      return c;
  return NULL;
}

static void unlink_locked(cached_model *c) {
  for(cached_model **pp = &cache_head; *pp; pp = &(*pp)->next){
    if( *pp == c ){ *pp = c->next; return; }
  }
}

/* Free idle entries beyond CACHE_IDLE, oldest first. Returns a list to free
** outside the lock. */
static cached_model *trim_locked(void) {
  cached_model *dead = NULL;
  for(;;){
    int idle = 0;
    cached_model *oldest = NULL;
    for(cached_model *c = cache_head; c; c = c->next){
      if( c->refs ) continue;
      if( c->stale ){ oldest = c; idle = CACHE_IDLE + 1; break; }
      idle++;
      if( !oldest || c->last_use < oldest->last_use ) oldest = c;
    }
    if( idle <= CACHE_IDLE || !oldest ) return dead;
    unlink_locked(oldest);
    oldest->next = dead;
    dead = oldest;
  }
}

static void free_list(cached_model *c) {
  while( c ){
    cached_model *next = c->next;
    model_free(c->model);
    anom_free(c);
    c = next;
  }
}

/* The cached model with this key, with a reference, or NULL. */
static cached_model *cache_hit(const uint64_t key[2], size_t n) {
  pthread_mutex_lock(&cache_mutex);
  cached_model *c = find_locked(key, n);
  if( c ){
    c->refs++;
    c->last_use = ++cache_clock;
  }
  pthread_mutex_unlock(&cache_mutex);
  return c;
}

static int cache_load(const uint64_t key[2], const void *blob, size_t n,
                      const model_limits *lim, cached_model **out, anom_err *e);

int cache_acquire(const void *blob, size_t n, const model_limits *lim,
                  cached_model **out, anom_err *e) {
  uint64_t key[2];
  *out = NULL;
  if( n > lim->max_bytes )
    return anom_fail(e, ANOM_ETOOBIG, "model is %zu bytes, over the limit of %zu",
                     n, lim->max_bytes);
  hash_bytes(blob, n, key);
  if( (*out = cache_hit(key, n)) != NULL ) return ANOM_OK;
  return cache_load(key, blob, n, lim, out, e);
}

/* A miss: parse blob (whose key is key) and add it, or take the copy
** another thread added meanwhile. */
static int cache_load(const uint64_t key[2], const void *blob, size_t n,
                      const model_limits *lim, cached_model **out, anom_err *e) {
  /* Parse outside the lock: other statements need not wait for it. */
  anom_model *m;
  int rc = model_load(&m, blob, n, lim, e);
  if( rc ) return rc;
  cached_model *fresh = anom_calloc(1, sizeof(*fresh));
  if( !fresh ){
    model_free(m);
    return anom_fail(e, ANOM_ENOMEM, "out of memory");
  }
  memcpy(fresh->key, key, sizeof(fresh->key));
  fresh->nbytes = n;
  fresh->model = m;
  fresh->refs = 1;

  pthread_mutex_lock(&cache_mutex);
  cached_model *c = find_locked(key, n);   /* another thread may have loaded it meanwhile */
  if( c ){
    c->refs++;
    c->last_use = ++cache_clock;
  }else{
    c = fresh;
    fresh = NULL;
    c->last_use = ++cache_clock;
    c->next = cache_head;
    cache_head = c;
  }
  cached_model *dead = trim_locked();
  pthread_mutex_unlock(&cache_mutex);
  free_list(fresh);
  free_list(dead);
  *out = c;
  return ANOM_OK;
}

/* Bytes read from a stored model at a time while computing its key. */
#define BLOB_PIECE (64 * 1024)

/* len bytes of bh from offset at into buf, SQLite's failure as ours. */
static int blob_read(sqlite3_blob *bh, void *buf, int len, size_t at, anom_err *e) {
  int src = sqlite3_blob_read(bh, buf, len, (int)at);
  if( src == SQLITE_OK ) return ANOM_OK;
  if( src == SQLITE_NOMEM ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  return anom_fail(e, ANOM_EINVAL, "cannot read it: %s", sqlite3_errstr(src));
}

int cache_acquire_blob(sqlite3_blob *bh, const model_limits *lim, cached_model **out,
                       anom_err *e) {
  size_t n = (size_t)sqlite3_blob_bytes(bh);
  unsigned char *buf = NULL;
  uint64_t key[2];
  hash_state h;
  int rc = ANOM_OK;
  *out = NULL;
  if( n > lim->max_bytes )
    return anom_fail(e, ANOM_ETOOBIG, "model is %zu bytes, over the limit of %zu",
                     n, lim->max_bytes);
  /* the key from pieces, so that a hit never holds the whole model twice */
  if( !(buf = anom_malloc(BLOB_PIECE)) ) return anom_fail(e, ANOM_ENOMEM, "out of memory");
  hash_begin(&h, n);
  for(size_t at = 0; at < n; at += BLOB_PIECE){
    int len = (int)(n - at < BLOB_PIECE ? n - at : BLOB_PIECE);
    if( (rc = blob_read(bh, buf, len, at, e)) != ANOM_OK ) goto done;
    hash_feed(&h, buf, (size_t)len);
  }
  hash_end(&h, key);
  if( (*out = cache_hit(key, n)) != NULL ) goto done;
  /* a miss: read it whole and parse it */
  anom_free(buf);
  if( !(buf = anom_malloc(n ? n : 1)) ){ rc = anom_fail(e, ANOM_ENOMEM, "out of memory"); goto done; }
  if( (rc = blob_read(bh, buf, (int)n, 0, e)) == ANOM_OK )
    rc = cache_load(key, buf, n, lim, out, e);   /* hashed already */
done:
  anom_free(buf);
  return rc;
}

void cache_release(cached_model *c) {
  if( !c ) return;
  pthread_mutex_lock(&cache_mutex);
  c->refs--;
  cached_model *dead = trim_locked();
  pthread_mutex_unlock(&cache_mutex);
  free_list(dead);
}

void cache_forget(const void *blob, size_t n) {
  uint64_t key[2];
  hash_bytes(blob, n, key);
  pthread_mutex_lock(&cache_mutex);
  cached_model *c = find_locked(key, n);
  if( c ) c->stale = 1;
  cached_model *dead = trim_locked();
  pthread_mutex_unlock(&cache_mutex);
  free_list(dead);
}

void cache_stats(int *models, int *in_use, size_t *file_bytes) {
  *models = *in_use = 0;
  *file_bytes = 0;
  pthread_mutex_lock(&cache_mutex);
  for(cached_model *c = cache_head; c; c = c->next){
    (*models)++;
    if( c->refs > 0 ) (*in_use)++;
    *file_bytes += c->nbytes;
  }
  pthread_mutex_unlock(&cache_mutex);
}
