/* The C twin of rapidws/speedups/pure.py: the same functions, the same results.
 *
 * apply_mask          XOR with the masking key, eight bytes at a time.
 * parse_frame_header  read a frame header at an offset; None when incomplete.
 * read_messages       the receive loop for messages that fit one frame.
 * encode_frame        a frame's header and (masked) payload in one object.
 * append_unmasked     unmask a piece of payload onto a message's buffer.
 * MessageBuffer       a binary message of known size, unmasked into place.
 * Utf8Validator       incremental UTF-8 validation (RFC 3629) without
 *                     decoding, with an ASCII fast path.
 */

#include "_core.h"
#include "structmember.h"
#include <stdint.h>
#include <string.h>

/* XOR with an 8-byte key pattern, 32 bytes at a time: GCC and clang vector
 * types, compiled twice on x86-64 (AVX2, and the SSE2 baseline) and chosen
 * at import by what the CPU supports. Returns how many bytes were done (a
 * multiple of 32, so the pattern still lines up for the rest). */

#if defined(__GNUC__) || defined(__clang__)
typedef unsigned char block32 __attribute__((vector_size(32)));

#define DEFINE_MASK_BLOCKS(name, attributes)                                        \
    static attributes Py_ssize_t name(unsigned char *out, const unsigned char *in,  \
                                      Py_ssize_t n, const unsigned char *pattern8)  \
    {                                                                                \
        unsigned char pattern[32];                                                   \
        block32 key, a, b;                                                           \
        Py_ssize_t i = 0;                                                            \
        for (int k = 0; k < 32; k++) {                                               \
            pattern[k] = pattern8[k & 7];                                            \
        }                                                                            \
        memcpy(&key, pattern, 32);                                                   \
        for (; i + 64 <= n; i += 64) {                                               \
            memcpy(&a, in + i, 32);                                                  \
            memcpy(&b, in + i + 32, 32);                                             \
            a ^= key;                                                                \
            b ^= key;                                                                \
            memcpy(out + i, &a, 32);                                                 \
            memcpy(out + i + 32, &b, 32);                                            \
        }                                                                            \
        for (; i + 32 <= n; i += 32) {                                               \
            memcpy(&a, in + i, 32);                                                  \
            a ^= key;                                                                \
            memcpy(out + i, &a, 32);                                                 \
        }                                                                            \
        return i;                                                                    \
    }

DEFINE_MASK_BLOCKS(mask_blocks_baseline, )
#if defined(__x86_64__)
DEFINE_MASK_BLOCKS(mask_blocks_avx2, __attribute__((target("avx2"))))
#endif

static Py_ssize_t (*mask_blocks)(unsigned char *, const unsigned char *, Py_ssize_t,
                                 const unsigned char *) = mask_blocks_baseline;

static void
choose_mask_blocks(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        mask_blocks = mask_blocks_avx2;
    }
#endif
}
#else
static void
choose_mask_blocks(void)
{
}
#endif

/* out[i] = in[i] ^ key[(offset + i) % 4]; out may be in. */

static void
mask_copy(unsigned char *out, const unsigned char *in, Py_ssize_t n,
          const unsigned char *key, Py_ssize_t offset)
{
    unsigned char rotated[8];
    uint64_t word_mask, word;
    Py_ssize_t i = 0;

    /* The key as it lines up with in[0], twice: one 64-bit word. */
    for (int k = 0; k < 8; k++) {
        rotated[k] = key[(offset + k) & 3];
    }
#if defined(__GNUC__) || defined(__clang__)
    if (n >= 128) {
        i = mask_blocks(out, in, n, rotated);
    }
#endif
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

/* An offset argument: an int >= 0. Returns -1 with an exception set if not. */

static int
as_offset(PyObject *obj, const char *name, Py_ssize_t *out)
{
    Py_ssize_t value = PyLong_AsSsize_t(obj);

    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    *out = value;
    return 0;
}

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
    if (nargs == 3 && as_offset(args[2], "offset", &offset) < 0) {
        return NULL;
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
    mask_copy((unsigned char *)PyBytes_AS_STRING(result), (const unsigned char *)data.buf,
              data.len, (const unsigned char *)mask.buf, offset);
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
    if (as_offset(args[1], "pos", &pos) < 0) {
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

/* read_messages(buf, pos, masked, limit, events) -> int
 *
 * The receive loop's common case: from buf[pos] on, every frame that is a
 * whole message by itself (FIN set, RSV clear, text or binary, the expected
 * MASK bit, at most limit bytes, all its payload in buf, valid UTF-8 when
 * text) is unmasked into a str or bytes appended to events. Returns the offset
 * of the first frame that is not so; the general parser takes it from there. */

#define SCRATCH_SIZE 512

static PyObject *
read_message(const unsigned char *payload, Py_ssize_t n, const unsigned char *key, int text)
{
    PyObject *result;
    unsigned char scratch[SCRATCH_SIZE], *plain;

    if (!text) {
        if (key == NULL) {
            return PyBytes_FromStringAndSize((const char *)payload, n);
        }
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result != NULL) {
            mask_copy((unsigned char *)PyBytes_AS_STRING(result), payload, n, key, 0);
        }
        return result;
    }
    if (key == NULL) {
        return PyUnicode_DecodeUTF8((const char *)payload, n, NULL);
    }
    plain = n <= SCRATCH_SIZE ? scratch : PyMem_Malloc(n);
    if (plain == NULL) {
        return PyErr_NoMemory();
    }
    mask_copy(plain, payload, n, key, 0);
    result = PyUnicode_DecodeUTF8((const char *)plain, n, NULL);
    if (plain != scratch) {
        PyMem_Free(plain);
    }
    return result;
}

/* The loop of read_messages(): append the single-frame messages of
 * p[pos:size] to events; return where it stopped, or -1 with an exception. */

static Py_ssize_t
read_loop(const unsigned char *p, Py_ssize_t size, Py_ssize_t pos, int masked,
          unsigned long long limit, PyObject *events)
{
    while (size - pos >= 2) {
        const unsigned char *frame = p + pos;
        Py_ssize_t available = size - pos, header = 2;
        unsigned long long length = frame[1] & 0x7F;
        int opcode = frame[0] & 0x0F;
        PyObject *message;

        if ((frame[0] & 0xF0) != 0x80 || (opcode != 1 && opcode != 2) ||
            ((frame[1] & 0x80) != 0) != masked) {
            break;
        }
        if (length == 126) {
            if (available < 4) {
                break;
            }
            length = ((unsigned long long)frame[2] << 8) | frame[3];
            header = 4;
        }
        else if (length == 127) {
            if (available < 10) {
                break;
            }
            length = 0;
            for (int k = 2; k < 10; k++) {
                length = (length << 8) | frame[k];
            }
            header = 10;
        }
        if (masked) {
            header += 4;
        }
        if (length > limit || available < header ||
            length > (unsigned long long)(available - header)) {
            break;
        }
        message = read_message(frame + header, (Py_ssize_t)length,
                               masked ? frame + header - 4 : NULL, opcode == 1);
        if (message == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                /* The general parser fails the connection with 1007. */
                PyErr_Clear();
                break;
            }
            return -1;
        }
        if (PyList_Append(events, message) < 0) {
            Py_DECREF(message);
            return -1;
        }
        Py_DECREF(message);
        pos += header + (Py_ssize_t)length;
    }
    return pos;
}

/* read_messages(buf, pos, masked, limit, events) -> int */

static PyObject *
read_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    Py_ssize_t pos;
    unsigned long long limit;
    int masked;
    PyObject *events, *result = NULL;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read_messages() takes 5 arguments");
        return NULL;
    }
    if (as_offset(args[1], "pos", &pos) < 0) {
        return NULL;
    }
    masked = PyObject_IsTrue(args[2]);
    if (masked < 0) {
        return NULL;
    }
    {
        long long signed_limit = PyLong_AsLongLong(args[3]);

        if (signed_limit == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();
        }
        if (signed_limit < 0) {
            PyErr_SetString(PyExc_ValueError, "limit must be in range(2**63)");
            return NULL;
        }
        limit = (unsigned long long)signed_limit;
    }
    events = args[4];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    pos = read_loop((const unsigned char *)buf.buf, buf.len, pos, masked, limit, events);
    if (pos >= 0) {
        result = PyLong_FromSsize_t(pos);
    }
    PyBuffer_Release(&buf);
    return result;
}

/* encode_frame(first, payload, mask=None) -> bytes: header and (masked) payload.
 * A str payload is encoded to UTF-8 on the way. */

static PyObject *
encode_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload, mask = {0};
    long first;
    PyObject *result = NULL, *source, *encoded = NULL;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "encode_frame() takes 2 or 3 arguments");
        return NULL;
    }
    first = PyLong_AsLong(args[0]);
    if (first == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (first < 0 || first > 255) {
        PyErr_SetString(PyExc_ValueError, "first must be in range(256)");
        return NULL;
    }
    source = args[1];
    if (PyUnicode_Check(source) && PyUnicode_IS_COMPACT_ASCII(source)) {
        /* ASCII text is its own UTF-8: framed straight from the string. */
        PyBuffer_FillInfo(&payload, NULL, PyUnicode_DATA(source),
                          PyUnicode_GET_LENGTH(source), 1, PyBUF_SIMPLE);
    }
    else {
        if (PyUnicode_Check(source)) {
            encoded = PyUnicode_AsUTF8String(source);  /* strict, as str.encode() */
            if (encoded == NULL) {
                return NULL;
            }
            source = encoded;
        }
        if (PyObject_GetBuffer(source, &payload, PyBUF_SIMPLE) < 0) {
            Py_XDECREF(encoded);
            return NULL;
        }
    }
    if (nargs == 3 && args[2] != Py_None) {
        if (PyObject_GetBuffer(args[2], &mask, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&payload);
            Py_XDECREF(encoded);
            return NULL;
        }
        if (mask.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
            goto done;
        }
    }
    {
        Py_ssize_t n = payload.len, header;
        unsigned char mask_bit = mask.buf != NULL ? 0x80 : 0, *out;

        header = (n < 126 ? 2 : n < 65536 ? 4 : 10) + (mask.buf != NULL ? 4 : 0);
        result = PyBytes_FromStringAndSize(NULL, header + n);
        if (result == NULL) {
            goto done;
        }
        out = (unsigned char *)PyBytes_AS_STRING(result);
        out[0] = (unsigned char)first;
        if (n < 126) {
            out[1] = mask_bit | (unsigned char)n;
        }
        else if (n < 65536) {
            out[1] = mask_bit | 126;
            out[2] = (unsigned char)(n >> 8);
            out[3] = (unsigned char)n;
        }
        else {
            out[1] = mask_bit | 127;
            for (int k = 0; k < 8; k++) {
                out[2 + k] = (unsigned char)((unsigned long long)n >> (56 - 8 * k));
            }
        }
        if (mask.buf != NULL) {
            memcpy(out + header - 4, mask.buf, 4);
            mask_copy(out + header, (const unsigned char *)payload.buf, n,
                      (const unsigned char *)mask.buf, 0);
        }
        else {
            memcpy(out + header, payload.buf, n);
        }
    }
done:
    if (mask.buf != NULL) {
        PyBuffer_Release(&mask);
    }
    PyBuffer_Release(&payload);
    Py_XDECREF(encoded);
    return result;
}

/* A piece of payload to unmask: the arguments (src, start, end, mask, offset)
 * of append_unmasked() and MessageBuffer.append(), checked. */

typedef struct {
    Py_buffer src, mask;  /* mask.buf is NULL for an unmasked frame */
    Py_ssize_t start, end, offset;
} Piece;

static void
piece_release(Piece *piece)
{
    if (piece->mask.buf != NULL) {
        PyBuffer_Release(&piece->mask);
    }
    PyBuffer_Release(&piece->src);
}

/* Returns -1 with an exception set, holding nothing, or 0. */
static int
piece_get(Piece *piece, PyObject *const *args)
{
    piece->mask.buf = NULL;
    if (as_offset(args[1], "start", &piece->start) < 0 ||
        as_offset(args[2], "end", &piece->end) < 0 ||
        as_offset(args[4], "offset", &piece->offset) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(args[0], &piece->src, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (args[3] != Py_None) {
        if (PyObject_GetBuffer(args[3], &piece->mask, PyBUF_SIMPLE) < 0) {
            piece->mask.buf = NULL;
            goto fail;
        }
        if (piece->mask.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
            goto fail;
        }
    }
    if (piece->end > piece->src.len || piece->start > piece->end) {
        PyErr_SetString(PyExc_ValueError, "need start <= end <= len(src)");
        goto fail;
    }
    return 0;
fail:
    piece_release(piece);
    return -1;
}

static void
piece_copy(const Piece *piece, unsigned char *out)
{
    const unsigned char *in = (const unsigned char *)piece->src.buf + piece->start;

    if (piece->mask.buf != NULL) {
        mask_copy(out, in, piece->end - piece->start, (const unsigned char *)piece->mask.buf,
                  piece->offset);
    }
    else {
        memcpy(out, in, piece->end - piece->start);
    }
}

/* append_unmasked(dst, src, start, end, mask, offset) -> None
 *
 * dst += src[start:end] XOR mask (from offset on), in one copy: the payload of
 * a message that arrives in pieces goes straight from the receive buffer into
 * the message's buffer. */

static PyObject *
append_unmasked(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Piece piece;
    Py_ssize_t size;
    PyObject *dst;

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "append_unmasked() takes 6 arguments");
        return NULL;
    }
    dst = args[0];
    if (!PyByteArray_Check(dst)) {
        PyErr_SetString(PyExc_TypeError, "dst must be a bytearray");
        return NULL;
    }
    if (piece_get(&piece, args + 1) < 0) {
        return NULL;
    }
    size = PyByteArray_GET_SIZE(dst);
    if (PyByteArray_Resize(dst, size + (piece.end - piece.start)) < 0) {
        piece_release(&piece);
        return NULL;
    }
    piece_copy(&piece, (unsigned char *)PyByteArray_AS_STRING(dst) + size);
    piece_release(&piece);
    Py_RETURN_NONE;
}

/* MessageBuffer(size): a binary message of known size, filled in pieces.
 *
 * append(src, start, end, mask, offset) unmasks a piece into place;
 * finish() returns the message. The C twin fills a bytes object that nobody
 * else can see until it is complete, so finish() hands it over without the
 * copy that bytes(bytearray) would cost. */

typedef struct {
    PyObject_HEAD
    PyObject *data;      /* the bytes being filled, kept until dealloc: a view may point in */
    Py_ssize_t filled;
    Py_ssize_t window;   /* the bytes after `filled` that reserve() opened for writing */
    char finished;
} MessageBuffer;

static PyObject *
MessageBuffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size;
    MessageBuffer *self;

    if (!PyArg_ParseTuple(args, "n:MessageBuffer", &size)) {
        return NULL;
    }
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "MessageBuffer() takes no keyword arguments");
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    self = (MessageBuffer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* Uninitialised: pages that the payload has not reached yet stay untouched. */
    self->data = PyBytes_FromStringAndSize(NULL, size);
    if (self->data == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
MessageBuffer_dealloc(MessageBuffer *self)
{
    Py_XDECREF(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
MessageBuffer_check_open(MessageBuffer *self)
{
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "the message was finished already");
        return -1;
    }
    return 0;
}

static PyObject *
MessageBuffer_append(MessageBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    Piece piece;
    PyObject *result = NULL;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "append() takes 5 arguments");
        return NULL;
    }
    if (MessageBuffer_check_open(self) < 0 || piece_get(&piece, args) < 0) {
        return NULL;
    }
    if (piece.end - piece.start > PyBytes_GET_SIZE(self->data) - self->filled) {
        PyErr_SetString(PyExc_ValueError, "more bytes than the message's size");
    }
    else {
        piece_copy(&piece, (unsigned char *)PyBytes_AS_STRING(self->data) + self->filled);
        self->filled += piece.end - piece.start;
        self->window = 0;
        result = Py_NewRef(Py_None);
    }
    piece_release(&piece);
    return result;
}

static PyObject *
MessageBuffer_finish(MessageBuffer *self, PyObject *Py_UNUSED(ignored))
{
    if (MessageBuffer_check_open(self) < 0) {
        return NULL;
    }
    if (self->filled != PyBytes_GET_SIZE(self->data)) {
        PyErr_SetString(PyExc_ValueError, "the message is not complete");
        return NULL;
    }
    /* Handed over without a copy. A view that reserve() returned may still
     * exist (a transport drops it after buffer_updated()), but nothing
     * writes through it any more: commit() and reserve() refuse from now on. */
    self->finished = 1;
    self->window = 0;
    return Py_NewRef(self->data);
}

/* reserve(n) -> memoryview: a writable view of the next n bytes, for a
 * socket to read masked payload straight into the message (recv_into). */

static PyObject *
MessageBuffer_reserve(MessageBuffer *self, PyObject *arg)
{
    Py_ssize_t n;

    if (MessageBuffer_check_open(self) < 0 || as_offset(arg, "n", &n) < 0) {
        return NULL;
    }
    if (n == 0 || n > PyBytes_GET_SIZE(self->data) - self->filled) {
        PyErr_SetString(PyExc_ValueError, "need 0 < n <= the bytes still missing");
        return NULL;
    }
    self->window = n;
    return PyMemoryView_FromObject((PyObject *)self);
}

/* commit(nbytes, mask, offset) -> None: the first nbytes of the reserved
 * view are in; unmask them in place. */

static PyObject *
MessageBuffer_commit(MessageBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t nbytes, offset;
    Py_buffer mask;
    unsigned char *start;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "commit() takes 3 arguments");
        return NULL;
    }
    if (MessageBuffer_check_open(self) < 0 || as_offset(args[0], "nbytes", &nbytes) < 0 ||
        as_offset(args[2], "offset", &offset) < 0) {
        return NULL;
    }
    if (nbytes > self->window) {
        PyErr_SetString(PyExc_ValueError, "more bytes than reserve() opened");
        return NULL;
    }
    start = (unsigned char *)PyBytes_AS_STRING(self->data) + self->filled;
    if (args[1] != Py_None) {
        if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        if (mask.len != 4) {
            PyBuffer_Release(&mask);
            PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
            return NULL;
        }
        mask_copy(start, start, nbytes, (const unsigned char *)mask.buf, offset);
        PyBuffer_Release(&mask);
    }
    self->filled += nbytes;
    self->window = 0;
    Py_RETURN_NONE;
}

/* The buffer protocol, for the view reserve() returns: the open window,
 * writable. The view holds this object, which holds the bytes. */

static int
MessageBuffer_getbuffer(MessageBuffer *self, Py_buffer *view, int flags)
{
    if (self->finished) {
        PyErr_SetString(PyExc_BufferError, "the message was finished already");
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->data) + self->filled,
                             self->window, 0, flags);
}

static PyBufferProcs MessageBuffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)MessageBuffer_getbuffer,
};

static PyObject *
MessageBuffer_get_filled(MessageBuffer *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->filled);
}

static PyMethodDef MessageBuffer_methods[] = {
    {"append", (PyCFunction)(void (*)(void))MessageBuffer_append, METH_FASTCALL,
     "append(src, start, end, mask, offset) -> None\n\n"
     "Unmask src[start:end] into place (mask None: copy it as it is)."},
    {"finish", (PyCFunction)MessageBuffer_finish, METH_NOARGS,
     "finish() -> bytes\n\nThe whole message, once every byte is in."},
    {"reserve", (PyCFunction)MessageBuffer_reserve, METH_O,
     "reserve(n) -> memoryview\n\nA writable view of the next n bytes, to read payload into."},
    {"commit", (PyCFunction)(void (*)(void))MessageBuffer_commit, METH_FASTCALL,
     "commit(nbytes, mask, offset) -> None\n\n"
     "The view's first nbytes are in: unmask them in place (mask None: as they are)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef MessageBuffer_getset[] = {
    {"filled", (getter)MessageBuffer_get_filled, NULL, "How many bytes are in.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MessageBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rapidws.speedups._c.MessageBuffer",
    .tp_doc = "A binary message of known size, filled in pieces.",
    .tp_basicsize = sizeof(MessageBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = MessageBuffer_new,
    .tp_dealloc = (destructor)MessageBuffer_dealloc,
    .tp_methods = MessageBuffer_methods,
    .tp_getset = MessageBuffer_getset,
    .tp_as_buffer = &MessageBuffer_as_buffer,
};

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

/* ProtocolCore: the fields and methods of the protocol engine that every
 * message goes through; rapidws.core.protocol.Protocol subclasses it, and
 * what is not the common case goes on in its Python methods. */

PyObject *open_state = NULL;
static PyObject *str_receive_more = NULL, *str_send_message_more = NULL, *str_close_frame = NULL;

static int
ProtocolCore_traverse(ProtocolCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->state);
    Py_VISIT(self->buf);
    Py_VISIT(self->events);
    Py_VISIT(self->out);
    return 0;
}

static int
ProtocolCore_clear(ProtocolCore *self)
{
    Py_CLEAR(self->state);
    Py_CLEAR(self->buf);
    Py_CLEAR(self->events);
    Py_CLEAR(self->out);
    return 0;
}

static void
ProtocolCore_dealloc(ProtocolCore *self)
{
    PyObject_GC_UnTrack(self);
    ProtocolCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A valid close frame at p[0:n] (RFC 6455 section 5.5.1): whole, FIN set,
 * RSV clear, masked when masked, a code that may be sent (as
 * rapidws.core.frames.is_valid_close_code has it) and a UTF-8 reason.
 * Returns 1 with the code, the reason and the unmasked payload set (new
 * references), 0 when it is not one (the general parser judges it), -1 with
 * an exception set. */

static int
read_close(const unsigned char *p, Py_ssize_t n, int masked, int *code, PyObject **reason,
           PyObject **payload)
{
    Py_ssize_t header = masked ? 6 : 2, length;
    unsigned char plain[125];

    if (n < 2 || p[0] != 0x88 || ((p[1] & 0x80) != 0) != masked || (p[1] & 0x7F) > 125) {
        return 0;
    }
    length = p[1] & 0x7F;
    if (n < header + length || length == 1) {
        return 0;
    }
    if (masked) {
        mask_copy(plain, p + header, length, p + 2, 0);
    }
    else {
        memcpy(plain, p + header, (size_t)length);
    }
    *code = length ? plain[0] << 8 | plain[1] : 1005;
    if (length && !((*code >= 1000 && *code <= 1003) || (*code >= 1007 && *code <= 1014) ||
                    (*code >= 3000 && *code <= 4999))) {
        return 0;
    }
    *reason = PyUnicode_DecodeUTF8(length ? (const char *)plain + 2 : "",
                                   length ? length - 2 : 0, NULL);
    if (*reason == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear(); /* the general parser fails the connection with 1007 */
            return 0;
        }
        return -1;
    }
    *payload = PyBytes_FromStringAndSize((const char *)plain, length);
    if (*payload == NULL) {
        Py_CLEAR(*reason);
        return -1;
    }
    return 1;
}

/* Hand a valid close frame at p[0:n] to self._close_frame(code, reason,
 * payload) and return what it returns; NotImplemented when it is not one. */

static PyObject *
take_close(ProtocolCore *self, const unsigned char *p, Py_ssize_t n)
{
    int code;
    PyObject *reason = NULL, *payload = NULL, *args[4], *result;
    int found = read_close(p, n, self->masked, &code, &reason, &payload);

    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_NotImplemented);
    }
    args[0] = (PyObject *)self;
    args[1] = PyLong_FromLong(code);
    args[2] = reason;
    args[3] = payload;
    result = args[1] == NULL ? NULL
                             : PyObject_VectorcallMethod(str_close_frame, args,
                                                         4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                         NULL);
    Py_XDECREF(args[1]);
    Py_DECREF(reason);
    Py_DECREF(payload);
    return result;
}

/* receive_data(data): the single-frame messages at once, the rest in Python. */

PyObject *
ProtocolCore_receive_data(ProtocolCore *self, PyObject *data)
{
    Py_ssize_t pos = 0;
    PyObject *args[3], *result;

    if (self->state != NULL && self->state == open_state && self->buf != NULL &&
        PyByteArray_CheckExact(self->buf) && PyByteArray_GET_SIZE(self->buf) == 0 &&
        !self->parsing_paused && self->frame_left == 0 && self->msg_opcode == 0 &&
        self->read_limit >= 0 && self->events != NULL && PyList_CheckExact(self->events) &&
        PyBytes_CheckExact(data)) {
        Py_ssize_t size = PyBytes_GET_SIZE(data);
        /* Held: allocating a message may run a finalizer that swaps the list. */
        PyObject *events = Py_NewRef(self->events);

        pos = read_loop((const unsigned char *)PyBytes_AS_STRING(data), size, 0, self->masked,
                        (unsigned long long)self->read_limit, events);
        /* Compared while held: a freed list's address could come back. */
        int none_waiting = PyList_GET_SIZE(events) == 0 && events == self->events;
        Py_DECREF(events);
        if (pos < 0) {
            return NULL;
        }
        if (pos == size) {
            Py_RETURN_NONE;
        }
        if (none_waiting) {
            /* The peer's close frame, with no message before it to answer
             * first: the common end of a connection, without the general
             * parser. */
            result = take_close(self, (const unsigned char *)PyBytes_AS_STRING(data) + pos,
                                size - pos);
            if (result != Py_NotImplemented) {
                return result;
            }
            Py_DECREF(result);
        }
    }
    args[0] = (PyObject *)self;
    args[1] = data;
    args[2] = PyLong_FromSsize_t(pos);
    if (args[2] == NULL) {
        return NULL;
    }
    result = PyObject_VectorcallMethod(str_receive_more, args,
                                       3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(args[2]);
    return result;
}

PyObject *
swap_list(PyObject **field)
{
    /* Allocated first: a collection it starts may run a finalizer that
     * replaces the field, which is read only afterwards. */
    PyObject *fresh = PyList_New(0), *old;

    if (fresh == NULL) {
        return NULL;
    }
    old = *field;
    if (old == NULL) {
        Py_DECREF(fresh);
        PyErr_SetString(PyExc_AttributeError, "the engine is not initialized");
        return NULL;
    }
    *field = fresh;
    return old;
}

static PyObject *
ProtocolCore_events_received(ProtocolCore *self, PyObject *Py_UNUSED(ignored))
{
    return swap_list(&self->events);
}

static PyObject *
ProtocolCore_data_to_send(ProtocolCore *self, PyObject *Py_UNUSED(ignored))
{
    return swap_list(&self->out);
}

/* send_message(data, *, compress=True): a server's small whole message at
 * once; anything else in Python, arguments as given. */

PyObject *
ProtocolCore_send_message(ProtocolCore *self, PyObject *const *args, size_t nargsf,
                          PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);

    if (nargs == 1 && self->send_direct && self->state != NULL && self->state == open_state &&
        self->out != NULL && PyList_CheckExact(self->out) &&
        (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0 ||
         (PyTuple_GET_SIZE(kwnames) == 1 &&
          PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "compress") == 0))) {
        /* compress changes nothing here: there is no extension to skip. */
        PyObject *data = args[0], *frame_args[2], *frame;
        int first = 0;

        if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) <= JOIN_LIMIT) {
            first = 0x82;
        }
        else if (PyUnicode_CheckExact(data) && PyUnicode_GET_LENGTH(data) <= JOIN_LIMIT) {
            first = 0x81;
        }
        if (first) {
            frame_args[0] = PyLong_FromLong(first);
            if (frame_args[0] == NULL) {
                return NULL;
            }
            frame_args[1] = data;
            frame = encode_frame(NULL, frame_args, 2);
            Py_DECREF(frame_args[0]);
            if (frame == NULL) {
                return NULL;
            }
            /* Read after the allocation, which may run a finalizer that swaps it. */
            {
                PyObject *out = self->out;
                int failed;

                if (out == NULL || !PyList_Check(out)) {
                    Py_DECREF(frame);
                    PyErr_SetString(PyExc_AttributeError, "the engine's output is gone");
                    return NULL;
                }
                Py_INCREF(out);
                failed = PyList_Append(out, frame) < 0;
                Py_DECREF(out);
                Py_DECREF(frame);
                if (failed) {
                    return NULL;
                }
            }
            Py_RETURN_NONE;
        }
    }
    return call_python_method((PyObject *)self, str_send_message_more, args, nargsf, kwnames);
}

PyObject *
call_python_method(PyObject *self, PyObject *name, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    /* self in front of the arguments. */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8], **call = small, *result;

    if (total + 1 > 8) {
        call = PyMem_Malloc((total + 1) * sizeof(PyObject *));
        if (call == NULL) {
            return PyErr_NoMemory();
        }
    }
    call[0] = self;
    if (total > 0) {
        memcpy(call + 1, args, total * sizeof(PyObject *));
    }
    result = PyObject_VectorcallMethod(name, call, nargs + 1, kwnames);
    if (call != small) {
        PyMem_Free(call);
    }
    return result;
}

static PyMethodDef ProtocolCore_methods[] = {
    {"receive_data", (PyCFunction)ProtocolCore_receive_data, METH_O,
     "receive_data(data) -> None\n\nFeed bytes received from the network."},
    {"events_received", (PyCFunction)ProtocolCore_events_received, METH_NOARGS,
     "events_received() -> list\n\nReturn the events produced since the last call, oldest first."},
    {"data_to_send", (PyCFunction)ProtocolCore_data_to_send, METH_NOARGS,
     "data_to_send() -> list\n\n"
     "Return the bytes to write since the last call; b\"\" means half-close."},
    {"send_message", (PyCFunction)(void (*)(void))ProtocolCore_send_message,
     METH_FASTCALL | METH_KEYWORDS,
     "send_message(data, *, compress=True) -> None\n\n"
     "Send a whole message: str as text, bytes-like as binary."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ProtocolCore_members[] = {
    {"state", T_OBJECT_EX, offsetof(ProtocolCore, state), 0,
     "The state of the connection: CONNECTING, OPEN, CLOSING or CLOSED."},
    {"_buf", T_OBJECT_EX, offsetof(ProtocolCore, buf), 0, NULL},
    {"_events", T_OBJECT_EX, offsetof(ProtocolCore, events), 0, NULL},
    {"_out", T_OBJECT_EX, offsetof(ProtocolCore, out), 0, NULL},
    {"_frame_left", T_LONGLONG, offsetof(ProtocolCore, frame_left), 0, NULL},
    {"payload_left", T_LONGLONG, offsetof(ProtocolCore, frame_left), READONLY,
     "How many bytes of the current data frame's payload are still to come."},
    {"_read_limit", T_LONGLONG, offsetof(ProtocolCore, read_limit), 0, NULL},
    {"_msg_opcode", T_INT, offsetof(ProtocolCore, msg_opcode), 0, NULL},
    {"_masked", T_BOOL, offsetof(ProtocolCore, masked), 0, NULL},
    {"_send_direct", T_BOOL, offsetof(ProtocolCore, send_direct), 0, NULL},
    {"parsing_paused", T_BOOL, offsetof(ProtocolCore, parsing_paused), 0,
     "Whether parsing stopped before a protocol error or the peer's close frame."},
    {"eof_sent", T_BOOL, offsetof(ProtocolCore, eof_sent), 0,
     "Whether the engine asked for the TCP connection to be half-closed."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject ProtocolCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rapidws.speedups._c.ProtocolCore",
    .tp_doc = "The engine's per-message fields and methods; subclassed by Protocol.",
    .tp_basicsize = sizeof(ProtocolCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)ProtocolCore_traverse,
    .tp_clear = (inquiry)ProtocolCore_clear,
    .tp_dealloc = (destructor)ProtocolCore_dealloc,
    .tp_methods = ProtocolCore_methods,
    .tp_members = ProtocolCore_members,
};

/* set_open_state(state): the object that stands for OPEN. */

static PyObject *
set_open_state(PyObject *module, PyObject *state)
{
    Py_XSETREF(open_state, Py_NewRef(state));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, offset=0) -> bytes\n\nXOR data with the 4-byte mask."},
    {"parse_frame_header", (PyCFunction)(void (*)(void))parse_frame_header, METH_FASTCALL,
     "parse_frame_header(buf, pos) -> tuple | None\n\nParse the frame header at buf[pos]."},
    {"read_messages", (PyCFunction)(void (*)(void))read_messages, METH_FASTCALL,
     "read_messages(buf, pos, masked, limit, events) -> int\n\n"
     "Append the single-frame messages from buf[pos] on to events; return where it stopped."},
    {"append_unmasked", (PyCFunction)(void (*)(void))append_unmasked, METH_FASTCALL,
     "append_unmasked(dst, src, start, end, mask, offset) -> None\n\n"
     "dst += src[start:end] unmasked with mask (None: as it is) from offset on."},
    {"encode_frame", (PyCFunction)(void (*)(void))encode_frame, METH_FASTCALL,
     "encode_frame(first, payload, mask=None) -> bytes\n\nA frame: header and (masked) payload;\n"
     "a str payload is encoded to UTF-8."},
    {"add_header", (PyCFunction)(void (*)(void))add_header, METH_FASTCALL,
     "add_header(items, index, name, value) -> None\n\n"
     "Append a checked header field to items and (unless None) index."},
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "parse_head($module, data, end, max_line, max_headers, max_header_bytes, /)\n--\n\n"
     "Read the head data[:end] into its start line and fields."},
    {"parse_request_line", (PyCFunction)parse_request_line, METH_O,
     "parse_request_line($module, line, /)\n--\n\nParse a request line."},
    {"accept_key", (PyCFunction)accept_key, METH_O,
     "accept_key($module, key, /)\n--\n\nThe Sec-WebSocket-Accept value that answers key."},
    {"serialize_head", (PyCFunction)(void (*)(void))serialize_head, METH_FASTCALL,
     "serialize_head($module, start_line, items, body, /)\n--\n\n"
     "A head: start line, fields, blank line; then the body."},
    {"set_open_state", (PyCFunction)set_open_state, METH_O,
     "set_open_state(state) -> None\n\nTell ProtocolCore which state object means OPEN."},
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

    PyTypeObject *types[] = {&Utf8ValidatorType, &MessageBufferType, &ProtocolCoreType,
                             &ConnectionCoreType};

    choose_mask_blocks();
    if (connection_core_init() < 0) {
        return NULL;
    }
    str_receive_more = PyUnicode_InternFromString("_receive_more");
    str_send_message_more = PyUnicode_InternFromString("_send_message_more");
    str_close_frame = PyUnicode_InternFromString("_close_frame");
    if (str_receive_more == NULL || str_send_message_more == NULL || str_close_frame == NULL) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    /* Readied and added under the last part of their tp_name. */
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (PyModule_AddType(module, types[i]) < 0) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (http_init(module) < 0 || handshake_init() < 0 ||
        PyModule_AddIntConstant(module, "JOIN_LIMIT", JOIN_LIMIT) < 0 ||
        PyModule_AddIntConstant(module, "DIRECT_READ_MIN", DIRECT_READ_MIN) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    exported = Py_BuildValue("[sssssssssssssssss]", "DIRECT_READ_MIN", "JOIN_LIMIT",
                             "ConnectionCore", "MessageBuffer", "ProtocolCore", "Utf8Validator",
                             "accept_key", "add_header", "append_unmasked", "apply_mask",
                             "encode_frame", "parse_frame_header", "parse_head",
                             "parse_request_line", "read_messages", "serialize_head",
                             "set_open_state");
    if (exported == NULL || PyModule_AddObject(module, "__all__", exported) < 0) {
        Py_XDECREF(exported);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
