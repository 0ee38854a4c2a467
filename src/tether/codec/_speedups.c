/* C versions of the codec's two per-object loops (tether/codec/_accel.py).

   flat_dicts(seq, cls, limit): the __dict__s of a list made only of instances of exactly
   `cls` whose attributes are plain JSON values (str, None, bool, int within +-limit,
   finite float) or lists/tuples of them, with str names; None for anything else. It is
   the same rule as encoder._flat_run, in one pass without a Python loop per object.

   build_dicts(node, cls, start): for node[start:], while each item is a dict, replaces it
   with cls.__new__(cls) whose __dict__ is that dict; returns the index where it stopped
   (the first item that is not a dict, or len(node)). The same as decoder._build_run's
   loop for default portable classes.

   Neither calls into user code except cls.__new__ (as the Python versions do). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* 1: a plain value; 0: not plain; -1: error set. */
static int
plain_scalar(PyObject *v, long limit)
{
    if (PyUnicode_CheckExact(v) || v == Py_None || PyBool_Check(v)) {
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long x = PyLong_AsLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        return overflow == 0 && x >= -limit && x <= limit;
    }
    if (PyFloat_CheckExact(v)) {
        return isfinite(PyFloat_AS_DOUBLE(v)) ? 1 : 0;
    }
    return 0;
}

static int
plain_value(PyObject *v, long limit)
{
    int ok = plain_scalar(v, limit);
    if (ok != 0) {
        return ok;
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        PyObject *items = PySequence_Fast(v, "");
        if (items == NULL) {
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
        PyObject **p = PySequence_Fast_ITEMS(items);
        int result = 1;
        for (Py_ssize_t i = 0; i < n && result == 1; i++) {
            result = plain_scalar(p[i], limit);
        }
        Py_DECREF(items);
        return result;
    }
    return 0;
}

static PyObject *
flat_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "flat_dicts(seq, cls, limit)");
        return NULL;
    }
    PyObject *seq = args[0];
    PyTypeObject *cls = (PyTypeObject *)args[1];
    long limit = PyLong_AsLong(args[2]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(seq) && !PyTuple_CheckExact(seq)) {
        Py_RETURN_NONE;
    }
    /* A snapshot: getting a __dict__ may allocate, hence collect, hence run finalizers
       that could change a list under us. */
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (Py_TYPE(item) != cls) {
            goto not_flat;
        }
        PyObject *dict = PyObject_GenericGetDict(item, NULL);
        if (dict == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                goto error;
            }
            PyErr_Clear();
            goto not_flat;
        }
        PyList_SET_ITEM(out, i, dict); /* steals the new reference */
        if (!PyDict_CheckExact(dict)) {
            goto not_flat;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        /* nothing below allocates, so no finalizer can change the dict meanwhile */
        while (PyDict_Next(dict, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key)) {
                goto not_flat;
            }
            int ok = plain_value(value, limit);
            if (ok < 0) {
                goto error;
            }
            if (ok == 0) {
                goto not_flat;
            }
        }
    }
    Py_DECREF(items);
    return out;
not_flat:
    Py_DECREF(items);
    Py_DECREF(out); /* unset slots are NULL: list_dealloc skips them */
    Py_RETURN_NONE;
error:
    Py_DECREF(items);
    Py_DECREF(out);
    return NULL;
}

static PyObject *
build_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "build_dicts(node: list, cls, start)");
        return NULL;
    }
    PyObject *node = args[0];
    PyTypeObject *cls = (PyTypeObject *)args[1];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (cls->tp_new == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot create '%s' instances", cls->tp_name);
        return NULL;
    }
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL) {
        return NULL;
    }
    for (; i >= 0 && i < PyList_GET_SIZE(node); i++) {
        PyObject *data = PyList_GET_ITEM(node, i);
        if (!PyDict_CheckExact(data)) {
            break;
        }
        Py_INCREF(data); /* cls.__new__ may run code that changes the node */
        PyObject *obj = cls->tp_new(cls, no_args, NULL); /* cls.__new__(cls) */
        if (obj == NULL || PyObject_GenericSetDict(obj, data, NULL) < 0) {
            Py_XDECREF(obj);
            Py_DECREF(data);
            Py_DECREF(no_args);
            return NULL;
        }
        Py_DECREF(data);
        /* the node may have changed size under cls.__new__: check before replacing */
        if (i >= PyList_GET_SIZE(node)) {
            Py_DECREF(obj);
            break;
        }
        PyObject *old = PyList_GET_ITEM(node, i);
        PyList_SET_ITEM(node, i, obj);
        Py_DECREF(old);
    }
    Py_DECREF(no_args);
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"flat_dicts", (PyCFunction)(void (*)(void))flat_dicts, METH_FASTCALL,
     "The __dict__s of a run of plain objects of one class, or None."},
    {"build_dicts", (PyCFunction)(void (*)(void))build_dicts, METH_FASTCALL,
     "Builds objects of a class from the dicts of node[start:]; returns where it stopped."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tether.codec._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
