/* The decision cache's per-batch work in C: feature-row digests, and probing and filling the
 * cache's slot table (streams/scoring/digest.py and cache.py own the layout, validation and
 * documentation; this file loops). One pass per batch instead of ~20 numpy calls, each of which
 * costs microseconds on a 10-row batch.
 *
 * The table is four numpy arrays of the same length (a multiple of WAYS): keys (uint64),
 * probabilities (float64), stored-at (float64, monotonic seconds) and written (int64, the write
 * counter: which slot of a bucket was written last). Every index is computed from a key and
 * masked into the table by the shift, so no input can reach outside it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "_buffer.h"

#define N_FEATURES 29
#define WAYS 4
#define HASH 0x9E3779B97F4A7C15ULL
#define MIX 0xBF58476D1CE4E5B9ULL

static void release(Py_buffer *views, int held) {
    for (int i = 0; i < held; i++) PyBuffer_Release(&views[i]);
}

/* digest_rows(words, column_keys, out): out[i] = sum_j mix_j(words[i, j]) for an (n, 29) uint64
 * view of the float64 rows, n = len(out); the steps of digest.py's docstring. */
static PyObject *digest_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "digest_rows takes 3 arguments");
        return NULL;
    }
    Py_buffer v[3];
    int held = 0;
    if (get_buffer(args[2], &v[0], 0, 1, "out") < 0) return NULL;
    held = 1;
    Py_ssize_t n = v[0].len / 8;
    if (get_buffer(args[0], &v[1], n * 8 * N_FEATURES, 0, "words") < 0) goto fail;
    held = 2;
    if (get_buffer(args[1], &v[2], 8 * N_FEATURES, 0, "column_keys") < 0) goto fail;
    held = 3;
    uint64_t *out = v[0].buf;
    const uint64_t *words = v[1].buf, *keys = v[2].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t *w = words + i * N_FEATURES;
        uint64_t sum = 0;
        for (int j = 0; j < N_FEATURES; j++) {
            uint64_t x = (w[j] ^ (w[j] >> 32)) * keys[j];
            x = (x ^ (x >> 29)) * MIX;
            sum += x;
        }
        out[i] = sum;
    }
    release(v, held);
    Py_RETURN_NONE;
fail:
    release(v, held);
    return NULL;
}

/* The table's four arrays, their slot count checked against each other. */
typedef struct {
    Py_buffer views[4];
    int held;
    uint64_t *keys;
    double *probability, *stored_at;
    int64_t *written;
    Py_ssize_t slots;
} Table;

static int open_table(PyObject *const *arrays, int with_written, Table *t) {
    static const char *names[4] = {"keys", "probabilities", "stored_at", "written"};
    t->held = 0;
    if (get_buffer(arrays[0], &t->views[0], 0, 1, names[0]) < 0) return -1;
    t->held = 1;
    t->slots = t->views[0].len / 8;
    if (t->slots % WAYS) {
        PyErr_SetString(PyExc_ValueError, "the table's length is not a multiple of WAYS");
        return -1;
    }
    for (int i = 1; i < 3 + with_written; i++) {
        if (get_buffer(arrays[i], &t->views[i], t->slots * 8, 1, names[i]) < 0) return -1;
        t->held = i + 1;
    }
    t->keys = t->views[0].buf;
    t->probability = t->views[1].buf;
    t->stored_at = t->views[2].buf;
    t->written = with_written ? t->views[3].buf : NULL;
    return 0;
}

/* The first slot of a key's bucket; `shift` leaves log2(slots / WAYS) bits. */
static inline Py_ssize_t first_slot(uint64_t key, unsigned shift, Py_ssize_t slots) {
    uint64_t bucket = (key * HASH) >> shift;
    return (Py_ssize_t)(bucket * WAYS) % slots; /* the modulo only guards a wrong shift */
}

/* The way of `key`'s bucket holding it unexpired, or -1. */
static inline int held_way(const Table *t, Py_ssize_t first, uint64_t key, double live_after) {
    for (int w = 0; w < WAYS; w++)
        if (t->keys[first + w] == key && t->stored_at[first + w] > live_after) return w;
    return -1;
}

static int parse_common(PyObject *const *args, uint64_t *salt, unsigned *shift, double *time) {
    *salt = PyLong_AsUnsignedLongLongMask(args[0]);
    long s = PyLong_AsLong(args[1]);
    *time = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) return -1;
    if (s < 1 || s > 63) {
        PyErr_SetString(PyExc_ValueError, "shift must be in [1, 63]");
        return -1;
    }
    *shift = (unsigned)s;
    return 0;
}

/* lookup(keys, probabilities, stored_at, salt, shift, live_after, digests, hit, found):
 * hit[i] (bool) and found[i] (the probability, 0.0 on a miss) for each digest. */
static PyObject *lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "lookup takes 9 arguments");
        return NULL;
    }
    uint64_t salt;
    unsigned shift;
    double live_after;
    if (parse_common(args + 3, &salt, &shift, &live_after) < 0) return NULL;
    Table t;
    Py_buffer v[3];
    int held = 0;
    PyObject *result = NULL;
    if (open_table(args, 0, &t) < 0) goto done;
    if (get_buffer(args[6], &v[0], 0, 0, "digests") < 0) goto done;
    held = 1;
    Py_ssize_t n = v[0].len / 8;
    if (get_buffer(args[7], &v[1], n, 1, "hit") < 0) goto done;
    held = 2;
    if (get_buffer(args[8], &v[2], n * 8, 1, "found") < 0) goto done;
    held = 3;
    const uint64_t *digests = v[0].buf;
    uint8_t *hit = v[1].buf;
    double *found = v[2].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = digests[i] ^ salt;
        Py_ssize_t first = first_slot(key, shift, t.slots);
        int w = held_way(&t, first, key, live_after);
        hit[i] = w >= 0;
        found[i] = w >= 0 ? t.probability[first + w] : 0.0;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release(v, held);
    release(t.views, t.held);
    return result;
}

/* store(keys, probabilities, stored_at, written, salt, shift, now, ttl_s, writes, digests,
 * fresh) -> writes: each digest not held unexpired takes its bucket's least recently written
 * slot (first score wins until it expires; within a batch, a later key displaces an earlier
 * one only when its bucket has no older slot left). `writes` is the table's write counter. */
static PyObject *store(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "store takes 11 arguments");
        return NULL;
    }
    uint64_t salt;
    unsigned shift;
    double now;
    if (parse_common(args + 4, &salt, &shift, &now) < 0) return NULL;
    double live_after = now - PyFloat_AsDouble(args[7]);
    long long writes = PyLong_AsLongLong(args[8]);
    if (PyErr_Occurred()) return NULL;
    Table t;
    Py_buffer v[2];
    int held = 0;
    PyObject *result = NULL;
    if (open_table(args, 1, &t) < 0) goto done;
    if (get_buffer(args[9], &v[0], 0, 0, "digests") < 0) goto done;
    held = 1;
    Py_ssize_t n = v[0].len / 8;
    if (get_buffer(args[10], &v[1], n * 8, 0, "fresh") < 0) goto done;
    held = 2;
    const uint64_t *digests = v[0].buf;
    const double *fresh = v[1].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = digests[i] ^ salt;
        Py_ssize_t first = first_slot(key, shift, t.slots);
        if (held_way(&t, first, key, live_after) >= 0) continue;
        int oldest = 0;
        for (int w = 1; w < WAYS; w++)
            if (t.written[first + w] < t.written[first + oldest]) oldest = w;
        Py_ssize_t slot = first + oldest;
        t.keys[slot] = key;
        t.probability[slot] = fresh[i];
        t.stored_at[slot] = now;
        t.written[slot] = ++writes;
    }
    result = PyLong_FromLongLong(writes);
done:
    release(v, held);
    release(t.views, t.held);
    return result;
}

static PyMethodDef methods[] = {
    {"digest_rows", (PyCFunction)(void (*)(void))digest_rows, METH_FASTCALL,
     "The 64-bit digest of each feature row; see streams/scoring/digest.py."},
    {"lookup", (PyCFunction)(void (*)(void))lookup, METH_FASTCALL,
     "Probe the cache table for a batch of digests; see streams/scoring/cache.py."},
    {"store", (PyCFunction)(void (*)(void))store, METH_FASTCALL,
     "Put a batch of fresh probabilities into the cache table; see streams/scoring/cache.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streams.scoring._table",
    "The decision cache's per-batch loops (digests, table probe and fill) in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__table(void) { return PyModule_Create(&module); }
