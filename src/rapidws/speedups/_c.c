/* The C twin of rapidws/speedups/pure.py: the same functions, the same results.
 *
 * apply_mask          XOR with the masking key, eight bytes at a time.
 * parse_frame_header  read a frame header at an offset; None when incomplete.
 * Utf8Validator       incremental UTF-8 validation (RFC 3629) without
 *                     decoding, with an ASCII fast path.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* apply_mask(data, mask, offset=0) -> bytes */

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    Py_ssize_t offset = 0;
    PyObject *result = NULL;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "apply_mask() takes 2 or 3 arguments");
        return NULL;
    }
    if (nargs == 3) {
        offset = PyLong_AsSsize_t(args[2]);
        if (offset == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (offset < 0) {
            PyErr_SetString(PyExc_ValueError, "offset must be >= 0");
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    {
        const unsigned char *in = (const unsigned char *)data.buf;
        const unsigned char *key = (const unsigned char *)mask.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        unsigned char rotated[8];
        uint64_t word_mask, word;
        Py_ssize_t i = 0, n = data.len;

        /* The key as it lines up with data[0], twice: one 64-bit word. */
        for (int k = 0; k < 8; k++) {
            rotated[k] = key[(offset + k) & 3];
        }
        memcpy(&word_mask, rotated, 8);
        for (; i + 8 <= n; i += 8) {
            memcpy(&word, in + i, 8);
            word ^= word_mask;
            memcpy(out + i, &word, 8);
        }
        for (; i < n; i++) {
            out[i] = in[i] ^ rotated[i & 7];
        }
    }
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

/* parse_frame_header(buf, pos) -> (first, second, length, mask, end) | None */

static PyObject *
parse_frame_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    Py_ssize_t pos, end;
    PyObject *result = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_frame_header() takes 2 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "pos must be >= 0");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    {
        const unsigned char *p = (const unsigned char *)buf.buf;
        Py_ssize_t available = buf.len - pos;
        unsigned long long length;
        PyObject *mask;

        if (available < 2) {
            goto incomplete;
        }
        p += pos;
        length = p[1] & 0x7F;
        end = pos + 2;
        if (length == 126) {
            if (available < 4) {
                goto incomplete;
            }
            length = ((unsigned long long)p[2] << 8) | p[3];
            end = pos + 4;
        }
        else if (length == 127) {
            if (available < 10) {
                goto incomplete;
            }
            length = 0;
            for (int k = 2; k < 10; k++) {
                length = (length << 8) | p[k];
            }
            end = pos + 10;
        }
        if (p[1] & 0x80) {
            if (buf.len < end + 4) {
                goto incomplete;
            }
            mask = PyBytes_FromStringAndSize((const char *)buf.buf + end, 4);
            if (mask == NULL) {
                goto done;
            }
            end += 4;
        }
        else {
            mask = Py_NewRef(Py_None);
        }
        result = Py_BuildValue("(iiKNn)", p[0], p[1], length, mask, end);
        goto done;
    }
incomplete:
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    return result;
}

/* Utf8Validator: validate(data, final=False) -> bool; reset() -> None
 *
 * The state is the number of continuation bytes still expected and the range
 * allowed for the next one, which is narrower than 0x80-0xBF right after some
 * lead bytes (RFC 3629 section 4): that is what rejects overlong forms,
 * surrogates and code points past U+10FFFF at their first wrong byte.
 */

typedef struct {
    PyObject_HEAD
    int need;           /* continuation bytes still expected */
    unsigned char lo;   /* allowed range of the next continuation byte */
    unsigned char hi;
} Utf8Validator;

static int
utf8_feed(Utf8Validator *self, const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    int need = self->need;
    unsigned char lo = self->lo, hi = self->hi;

    while (i < n) {
        if (need == 0) {
            /* ASCII fast path: eight bytes at a time while no high bit. */
            while (i + 8 <= n) {
                uint64_t word;
                memcpy(&word, s + i, 8);
                if (word & 0x8080808080808080ULL) {
                    break;
                }
                i += 8;
            }
            if (i >= n) {
                break;
            }
            unsigned char c = s[i++];
            if (c < 0x80) {
                continue;
            }
            lo = 0x80;
            hi = 0xBF;
            if (c >= 0xC2 && c <= 0xDF) {
                need = 1;
            }
            else if (c >= 0xE0 && c <= 0xEF) {
                need = 2;
                if (c == 0xE0) {
                    lo = 0xA0; /* no overlong forms */
                }
                else if (c == 0xED) {
                    hi = 0x9F; /* no surrogates */
                }
            }
            else if (c >= 0xF0 && c <= 0xF4) {
                need = 3;
                if (c == 0xF0) {
                    lo = 0x90; /* no overlong forms */
                }
                else if (c == 0xF4) {
                    hi = 0x8F; /* nothing past U+10FFFF */
                }
            }
            else {
                return 0;
            }
        }
        else {
            unsigned char c = s[i++];
            if (c < lo || c > hi) {
                return 0;
            }
            lo = 0x80;
            hi = 0xBF;
            need--;
        }
    }
    self->need = need;
    self->lo = lo;
    self->hi = hi;
    return 1;
}

static PyObject *
Utf8Validator_validate(Utf8Validator *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    int final = 0, ok;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "validate() takes 1 or 2 arguments");
        return NULL;
    }
    if (nargs == 2) {
        final = PyObject_IsTrue(args[1]);
        if (final < 0) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    ok = utf8_feed(self, (const unsigned char *)data.buf, data.len);
    PyBuffer_Release(&data);
    if (ok && final) {
        ok = self->need == 0;
    }
    if (final || !ok) {
        /* A finished or failed stream: start afresh, as the pure twin does. */
        self->need = 0;
    }
    return PyBool_FromLong(ok);
}

static PyObject *
Utf8Validator_reset(Utf8Validator *self, PyObject *Py_UNUSED(ignored))
{
    self->need = 0;
    Py_RETURN_NONE;
}

static PyMethodDef Utf8Validator_methods[] = {
    {"validate", (PyCFunction)(void (*)(void))Utf8Validator_validate, METH_FASTCALL,
     "validate(data, final=False) -> bool\n\n"
     "Validate the next piece; False at the first byte that cannot be UTF-8,\n"
     "or with final=True when the stream ends inside a code point."},
    {"reset", (PyCFunction)Utf8Validator_reset, METH_NOARGS,
     "reset() -> None\n\nForget any partial code point."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Utf8ValidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rapidws.speedups._c.Utf8Validator",
    .tp_doc = "Incremental UTF-8 validation, without decoding.",
    .tp_basicsize = sizeof(Utf8Validator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = Utf8Validator_methods,
};

static PyMethodDef module_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, offset=0) -> bytes\n\nXOR data with the 4-byte mask."},
    {"parse_frame_header", (PyCFunction)(void (*)(void))parse_frame_header, METH_FASTCALL,
     "parse_frame_header(buf, pos) -> tuple | None\n\nParse the frame header at buf[pos]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rapidws.speedups._c",
    .m_doc = "The C twin of rapidws.speedups.pure.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__c(void)
{
    PyObject *module, *exported;

    if (PyType_Ready(&Utf8ValidatorType) < 0) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&Utf8ValidatorType);
    if (PyModule_AddObject(module, "Utf8Validator", (PyObject *)&Utf8ValidatorType) < 0) {
        Py_DECREF(&Utf8ValidatorType);
        Py_DECREF(module);
        return NULL;
    }
    exported = Py_BuildValue("[sss]", "Utf8Validator", "apply_mask", "parse_frame_header");
    if (exported == NULL || PyModule_AddObject(module, "__all__", exported) < 0) {
        Py_XDECREF(exported);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
