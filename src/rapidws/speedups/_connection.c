/* ConnectionCore: the part of rapidws.asyncio's Connection that every message
 * goes through, the C twin of rapidws/speedups/pure_connection.py.
 *
 * data_received() feeds the engine and, on an open connection with a message
 * callback, hands each message to it and writes the replies in one call:
 * no Python frame of ours between the transport and the application. Without
 * a callback, a read that brings one message while recv() waits hands it to
 * recv()'s future. Anything else goes on in the subclass's Python methods,
 * with the same arguments.
 *
 * It also counts what goes through (rapidws.metrics reads the counts when
 * scraped): messages and payload bytes each way by type, and bytes on the
 * wire, in fields that the paths below add to as the data passes. */

#include "_core.h"
#include "structmember.h"

/* The counts, in pure_connection.py's order (its COUNTS names them). */
enum {
    TEXT_IN,
    TEXT_IN_BYTES,
    BINARY_IN,
    BINARY_IN_BYTES,
    TEXT_OUT,
    TEXT_OUT_BYTES,
    BINARY_OUT,
    BINARY_OUT_BYTES,
    WIRE_IN,
    WIRE_OUT,
    N_COUNTS
};

typedef struct {
    PyObject_HEAD
    PyObject *protocol, *transport, *on_message, *recv_waiter;
    char handling;
    unsigned long long counts[N_COUNTS];
} ConnectionCore;

static PyObject *str_data_received_more, *str_process_events, *str_events_done,
    *str_write_pending, *str_read_payload_directly, *str_callback_failed, *str_send_nowait_more,
    *str_write, *str_done, *str_set_result;

int
connection_core_init(void)
{
    struct {
        PyObject **field;
        const char *name;
    } names[] = {
        {&str_data_received_more, "_data_received_more"},
        {&str_process_events, "_process_events"},
        {&str_events_done, "_events_done"},
        {&str_write_pending, "_write_pending"},
        {&str_read_payload_directly, "_read_payload_directly"},
        {&str_callback_failed, "_callback_failed"},
        {&str_send_nowait_more, "_send_nowait_more"},
        {&str_write, "write"},
        {&str_done, "done"},
        {&str_set_result, "set_result"},
    };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].field = PyUnicode_InternFromString(names[i].name);
        if (*names[i].field == NULL) {
            return -1;
        }
    }
    return 0;
}

static int
ConnectionCore_traverse(ConnectionCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->protocol);
    Py_VISIT(self->transport);
    Py_VISIT(self->on_message);
    Py_VISIT(self->recv_waiter);
    return 0;
}

static int
ConnectionCore_clear(ConnectionCore *self)
{
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->on_message);
    Py_CLEAR(self->recv_waiter);
    return 0;
}

static void
ConnectionCore_dealloc(ConnectionCore *self)
{
    PyObject_GC_UnTrack(self);
    ConnectionCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The UTF-8 size of a str: its length when ASCII (the common case, known
 * from its flags), else computed from its code points. */

static Py_ssize_t
utf8_size(PyObject *text)
{
    Py_ssize_t n, size;
    int kind;
    const void *data;

#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        return n;
    }
    kind = PyUnicode_KIND(text);
    data = PyUnicode_DATA(text);
    size = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);

        size += (c >= 0x80) + (c >= 0x800) + (c >= 0x10000);
    }
    return size;
}

/* Count data of a message at counts[0:4] (text messages, text bytes, binary
 * messages, binary bytes): one message more when message is set. Anything
 * but str and bytes-like (a PreparedMessage) is not counted. */

static void
count_other(unsigned long long *counts, PyObject *data, int message)
{
    if (PyUnicode_Check(data)) {
        counts[0] += message;
        counts[1] += (unsigned long long)utf8_size(data);
    }
    else if (PyBytes_Check(data)) {
        counts[2] += message;
        counts[3] += (unsigned long long)PyBytes_GET_SIZE(data);
    }
    else if (PyByteArray_Check(data)) {
        counts[2] += message;
        counts[3] += (unsigned long long)PyByteArray_GET_SIZE(data);
    }
    else if (PyMemoryView_Check(data)) {
        counts[2] += message;
        counts[3] += (unsigned long long)PyMemoryView_GET_BUFFER(data)->len;
    }
}

/* Inlined in the per-message paths: exact bytes and ASCII str, the messages
 * that the engine makes and that callbacks echo, cost a few instructions. */

static inline void
count(unsigned long long *counts, PyObject *data, int message)
{
    PyTypeObject *kind = Py_TYPE(data);

    if (kind == &PyBytes_Type) {
        counts[2] += message;
        counts[3] += (unsigned long long)PyBytes_GET_SIZE(data);
    }
    else if (kind == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(data)) {
        counts[0] += message;
        counts[1] += (unsigned long long)PyUnicode_GET_LENGTH(data);
    }
    else {
        count_other(counts, data, message);
    }
}

/* _count_received(data, message) and _count_sent(data, message): for the
 * paths in Python (streams, fragments, the general event loop). */

static PyObject *
count_method(ConnectionCore *self, PyObject *const *args, Py_ssize_t nargs, int first)
{
    int message;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "takes 2 arguments (data, message)");
        return NULL;
    }
    message = PyObject_IsTrue(args[1]);
    if (message < 0) {
        return NULL;
    }
    count(self->counts + first, args[0], message);
    Py_RETURN_NONE;
}

static PyObject *
ConnectionCore_count_received(ConnectionCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    return count_method(self, args, nargs, TEXT_IN);
}

static PyObject *
ConnectionCore_count_sent(ConnectionCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    return count_method(self, args, nargs, TEXT_OUT);
}

/* The engine, as a new reference, when it is a ProtocolCore and open. */

static ProtocolCore *
open_engine(ConnectionCore *self)
{
    PyObject *protocol = self->protocol;

    if (protocol == NULL || open_state == NULL || !PyObject_TypeCheck(protocol, &ProtocolCoreType) ||
        ((ProtocolCore *)protocol)->state != open_state) {
        return NULL;
    }
    return (ProtocolCore *)Py_NewRef(protocol);
}

static int
call_noargs(ConnectionCore *self, PyObject *name)
{
    PyObject *result = PyObject_CallMethodNoArgs((PyObject *)self, name);

    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* Write what the engine produced: one frame of an open connection at once,
 * anything else (several frames, EOF, closing, or a callback that gave the
 * connection another engine) with _write_pending(). */

static int
write_pending(ConnectionCore *self, ProtocolCore *engine)
{
    PyObject *transport = self->transport, *out = engine->out, *frame, *result;

    if (self->protocol != (PyObject *)engine) {
        return call_noargs(self, str_write_pending);
    }
    if (transport == NULL || transport == Py_None) {
        return 0;
    }
    if (out == NULL || !PyList_CheckExact(out) || engine->state != open_state ||
        engine->eof_sent) {
        return call_noargs(self, str_write_pending);
    }
    if (PyList_GET_SIZE(out) == 0) {
        return 0;
    }
    frame = PyList_GET_ITEM(out, 0);
    if (PyList_GET_SIZE(out) != 1 || !PyBytes_CheckExact(frame) || PyBytes_GET_SIZE(frame) == 0) {
        return call_noargs(self, str_write_pending);
    }
    /* Taken out in place: removing allocates nothing, so nothing else runs. */
    Py_INCREF(frame);
    if (PyList_SetSlice(out, 0, 1, NULL) < 0) {
        Py_DECREF(frame);
        return -1;
    }
    self->counts[WIRE_OUT] += (unsigned long long)PyBytes_GET_SIZE(frame);
    Py_INCREF(transport);
    result = PyObject_CallMethodOneArg(transport, str_write, frame);
    Py_DECREF(transport);
    Py_DECREF(frame);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* After the events: a pause is _events_done()'s to handle; else the replies
 * and what the engine sent go out. */

static int
handled(ConnectionCore *self, ProtocolCore *engine)
{
    if (engine->parsing_paused) {
        return call_noargs(self, str_events_done);
    }
    return write_pending(self, engine);
}

static int
only_messages(PyObject *events)
{
    if (events == NULL || !PyList_CheckExact(events)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyTypeObject *kind = Py_TYPE(PyList_GET_ITEM(events, i));

        if (kind != &PyUnicode_Type && kind != &PyBytes_Type) {
            return 0;
        }
    }
    return 1;
}

/* The callback raised an Exception: self._callback_failed(method, exc). */

static int
callback_failed(ConnectionCore *self, PyObject *method)
{
    PyObject *exc, *result;

#if PY_VERSION_HEX >= 0x030C0000
    exc = PyErr_GetRaisedException();
#else
    PyObject *type, *traceback;

    PyErr_Fetch(&type, &exc, &traceback);
    PyErr_NormalizeException(&type, &exc, &traceback);
    if (exc != NULL && traceback != NULL) {
        PyException_SetTraceback(exc, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
#endif
    if (exc == NULL) {
        exc = Py_NewRef(Py_None);
    }
    result = PyObject_CallMethodObjArgs((PyObject *)self, str_callback_failed, method, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* Each message of the engine's events to the callback, then the replies in
 * one write; events that are not all messages go to _process_events(). */

static int
dispatch(ConnectionCore *self, ProtocolCore *engine, PyObject *on_message)
{
    PyObject *events, *fresh, *args[2], *result;
    int status = 0;

    /* Allocated before the events are checked: a collection it starts may
     * run a finalizer, and nothing runs between the check and the swap. */
    fresh = PyList_New(0);
    if (fresh == NULL) {
        return -1;
    }
    events = engine->events;
    if (!only_messages(events)) {
        Py_DECREF(fresh);
        return call_noargs(self, str_process_events);
    }
    engine->events = fresh;
    self->handling = 1;
    args[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        args[1] = PyList_GET_ITEM(events, i);
        count(self->counts + TEXT_IN, args[1], 1);
        result = PyObject_Vectorcall(on_message, args, 2, NULL);
        if (result != NULL) {
            Py_DECREF(result);
            continue;
        }
        if (!PyErr_ExceptionMatches(PyExc_Exception) || callback_failed(self, on_message) < 0) {
            status = -1;
            break;
        }
    }
    self->handling = 0;
    Py_DECREF(events);
    return status < 0 ? -1 : handled(self, engine);
}

/* The waiting recv()'s future, as a new reference, when it is pending. */

static PyObject *
pending_waiter(ConnectionCore *self)
{
    PyObject *waiter = self->recv_waiter, *done;

    if (waiter == NULL || waiter == Py_None) {
        return NULL;
    }
    Py_INCREF(waiter);
    done = PyObject_CallMethodNoArgs(waiter, str_done);
    if (done != Py_False) {
        /* Done (cancelled), or not a future: the Python path decides. */
        Py_XDECREF(done);
        Py_DECREF(waiter);
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(done);
    return waiter;
}

/* _process_events() when the read brought one message and recv() waits for
 * it: the future gets it, then what the engine sent is written. Anything
 * else goes to _process_events(). */

static int
hand_over(ConnectionCore *self, ProtocolCore *engine)
{
    PyObject *fresh, *waiter, *events, *result;

    /* Allocated first: a collection it starts may run a finalizer, and
     * nothing may run between the checks and the hand-over. */
    fresh = PyList_New(0);
    if (fresh == NULL) {
        return -1;
    }
    waiter = pending_waiter(self);
    events = engine->events;
    if (waiter == NULL || !only_messages(events) || PyList_GET_SIZE(events) != 1) {
        Py_DECREF(fresh);
        Py_XDECREF(waiter);
        return call_noargs(self, str_process_events);
    }
    engine->events = fresh;
    Py_SETREF(self->recv_waiter, Py_NewRef(Py_None));
    count(self->counts + TEXT_IN, PyList_GET_ITEM(events, 0), 1);
    self->handling = 1;
    result = PyObject_CallMethodOneArg(waiter, str_set_result, PyList_GET_ITEM(events, 0));
    self->handling = 0;
    Py_DECREF(events);
    Py_DECREF(waiter);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return handled(self, engine);
}

static PyObject *
ConnectionCore_data_received(ConnectionCore *self, PyObject *data)
{
    ProtocolCore *engine = open_engine(self);
    PyObject *result = NULL;
    int status;

    if (PyBytes_Check(data)) {
        self->counts[WIRE_IN] += (unsigned long long)PyBytes_GET_SIZE(data);
    }
    if (engine == NULL) {
        return PyObject_CallMethodOneArg((PyObject *)self, str_data_received_more, data);
    }
    result = ProtocolCore_receive_data(engine, data);
    if (result == NULL) {
        goto done;
    }
    Py_DECREF(result);
    result = NULL;
    if (self->on_message != NULL && self->on_message != Py_None && !self->handling) {
        PyObject *on_message = Py_NewRef(self->on_message);

        status = dispatch(self, engine, on_message);
        Py_DECREF(on_message);
    }
    else {
        status = self->handling ? call_noargs(self, str_process_events) : hand_over(self, engine);
    }
    if (status < 0) {
        goto done;
    }
    if (engine->frame_left >= DIRECT_READ_MIN &&
        call_noargs(self, str_read_payload_directly) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(engine);
    return result;
}

static PyObject *
ConnectionCore_send_nowait(ConnectionCore *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames)
{
    ProtocolCore *engine = open_engine(self);
    PyObject *result;

    if (engine == NULL) {
        result = call_python_method((PyObject *)self, str_send_nowait_more, args, nargsf, kwnames);
    }
    else {
        result = ProtocolCore_send_message(engine, args, nargsf, kwnames);
    }
    if (result != NULL && PyVectorcall_NARGS(nargsf) >= 1) {
        /* Counted once framed, before it is written: the count is of what
         * the application sent, whatever the write does. */
        count(self->counts + TEXT_OUT, args[0], 1);
    }
    if (engine != NULL) {
        if (result != NULL && !self->handling && write_pending(self, engine) < 0) {
            Py_CLEAR(result);
        }
        Py_DECREF(engine);
    }
    return result;
}

static PyMethodDef ConnectionCore_methods[] = {
    {"data_received", (PyCFunction)ConnectionCore_data_received, METH_O,
     "data_received(data) -> None\n\nFeed received bytes to the engine (called by asyncio)."},
    {"send_nowait", (PyCFunction)(void (*)(void))ConnectionCore_send_nowait,
     METH_FASTCALL | METH_KEYWORDS,
     "send_nowait(message, *, compress=True) -> None\n\n"
     "Send a message at once, without waiting for the write buffer to drain.\n\n"
     "For callbacks and broadcasts, where awaiting is not possible or not\n"
     "wanted; the write buffer then grows past its high-water mark, and\n"
     "reading from the peer pauses until it drains.\n\n"
     "Raises:\n"
     "    ConnectionClosed: when the connection is closing or closed.\n"
     "    InvalidState: while a fragmented message is being sent.\n"
     "    TypeError: for a message that is neither str nor bytes-like."},
    {"_count_received", (PyCFunction)(void (*)(void))ConnectionCore_count_received, METH_FASTCALL,
     NULL},
    {"_count_sent", (PyCFunction)(void (*)(void))ConnectionCore_count_sent, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ConnectionCore_members[] = {
    {"protocol", T_OBJECT_EX, offsetof(ConnectionCore, protocol), 0,
     "The sans-I/O engine of this connection."},
    {"transport", T_OBJECT_EX, offsetof(ConnectionCore, transport), 0,
     "The asyncio transport, once connected."},
    {"_on_message", T_OBJECT_EX, offsetof(ConnectionCore, on_message), 0, NULL},
    {"_handling", T_BOOL, offsetof(ConnectionCore, handling), 0, NULL},
    {"_recv_waiter", T_OBJECT, offsetof(ConnectionCore, recv_waiter), 0, NULL},
#define COUNT_MEMBER(name, index) \
    {name, T_ULONGLONG, offsetof(ConnectionCore, counts) + (index) * sizeof(unsigned long long), \
     0, NULL}
    COUNT_MEMBER("_text_in", TEXT_IN),
    COUNT_MEMBER("_text_in_bytes", TEXT_IN_BYTES),
    COUNT_MEMBER("_binary_in", BINARY_IN),
    COUNT_MEMBER("_binary_in_bytes", BINARY_IN_BYTES),
    COUNT_MEMBER("_text_out", TEXT_OUT),
    COUNT_MEMBER("_text_out_bytes", TEXT_OUT_BYTES),
    COUNT_MEMBER("_binary_out", BINARY_OUT),
    COUNT_MEMBER("_binary_out_bytes", BINARY_OUT_BYTES),
    COUNT_MEMBER("_wire_in", WIRE_IN),
    COUNT_MEMBER("_wire_out", WIRE_OUT),
#undef COUNT_MEMBER
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject ConnectionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rapidws.speedups._c.ConnectionCore",
    .tp_doc = "The per-message part of a connection; subclassed by rapidws.asyncio's Connection.",
    .tp_basicsize = sizeof(ConnectionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)ConnectionCore_traverse,
    .tp_clear = (inquiry)ConnectionCore_clear,
    .tp_dealloc = (destructor)ConnectionCore_dealloc,
    .tp_methods = ConnectionCore_methods,
    .tp_members = ConnectionCore_members,
};
