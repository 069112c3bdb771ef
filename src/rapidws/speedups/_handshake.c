/* The C twin of rapidws.speedups.pure_handshake: the request line, the
 * accept key and the head serialization. See that module for what they do. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_core.h"

static PyObject *version_1_1; /* (1, 1): one tuple for every request */

static int
is_tchar(unsigned char c)
{
    return c < 128 && TCHAR[c];
}

/* Whether p[:n] starts with (?i)(wss?|https?)://[^/?#]: an absolute-form target. */
static int
is_absolute(const char *p, Py_ssize_t n)
{
    static const char *const schemes[] = {"ws://", "wss://", "http://", "https://"};

    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        Py_ssize_t len = (Py_ssize_t)strlen(schemes[i]), j = 0;
        for (; j < len && j < n; j++) {
            char c = p[j] >= 'A' && p[j] <= 'Z' ? (char)(p[j] + 32) : p[j];
            if (c != schemes[i][j]) {
                break;
            }
        }
        if (j == len && n > len && memchr("/?#", p[len], 3) == NULL) {
            return 1;
        }
    }
    return 0;
}

INTERNAL PyObject *
parse_request_line(PyObject *module, PyObject *line)
{
    (void)module;
    if (!PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "parse_request_line() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(line);
    Py_ssize_t n = PyBytes_GET_SIZE(line);
    const char *sp1 = memchr(p, ' ', (size_t)n);
    const char *sp2 = sp1 == NULL ? NULL : memchr(sp1 + 1, ' ', (size_t)(p + n - sp1 - 1));
    int valid = sp2 != NULL && memchr(sp2 + 1, ' ', (size_t)(p + n - sp2 - 1)) == NULL &&
                sp1 > p && sp2 > sp1 + 1;
    int major = 0, minor = 0;

    if (valid) {
        const char *v = sp2 + 1;
        valid = p + n - v == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' &&
                v[6] == '.' && v[7] >= '0' && v[7] <= '9';
        if (valid) {
            major = v[5] - '0';
            minor = v[7] - '0';
        }
        for (const char *c = p; valid && c < sp1; c++) {
            valid = is_tchar((unsigned char)*c);
        }
    }
    if (!valid) {
        PyObject *shown = PyBytes_FromStringAndSize(p, n < 100 ? n : 100);
        if (shown == NULL) {
            return NULL;
        }
        http_error(InvalidRequest, PyUnicode_FromFormat("invalid request line: %R", shown), 0);
        Py_DECREF(shown);
        return NULL;
    }
    if (major != 1) {
        return http_error(InvalidRequest,
                          PyUnicode_FromFormat("HTTP/%d.%d is not supported", major, minor), 505);
    }
    const char *target = sp1 + 1;
    Py_ssize_t target_len = sp2 - target;
    for (Py_ssize_t i = 0; i < target_len; i++) {
        /* Printable ASCII: the space cannot be there, it split the line. */
        if (target[i] < 0x20 || target[i] > 0x7e) {
            return http_error(InvalidRequest, PyUnicode_FromString("invalid request target"), 0);
        }
    }
    PyObject *method = NULL, *path = NULL, *version = NULL;
    /* Origin-form ("/chat?x=1"), or absolute-form with a web scheme (RFC
     * 7230 5.3); anything else ("*", "x") has no WebSocket meaning. */
    if (target[0] != '/' && !is_absolute(target, target_len)) {
        PyObject *shown =
            PyUnicode_DecodeASCII(target, target_len < 100 ? target_len : 100, NULL);
        if (shown != NULL) {
            http_error(InvalidRequest, PyUnicode_FromFormat("invalid request target %R", shown), 0);
            Py_DECREF(shown);
        }
        return NULL;
    }
    method = PyUnicode_DecodeASCII(p, sp1 - p, NULL);
    path = PyUnicode_DecodeASCII(target, target_len, NULL);
    version = major == 1 && minor == 1 ? Py_NewRef(version_1_1) : Py_BuildValue("(ii)", 1, minor);
    if (method == NULL || path == NULL || version == NULL) {
        Py_XDECREF(method);
        Py_XDECREF(path);
        Py_XDECREF(version);
        return NULL;
    }
    return Py_BuildValue("(NNN)", method, path, version);
}

/* SHA-1 (FIPS 180-4), for the accept key only: short inputs, no streaming API. */

typedef struct {
    uint32_t h[5];
    unsigned char block[64];
    size_t used;     /* bytes in block */
    uint64_t length; /* bytes hashed so far */
} Sha1;

static uint32_t
rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

/* One round: the five words move along, the new one made with f and k. */
#define SHA1_ROUND(f, k, i)                                          \
    do {                                                             \
        uint32_t t = rol(a, 5) + (f) + e + (k) + w[i];               \
        e = d;                                                       \
        d = c;                                                       \
        c = rol(bb, 30);                                             \
        bb = a;                                                      \
        a = t;                                                       \
    } while (0)

static void
sha1_block(uint32_t h[5], const unsigned char *b)
{
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    int i;

    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    }
    for (; i < 80; i++) {
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    /* Four loops, one per function: no branch in a round. */
    for (i = 0; i < 20; i++) {
        SHA1_ROUND(d ^ (bb & (c ^ d)), 0x5A827999, i);
    }
    for (; i < 40; i++) {
        SHA1_ROUND(bb ^ c ^ d, 0x6ED9EBA1, i);
    }
    for (; i < 60; i++) {
        SHA1_ROUND((bb & c) | (d & (bb | c)), 0x8F1BBCDC, i);
    }
    for (; i < 80; i++) {
        SHA1_ROUND(bb ^ c ^ d, 0xCA62C1D6, i);
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#define SHA_NI __attribute__((target("sha,sse4.1,ssse3")))

/* Four rounds of group j (0-19) with the SHA extensions: e holds the fifth
 * word for it, saved the ABCD that the next group's sha1nexte reads. */
#define SHA_NI_GROUP(j, e, saved)                                                 \
    do {                                                                          \
        e = (j) == 0 ? _mm_add_epi32(e, msg[0]) : _mm_sha1nexte_epu32(e, msg[(j) % 4]); \
        saved = abcd;                                                             \
        if ((j) >= 3 && (j) < 19) {                                               \
            msg[((j) + 1) % 4] = _mm_sha1msg2_epu32(msg[((j) + 1) % 4], msg[(j) % 4]); \
        }                                                                         \
        abcd = _mm_sha1rnds4_epu32(abcd, e, (j) / 5);                             \
        if ((j) >= 1 && (j) <= 16) {                                              \
            msg[((j) + 3) % 4] = _mm_sha1msg1_epu32(msg[((j) + 3) % 4], msg[(j) % 4]); \
        }                                                                         \
        if ((j) >= 2 && (j) <= 17) {                                              \
            msg[((j) + 2) % 4] = _mm_xor_si128(msg[((j) + 2) % 4], msg[(j) % 4]);  \
        }                                                                         \
    } while (0)

static SHA_NI void
sha1_block_ni(uint32_t h[5], const unsigned char *b)
{
    const __m128i reverse = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0x1B);
    __m128i e0 = _mm_set_epi32((int)h[4], 0, 0, 0), e1;
    __m128i abcd_start = abcd, e_start = e0, msg[4];

    for (int i = 0; i < 4; i++) {
        msg[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * i)), reverse);
    }
    /* The groups alternate between the two registers for the fifth word. */
    SHA_NI_GROUP(0, e0, e1);
    SHA_NI_GROUP(1, e1, e0);
    SHA_NI_GROUP(2, e0, e1);
    SHA_NI_GROUP(3, e1, e0);
    SHA_NI_GROUP(4, e0, e1);
    SHA_NI_GROUP(5, e1, e0);
    SHA_NI_GROUP(6, e0, e1);
    SHA_NI_GROUP(7, e1, e0);
    SHA_NI_GROUP(8, e0, e1);
    SHA_NI_GROUP(9, e1, e0);
    SHA_NI_GROUP(10, e0, e1);
    SHA_NI_GROUP(11, e1, e0);
    SHA_NI_GROUP(12, e0, e1);
    SHA_NI_GROUP(13, e1, e0);
    SHA_NI_GROUP(14, e0, e1);
    SHA_NI_GROUP(15, e1, e0);
    SHA_NI_GROUP(16, e0, e1);
    SHA_NI_GROUP(17, e1, e0);
    SHA_NI_GROUP(18, e0, e1);
    SHA_NI_GROUP(19, e1, e0);
    e0 = _mm_sha1nexte_epu32(e0, e_start);
    abcd = _mm_add_epi32(abcd, abcd_start);
    _mm_storeu_si128((__m128i *)h, _mm_shuffle_epi32(abcd, 0x1B));
    h[4] = (uint32_t)_mm_extract_epi32(e0, 3);
}

static int
has_sha_ni(void)
{
    unsigned int a, b, c, d;

    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3)) {
        return 0;
    }
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#else
static int
has_sha_ni(void)
{
    return 0;
}
#define sha1_block_ni sha1_block
#endif

/* The block function for this CPU: chosen at import. */
static void (*sha1_compress)(uint32_t h[5], const unsigned char *b) = sha1_block;

static void
sha1_update(Sha1 *s, const unsigned char *data, size_t n)
{
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, data, take);
        s->used += take;
        data += take;
        n -= take;
        if (s->used == 64) {
            sha1_compress(s->h, s->block);
            s->used = 0;
        }
    }
}

static void
sha1_final(Sha1 *s, unsigned char digest[20])
{
    uint64_t bits = s->length * 8;
    unsigned char pad[72] = {0x80};
    size_t padding = (s->used < 56 ? 56 : 120) - s->used;

    for (int i = 0; i < 8; i++) {
        pad[padding + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha1_update(s, pad, padding + 8);
    for (int i = 0; i < 20; i++) {
        digest[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
    }
}

INTERNAL PyObject *
accept_key(PyObject *module, PyObject *key)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Sha1 sha = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, {0}, 0, 0};
    unsigned char digest[21] = {0}; /* one byte of padding for the last group */
    Py_ssize_t n;

    (void)module;
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "accept_key() takes a str");
        return NULL;
    }
    const char *text = PyUnicode_AsUTF8AndSize(key, &n);
    if (text == NULL) {
        return NULL;
    }
    sha1_update(&sha, (const unsigned char *)text, (size_t)n);
    sha1_update(&sha, (const unsigned char *)guid, sizeof guid - 1);
    sha1_final(&sha, digest);

    PyObject *result = PyUnicode_New(28, 127);
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    for (int i = 0; i < 7; i++) { /* 20 bytes: 6 whole groups and one of 2 bytes */
        uint32_t group = (uint32_t)digest[3 * i] << 16 | (uint32_t)digest[3 * i + 1] << 8 |
                         digest[3 * i + 2];
        out[4 * i] = alphabet[group >> 18];
        out[4 * i + 1] = alphabet[(group >> 12) & 63];
        out[4 * i + 2] = alphabet[(group >> 6) & 63];
        out[4 * i + 3] = alphabet[group & 63];
    }
    out[27] = '=';
    return result;
}

/* serialize_head(start_line, items, body) */

/* What the reference (pure_handshake) does with arguments that this twin does
 * not take: the same result, or the same exception. */
static PyObject *
serialize_head_reference(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *reference = PyImport_ImportModule("rapidws.speedups.pure_handshake");
    PyObject *result = NULL;

    if (reference != NULL) {
        PyObject *function = PyObject_GetAttrString(reference, "serialize_head");
        if (function != NULL) {
            result = PyObject_Vectorcall(function, args, (size_t)nargs, NULL);
            Py_DECREF(function);
        }
        Py_DECREF(reference);
    }
    return result;
}

/* Whether text is a str of one-byte characters (Latin-1): add its length. */
static int
add_latin1_length(PyObject *text, Py_ssize_t *total)
{
    /* Exact: the reference formats a subclass through its methods. */
    if (!PyUnicode_CheckExact(text) || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND) {
        return 0;
    }
    *total += PyUnicode_GET_LENGTH(text);
    return 1;
}

static char *
put(char *out, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    memcpy(out, PyUnicode_1BYTE_DATA(text), (size_t)n);
    return out + n;
}

INTERNAL PyObject *
serialize_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyList_Check(args[1]) || PyList_GET_SIZE(args[1]) % 2) {
        return serialize_head_reference(args, nargs);
    }
    PyObject *line = args[0], *items = args[1], *result = NULL;
    Py_ssize_t count = PyList_GET_SIZE(items), total = 4; /* CRLF after the line, and at the end */
    Py_buffer body;

    int simple = add_latin1_length(line, &total);
    for (Py_ssize_t i = 0; simple && i < count; i++) {
        simple = add_latin1_length(PyList_GET_ITEM(items, i), &total);
    }
    if (!simple) {
        /* Not str, or a character beyond Latin-1: the reference's error. */
        return serialize_head_reference(args, nargs);
    }
    total += count * 2; /* ": " after a name, CRLF after a value */
    if (PyObject_GetBuffer(args[2], &body, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return serialize_head_reference(args, nargs);
    }
    result = PyBytes_FromStringAndSize(NULL, total + body.len);
    if (result == NULL) {
        goto done;
    }
    /* The allocation may have run a finalizer that changed the list:
     * check the sizes again while copying, with nothing allocated. */
    char *out = PyBytes_AS_STRING(result), *stop = out + total;
    int changed = PyList_GET_SIZE(items) != count;
    if (!changed) {
        out = put(out, line);
        memcpy(out, "\r\n", 2);
        out += 2;
    }
    for (Py_ssize_t i = 0; !changed && i < count; i++) {
        PyObject *text = PyList_GET_ITEM(items, i);
        changed = !PyUnicode_CheckExact(text) || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND ||
                  stop - out < PyUnicode_GET_LENGTH(text) + 2;
        if (!changed) {
            out = put(out, text);
            memcpy(out, i % 2 ? "\r\n" : ": ", 2);
            out += 2;
        }
    }
    if (changed || stop - out != 2) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "the fields changed during serialize_head()");
        goto done;
    }
    memcpy(out, "\r\n", 2);
    memcpy(out + 2, body.buf, (size_t)body.len);
done:
    PyBuffer_Release(&body);
    return result;
}

INTERNAL int
handshake_init(void)
{
    /* RAPIDWS_NO_SHA_NI: the portable rounds on any CPU, for the tests. */
    if (getenv("RAPIDWS_NO_SHA_NI") == NULL && has_sha_ni()) {
        sha1_compress = sha1_block_ni;
    }
    version_1_1 = Py_BuildValue("(ii)", 1, 1);
    return version_1_1 == NULL ? -1 : 0;
}
