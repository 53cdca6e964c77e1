/* The buffer check the C modules share (schemas/_wire.c, streams/scoring/_table.c and
 * _messages.c): a C-contiguous buffer of at least `min_bytes`, writable if asked; -1 with a
 * ValueError naming `name` if it is shorter. */
#ifndef SENTINEL_BUFFER_H
#define SENTINEL_BUFFER_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t min_bytes, int writable,
                      const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->len < min_bytes) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, needs %zd", name, view->len, min_bytes);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}
#endif
