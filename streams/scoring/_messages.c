/* The scoring loop's per-message plumbing in C: reading a consumed batch's values, partitions
 * and offsets out of confluent-kafka's Message objects in one pass, each partition's offset
 * bounds, and building the message dicts Producer.produce_batch takes. In Python these were
 * list comprehensions, generators and numpy masks, a few hundred nanoseconds per message
 * (streams/scoring/loop.py and bench/relay.py call them).
 *
 * Messages are read only through their public methods (error(), value(), partition(),
 * offset()), so nothing here depends on confluent-kafka's C layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "_buffer.h"

static PyObject *s_error, *s_value, *s_partition, *s_offset, *s_key;

/* A method's integer result, or -1 with an error set (a None result is a TypeError). */
static long long call_integer(PyObject *obj, PyObject *name) {
    PyObject *result = PyObject_CallMethodNoArgs(obj, name);
    if (result == NULL) return -1;
    long long value = PyLong_AsLongLong(result);
    Py_DECREF(result);
    return value;
}

/* read_batch(messages, partitions, offsets) -> values, or None if any message carries an error.
 * `messages` is a list; partitions (int32) and offsets (int64) hold at least len(messages). */
static PyObject *read_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "read_batch takes a list and two arrays");
        return NULL;
    }
    PyObject *messages = args[0];
    Py_ssize_t n = PyList_GET_SIZE(messages);
    Py_buffer pv, ov;
    if (get_buffer(args[1], &pv, n * 4, 1, "partitions") < 0) return NULL;
    if (get_buffer(args[2], &ov, n * 8, 1, "offsets") < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    int32_t *partitions = pv.buf;
    int64_t *offsets = ov.buf;
    PyObject *m = NULL;
    PyObject *values = PyList_New(n);
    if (values == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* A method written in Python could change the list: hold the message, check the size. */
        if (PyList_GET_SIZE(messages) != n) {
            PyErr_SetString(PyExc_RuntimeError, "messages changed size during read_batch");
            goto fail;
        }
        m = PyList_GET_ITEM(messages, i);
        Py_INCREF(m);
        PyObject *err = PyObject_CallMethodNoArgs(m, s_error);
        if (err == NULL) goto fail;
        Py_DECREF(err);
        if (err != Py_None) {  /* the caller sorts the batch out in Python */
            Py_DECREF(m);
            Py_CLEAR(values);
            PyBuffer_Release(&pv);
            PyBuffer_Release(&ov);
            Py_RETURN_NONE;
        }
        PyObject *value = PyObject_CallMethodNoArgs(m, s_value);
        if (value == NULL) goto fail;
        PyList_SET_ITEM(values, i, value);
        long long partition = call_integer(m, s_partition);
        if (partition == -1 && PyErr_Occurred()) goto fail;
        if (partition < INT32_MIN || partition > INT32_MAX) {
            PyErr_Format(PyExc_OverflowError, "partition %lld does not fit int32", partition);
            goto fail;
        }
        long long offset = call_integer(m, s_offset);
        if (offset == -1 && PyErr_Occurred()) goto fail;
        partitions[i] = (int32_t)partition;
        offsets[i] = (int64_t)offset;
        Py_CLEAR(m);
    }
    PyBuffer_Release(&pv);
    PyBuffer_Release(&ov);
    return values;
fail:
    Py_XDECREF(m);
    Py_XDECREF(values);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&ov);
    return NULL;
}

/* produce_dicts(values, keys) -> [{"value": v, "key": k}, ...]; two lists of one length. */
static PyObject *produce_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "produce_dicts takes two lists");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    if (PyList_GET_SIZE(args[1]) != n) {
        PyErr_Format(PyExc_ValueError, "%zd values but %zd keys", n, PyList_GET_SIZE(args[1]));
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL) goto fail;
        PyList_SET_ITEM(out, i, d);
        if (PyDict_SetItem(d, s_value, PyList_GET_ITEM(args[0], i)) < 0) goto fail;
        if (PyDict_SetItem(d, s_key, PyList_GET_ITEM(args[1], i)) < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* offset_bounds(topic, partitions, offsets) -> (first, after): per partition of a consumed batch
 * ({(topic, partition): offset}), its lowest offset and its highest + 1. One pass: a batch
 * holds a few runs of each partition, so the partition of the row before is tried first. */
static PyObject *offset_bounds(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "offset_bounds takes a topic and two arrays");
        return NULL;
    }
    Py_buffer pv, ov;
    if (get_buffer(args[1], &pv, 0, 0, "partitions") < 0) return NULL;
    if (get_buffer(args[2], &ov, 0, 0, "offsets") < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    PyObject *first = NULL, *after = NULL, *result = NULL;
    int32_t *seen = NULL;
    int64_t *low = NULL, *high = NULL;
    Py_ssize_t n = pv.len / 4, k = 0;
    if (pv.itemsize != 4 || ov.itemsize != 8 || ov.len != n * 8) {
        PyErr_SetString(PyExc_ValueError, "offset_bounds needs int32 partitions and as many "
                                          "int64 offsets");
        goto done;
    }
    const int32_t *partitions = pv.buf;
    const int64_t *offsets = ov.buf;
    seen = PyMem_Malloc((n ? n : 1) * sizeof *seen);
    low = PyMem_Malloc((n ? n : 1) * sizeof *low);
    high = PyMem_Malloc((n ? n : 1) * sizeof *high);
    if (seen == NULL || low == NULL || high == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0, at = -1; i < n; i++) {
        if (at < 0 || seen[at] != partitions[i]) {
            for (at = 0; at < k && seen[at] != partitions[i]; at++) {
            }
            if (at == k) {
                seen[k] = partitions[i];
                low[k] = high[k] = offsets[i];
                k++;
                continue;
            }
        }
        if (offsets[i] < low[at]) low[at] = offsets[i];
        if (offsets[i] > high[at]) high[at] = offsets[i];
    }
    first = PyDict_New();
    after = PyDict_New();
    if (first == NULL || after == NULL) goto done;
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *key = Py_BuildValue("(Oi)", args[0], seen[j]);
        PyObject *lo = key ? PyLong_FromLongLong(low[j]) : NULL;
        PyObject *hi = lo ? PyLong_FromLongLong(high[j] + 1) : NULL;
        int failed = hi == NULL || PyDict_SetItem(first, key, lo) < 0 ||
                     PyDict_SetItem(after, key, hi) < 0;
        Py_XDECREF(key);
        Py_XDECREF(lo);
        Py_XDECREF(hi);
        if (failed) goto done;
    }
    result = PyTuple_Pack(2, first, after);
done:
    Py_XDECREF(first);
    Py_XDECREF(after);
    PyMem_Free(seen);
    PyMem_Free(low);
    PyMem_Free(high);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&ov);
    return result;
}

static PyMethodDef methods[] = {
    {"read_batch", (PyCFunction)(void (*)(void))read_batch, METH_FASTCALL,
     "A consumed batch's values, partitions and offsets in one pass; None if any has an error."},
    {"produce_dicts", (PyCFunction)(void (*)(void))produce_dicts, METH_FASTCALL,
     "The {'value': v, 'key': k} dicts Producer.produce_batch takes."},
    {"offset_bounds", (PyCFunction)(void (*)(void))offset_bounds, METH_FASTCALL,
     "Per partition of a batch: its first offset and its last + 1, as two dicts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streams.scoring._messages",
    "The scoring loop's per-message plumbing (reading consumed messages, produce_batch's dicts).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__messages(void) {
    if (!(s_error = PyUnicode_InternFromString("error")) ||
        !(s_value = PyUnicode_InternFromString("value")) ||
        !(s_partition = PyUnicode_InternFromString("partition")) ||
        !(s_offset = PyUnicode_InternFromString("offset")) ||
        !(s_key = PyUnicode_InternFromString("key")))
        return NULL;
    return PyModule_Create(&module);
}
