/* What the C files of rapidws.speedups._c share: ProtocolCore's layout, the
 * OPEN state, and the helpers that ConnectionCore (_connection.c) calls. */

#ifndef RAPIDWS_SPEEDUPS_CORE_H
#define RAPIDWS_SPEEDUPS_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Whole messages up to this size are framed into one bytes object. */
#define JOIN_LIMIT 4096
/* A frame with this much payload still to come is read into its message. */
#define DIRECT_READ_MIN (64 * 1024)

/* Shared between the module's files only: not exported from the shared
 * object, so that no other library's symbol of the same name can stand in. */
#if defined(__GNUC__) || defined(__clang__)
#define INTERNAL __attribute__((visibility("hidden")))
#else
#define INTERNAL
#endif

typedef struct {
    PyObject_HEAD
    PyObject *state, *buf, *events, *out;
    long long frame_left, read_limit; /* 64 bits on every platform */
    int msg_opcode;
    char masked, parsing_paused, send_direct, eof_sent;
} ProtocolCore;

INTERNAL extern PyTypeObject ProtocolCoreType;
INTERNAL extern PyTypeObject ConnectionCoreType;
INTERNAL extern PyObject *open_state; /* set by set_open_state() */

INTERNAL PyObject *ProtocolCore_receive_data(ProtocolCore *self, PyObject *data);
INTERNAL PyObject *ProtocolCore_send_message(ProtocolCore *self, PyObject *const *args,
                                             size_t nargsf, PyObject *kwnames);
/* Swap a list field for a new empty one; return the old one. */
INTERNAL PyObject *swap_list(PyObject **field);
/* self.<name>(*args, **kwargs) with vectorcall arguments, as a method
 * implemented in C hands them on to Python. */
INTERNAL PyObject *call_python_method(PyObject *self, PyObject *name, PyObject *const *args,
                                      size_t nargsf, PyObject *kwnames);
/* The opening handshake's string work (_http.c, _handshake.c) and what it
 * needs at import: 0, or -1 with an exception set. */
INTERNAL extern PyObject *InvalidRequest, *SecurityError;
INTERNAL extern const char TCHAR[128]; /* RFC 7230 section 3.2.6: token characters */
/* Raise type(message) or type(message, status) (status 0: the default);
 * message is a new reference, taken. Returns NULL. */
INTERNAL PyObject *http_error(PyObject *type, PyObject *message, int status);
INTERNAL PyObject *add_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
INTERNAL PyObject *parse_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
INTERNAL PyObject *parse_request_line(PyObject *module, PyObject *line);
INTERNAL PyObject *accept_key(PyObject *module, PyObject *key);
INTERNAL PyObject *serialize_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
INTERNAL int http_init(PyObject *module);
INTERNAL int handshake_init(void);
/* Interns ConnectionCore's method names; 0, or -1 with an exception set. */
INTERNAL int connection_core_init(void);

#endif
