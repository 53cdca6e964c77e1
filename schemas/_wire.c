/* The scorer's two per-batch codecs in C: Transaction v1 decode and Decision encode.
 *
 * Both are exact for the rows they take: decode_v1 accepts a message only when its bytes are
 * precisely a Transaction v1 body as the strict general path (fastavro + schemas/avro_binary)
 * would read it, and hands every other row back to that path by position; encode_decisions
 * writes what fastavro's schemaless_writer writes. The Python wrappers (transaction_codec.py,
 * decision_codec.py) own validation, broadcasting and dtypes; this file walks bytes.
 *
 * Every read is bounds-checked against its own message: hostile input can only send a row to
 * the general path, never read past a value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_buffer.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Avro doubles are little-endian; this module copies them as native doubles"
#endif

#define N_PCA 28
#define N_FEATURES (N_PCA + 1)
#define HEADER_SIZE 10
#define CONFLUENT_HEADER 5
/* After the two strings and the event time: amount (8), count 28 as one zigzag byte (56),
 * 28 doubles, the 0 that ends the array. */
#define TAIL_SIZE (8 + 1 + 8 * N_PCA + 1)

/* ---------------------------------------------------------------- reading */

/* A strict zigzag long at p (end excluded): at most 10 bytes, a 10th byte of at most 1 (the
 * value fits 64 bits), as avro_binary.read_strict_varint. Returns the next position or NULL. */
static const uint8_t *read_long(const uint8_t *p, const uint8_t *end, int64_t *out) {
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return NULL;
        uint8_t byte = *p++;
        if (i == 9 && byte > 1) return NULL;
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80)) {
            *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
            return p;
        }
    }
    return NULL;
}

static int is_ascii(const uint8_t *p, Py_ssize_t n) {
    uint8_t seen = 0;
    for (Py_ssize_t i = 0; i < n; i++) seen |= p[i];
    return seen < 0x80;
}

/* The string at *p as bytes, when it is valid UTF-8 and ends before `limit`; NULL otherwise
 * (no Python error left set). */
static PyObject *read_string(const uint8_t **p, const uint8_t *limit) {
    int64_t length;
    const uint8_t *start = read_long(*p, limit, &length);
    if (start == NULL || length < 0 || length > limit - start) return NULL;
    if (!is_ascii(start, (Py_ssize_t)length)) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)start, (Py_ssize_t)length, "strict");
        if (text == NULL) {
            PyErr_Clear();
            return NULL;
        }
        Py_DECREF(text);
    }
    *p = start + length;
    return PyBytes_FromStringAndSize((const char *)start, (Py_ssize_t)length);
}

/* decode_v1(values, header, confluent_ids, eligible, max_bytes, index, event_time, matrix)
 *
 * values: list of bytes. header: the 10-byte single-object header of Transaction v1.
 * confluent_ids: concatenated 4-byte wire ids (big-endian) of registry schemas with v1's
 * layout, b"" for none. eligible: None, or bytes with one 0/1 per value (0: not Avro by its
 * content type). Rows longer than max_bytes are left to the general path (which refuses them).
 * index/event_time (int64[n]) and matrix (float64[n, 29], FEATURE_NAMES order) are filled for
 * the decoded rows, in input order. Returns (count, transaction_ids, card_ids, general): the
 * number of decoded rows, their ids as bytes, and the positions left to the general path. */
static PyObject *decode_v1(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "decode_v1 takes 8 arguments");
        return NULL;
    }
    PyObject *values = args[0], *header = args[1], *ids = args[2], *eligible = args[3];
    if (!PyList_Check(values) || !PyBytes_Check(header) || PyBytes_GET_SIZE(header) != HEADER_SIZE
        || !PyBytes_Check(ids) || PyBytes_GET_SIZE(ids) % 4
        || (eligible != Py_None && !PyBytes_Check(eligible))) {
        PyErr_SetString(PyExc_TypeError, "decode_v1: bad argument types");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (eligible != Py_None && PyBytes_GET_SIZE(eligible) != n) {
        PyErr_SetString(PyExc_ValueError, "decode_v1: one eligibility byte per value");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[4]);
    if (max_bytes == -1 && PyErr_Occurred()) return NULL;
    Py_buffer index_view, time_view, matrix_view;
    if (get_buffer(args[5], &index_view, n * 8, 1, "index") < 0) return NULL;
    if (get_buffer(args[6], &time_view, n * 8, 1, "event_time") < 0) {
        PyBuffer_Release(&index_view);
        return NULL;
    }
    if (get_buffer(args[7], &matrix_view, n * 8 * N_FEATURES, 1, "matrix") < 0) {
        PyBuffer_Release(&index_view);
        PyBuffer_Release(&time_view);
        return NULL;
    }
    int64_t *index = index_view.buf, *event_time = time_view.buf;
    double *matrix = matrix_view.buf;
    const char *magic = PyBytes_AS_STRING(header);
    const uint8_t *native = (const uint8_t *)PyBytes_AS_STRING(ids);
    Py_ssize_t n_native = PyBytes_GET_SIZE(ids) / 4;
    const char *allowed = eligible == Py_None ? NULL : PyBytes_AS_STRING(eligible);

    PyObject *tx_ids = PyList_New(0), *card_ids = PyList_New(0), *general = PyList_New(0);
    PyObject *result = NULL;
    if (tx_ids == NULL || card_ids == NULL || general == NULL) goto done;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        PyObject *tx = NULL, *card = NULL;
        int ok = 0;
        if (PyBytes_Check(value) && (allowed == NULL || allowed[i])
            && PyBytes_GET_SIZE(value) <= max_bytes) {
            const uint8_t *start = (const uint8_t *)PyBytes_AS_STRING(value);
            Py_ssize_t size = PyBytes_GET_SIZE(value);
            const uint8_t *end = start + size, *p = NULL;
            if (size >= HEADER_SIZE && memcmp(start, magic, HEADER_SIZE) == 0) {
                p = start + HEADER_SIZE;
            } else if (size >= CONFLUENT_HEADER && start[0] == 0) {
                for (Py_ssize_t j = 0; j < n_native; j++) {
                    if (memcmp(start + 1, native + 4 * j, 4) == 0) {
                        p = start + CONFLUENT_HEADER;
                        break;
                    }
                }
            }
            if (p != NULL && end - p >= 3 + TAIL_SIZE) {
                const uint8_t *tail = end - TAIL_SIZE;
                int64_t when;
                /* each string must end before the tail: the time's varint takes >= 1 byte */
                if ((tx = read_string(&p, tail)) != NULL && (card = read_string(&p, tail)) != NULL
                    && read_long(p, tail, &when) == tail && tail[8] == 2 * N_PCA
                    && end[-1] == 0) {
                    double *row = matrix + count * N_FEATURES;
                    memcpy(row, tail + 9, 8 * N_PCA);
                    memcpy(row + N_PCA, tail, 8);
                    index[count] = i;
                    event_time[count] = when;
                    ok = 1;
                }
            }
        }
        if (ok) {
            if (PyList_Append(tx_ids, tx) < 0 || PyList_Append(card_ids, card) < 0) ok = -1;
            count++;
        } else {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL || PyList_Append(general, position) < 0) ok = -1;
            Py_XDECREF(position);
        }
        Py_XDECREF(tx);
        Py_XDECREF(card);
        if (ok < 0 || PyErr_Occurred()) goto done;
    }
    result = Py_BuildValue("nOOO", count, tx_ids, card_ids, general);
done:
    Py_XDECREF(tx_ids);
    Py_XDECREF(card_ids);
    Py_XDECREF(general);
    PyBuffer_Release(&index_view);
    PyBuffer_Release(&time_view);
    PyBuffer_Release(&matrix_view);
    return result;
}

/* ---------------------------------------------------------------- writing */

static uint8_t *write_long(uint8_t *p, int64_t value) {
    uint64_t zigzag = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (zigzag > 0x7F) {
        *p++ = (uint8_t)(zigzag | 0x80);
        zigzag >>= 7;
    }
    *p++ = (uint8_t)zigzag;
    return p;
}

static Py_ssize_t long_size(int64_t value) {
    uint64_t zigzag = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    Py_ssize_t size = 1;
    while (zigzag > 0x7F) {
        zigzag >>= 7;
        size++;
    }
    return size;
}

static uint8_t *write_double(uint8_t *p, double value) {
    memcpy(p, &value, 8);
    return p + 8;
}

enum { TX, CARD, N_LISTS };
enum { PROBABILITY, BLOCK, REVIEW, LATENCY, N_DOUBLES };
enum { OUTCOME, VERSION, VARIANT, EVENT_TIME, SCORED_AT, PARTITION, OFFSET, N_LONGS };
enum { PREDICTED, CACHE_HIT, N_FLAGS };

/* encode_decisions(prefix, version_blocks, batch_block, lineage_block,
 *                  transaction_ids, card_ids,
 *                  fraud_probability, block_threshold, review_threshold, latency_ms,   float64[k]
 *                  decision, model_version, variant, event_time, scored_at,
 *                  source_partition, source_offset,                                   int64[k]
 *                  predicted_fraud, cache_hit)                                        bool[k]
 *
 * One message per row: prefix (the single-object or Confluent header), then the Decision body
 * in field order. decision/variant are enum indexes below 64 (one zigzag byte); model_version
 * indexes version_blocks (each an encoded string); the blocks are pre-encoded constant fields
 * (batch_size; scorer_id + source_topic). The wrapper checks ranges; this re-checks the index
 * that addresses memory. */
#define ENCODE_ARGS (4 + N_LISTS + N_DOUBLES + N_LONGS + N_FLAGS)

static PyObject *encode_decisions(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != ENCODE_ARGS) {
        PyErr_Format(PyExc_TypeError, "encode_decisions takes %d arguments", ENCODE_ARGS);
        return NULL;
    }
    PyObject *prefix = args[0], *versions = args[1], *batch_block = args[2], *lineage = args[3];
    if (!PyBytes_Check(prefix) || !PyTuple_Check(versions) || !PyBytes_Check(batch_block)
        || !PyBytes_Check(lineage)) {
        PyErr_SetString(PyExc_TypeError, "encode_decisions: bad block types");
        return NULL;
    }
    Py_ssize_t n_versions = PyTuple_GET_SIZE(versions);
    for (Py_ssize_t v = 0; v < n_versions; v++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(versions, v))) {
            PyErr_SetString(PyExc_TypeError, "encode_decisions: version blocks must be bytes");
            return NULL;
        }
    }
    PyObject *lists[N_LISTS];
    for (int j = 0; j < N_LISTS; j++) {
        lists[j] = args[4 + j];
        if (!PyList_Check(lists[j])) {
            PyErr_SetString(PyExc_TypeError, "encode_decisions: ids must be lists of bytes");
            return NULL;
        }
    }
    Py_ssize_t k = PyList_GET_SIZE(lists[TX]);
    if (PyList_GET_SIZE(lists[CARD]) != k) {
        PyErr_SetString(PyExc_ValueError, "encode_decisions: id lists differ in length");
        return NULL;
    }
    Py_buffer views[N_DOUBLES + N_LONGS + N_FLAGS];
    int held = 0;
    PyObject *out = NULL;
    for (; held < N_DOUBLES + N_LONGS + N_FLAGS; held++) {
        Py_ssize_t width = held < N_DOUBLES + N_LONGS ? 8 : 1;
        if (PyObject_GetBuffer(args[4 + N_LISTS + held], &views[held], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        if (views[held].len != k * width) {
            PyErr_Format(PyExc_ValueError, "encode_decisions: column %d holds %zd bytes, not %zd",
                         held, views[held].len, k * width);
            held++;
            goto done;
        }
    }
    const double *doubles[N_DOUBLES];
    const int64_t *longs[N_LONGS];
    const uint8_t *flags[N_FLAGS];
    for (int j = 0; j < N_DOUBLES; j++) doubles[j] = views[j].buf;
    for (int j = 0; j < N_LONGS; j++) longs[j] = views[N_DOUBLES + j].buf;
    for (int j = 0; j < N_FLAGS; j++) flags[j] = views[N_DOUBLES + N_LONGS + j].buf;

    out = PyList_New(k);
    if (out == NULL) goto done;
    const char *head = PyBytes_AS_STRING(prefix);
    Py_ssize_t head_size = PyBytes_GET_SIZE(prefix);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *tx = PyList_GET_ITEM(lists[TX], i), *card = PyList_GET_ITEM(lists[CARD], i);
        int64_t outcome = longs[OUTCOME][i], version = longs[VERSION][i];
        int64_t arm = longs[VARIANT][i];
        if (!PyBytes_Check(tx) || !PyBytes_Check(card) || version < 0 || version >= n_versions
            || outcome < 0 || outcome > 63 || arm < 0 || arm > 63) {
            PyErr_Format(PyExc_ValueError, "encode_decisions: row %zd does not fit", i);
            Py_CLEAR(out);
            goto done;
        }
        PyObject *block = PyTuple_GET_ITEM(versions, version);
        Py_ssize_t tx_size = PyBytes_GET_SIZE(tx), card_size = PyBytes_GET_SIZE(card);
        Py_ssize_t size = head_size + long_size(tx_size) + tx_size + long_size(card_size)
                          + card_size + 8 + 1 + 1 + 8 + 8 + PyBytes_GET_SIZE(block) + 1 + 1
                          + PyBytes_GET_SIZE(batch_block) + long_size(longs[EVENT_TIME][i])
                          + long_size(longs[SCORED_AT][i]) + 8 + PyBytes_GET_SIZE(lineage)
                          + long_size(longs[PARTITION][i]) + long_size(longs[OFFSET][i]);
        PyObject *message = PyBytes_FromStringAndSize(NULL, size);
        if (message == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(message);
        memcpy(p, head, head_size);
        p = write_long(p + head_size, tx_size);
        memcpy(p, PyBytes_AS_STRING(tx), tx_size);
        p = write_long(p + tx_size, card_size);
        memcpy(p, PyBytes_AS_STRING(card), card_size);
        p = write_double(p + card_size, doubles[PROBABILITY][i]);
        *p++ = flags[PREDICTED][i] != 0;
        *p++ = (uint8_t)(outcome << 1);
        p = write_double(p, doubles[BLOCK][i]);
        p = write_double(p, doubles[REVIEW][i]);
        memcpy(p, PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block));
        p += PyBytes_GET_SIZE(block);
        *p++ = (uint8_t)(arm << 1);
        *p++ = flags[CACHE_HIT][i] != 0;
        memcpy(p, PyBytes_AS_STRING(batch_block), PyBytes_GET_SIZE(batch_block));
        p = write_long(p + PyBytes_GET_SIZE(batch_block), longs[EVENT_TIME][i]);
        p = write_long(p, longs[SCORED_AT][i]);
        p = write_double(p, doubles[LATENCY][i]);
        memcpy(p, PyBytes_AS_STRING(lineage), PyBytes_GET_SIZE(lineage));
        p = write_long(p + PyBytes_GET_SIZE(lineage), longs[PARTITION][i]);
        write_long(p, longs[OFFSET][i]);
        PyList_SET_ITEM(out, i, message);
    }
done:
    for (int j = 0; j < held; j++) PyBuffer_Release(&views[j]);
    return out;
}

static PyMethodDef methods[] = {
    {"decode_v1", (PyCFunction)(void (*)(void))decode_v1, METH_FASTCALL,
     "Decode the Transaction v1 rows of a batch; see schemas/_wire.c."},
    {"encode_decisions", (PyCFunction)(void (*)(void))encode_decisions, METH_FASTCALL,
     "Encode one Decision message per row; see schemas/_wire.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "schemas._wire", "Sentinel's per-batch Avro codecs in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&module); }
