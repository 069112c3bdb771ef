/* The C twin of rapidws.speedups.pure_http: the header-field loops of the
 * opening handshake. See that module for what they do and why. */

#include <math.h>
#include <stdint.h>

#include "_core.h"

#define HEADER_NAMES_MAX 1024
#define SHARED_NAME_LENGTH 64
#define HEADER_VALUES_MAX 1024
#define SHARED_VALUE_LENGTH 256

static PyObject *header_names;       /* dict: name -> (name, lower-cased name) */
static PyObject *header_values;      /* dict: value -> value */
static PyObject *shared_value_names; /* frozenset of lower-cased names */
PyObject *InvalidRequest, *SecurityError;

/* RFC 7230 section 3.2.6: the characters of a token. */
const char TCHAR[128] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* A str whose characters all fit in one byte: its characters, else NULL.
 * CPython stores a str in the narrowest kind that holds it, so any other
 * kind has a character above U+00FF, which neither a token nor a value has. */
static const Py_UCS1 *
latin1_chars(PyObject *text)
{
    return PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND ? PyUnicode_1BYTE_DATA(text) : NULL;
}

static int
is_token(PyObject *text)
{
    const Py_UCS1 *chars = latin1_chars(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);

    if (chars == NULL || n == 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (chars[i] >= 128 || !TCHAR[chars[i]]) {
            return 0;
        }
    }
    return 1;
}

/* Visible characters, spaces, tabs and obs-text (RFC 7230 section 3.2). */
static int
is_field_value(PyObject *text)
{
    const Py_UCS1 *chars = latin1_chars(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);

    if (chars == NULL) {
        return n == 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS1 c = chars[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* A token in lower case (tokens are ASCII). New reference. */
static PyObject *
ascii_lower(PyObject *token)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(token);
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(token);
    PyObject *lower = PyUnicode_New(n, 127);

    if (lower == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(lower);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = (chars[i] >= 'A' && chars[i] <= 'Z') ? chars[i] + 32 : chars[i];
    }
    return lower;
}

enum { FIELD_OK = 0, FIELD_ERROR = -1, BAD_NAME = 1, BAD_VALUE = 2 };

/* The name, checked, and its key, as new references; the cached ones when
 * the name was seen before. */
static int
check_name(PyObject *name, PyObject **checked_name, PyObject **key)
{
    PyObject *checked = PyDict_GetItemWithError(header_names, name);

    /* Entries not made here (the table is a module attribute) are ignored. */
    if (checked != NULL && PyTuple_CheckExact(checked) && PyTuple_GET_SIZE(checked) == 2 &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(checked, 0)) &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(checked, 1))) {
        *checked_name = Py_NewRef(PyTuple_GET_ITEM(checked, 0));
        *key = Py_NewRef(PyTuple_GET_ITEM(checked, 1));
        return FIELD_OK;
    }
    if (checked == NULL && PyErr_Occurred()) {
        return FIELD_ERROR;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "a header name must be a str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return FIELD_ERROR;
    }
    if (!is_token(name)) {
        return BAD_NAME;
    }
    *key = ascii_lower(name);
    if (*key == NULL) {
        return FIELD_ERROR;
    }
    /* Plain str only: a subclass would reach every later header. */
    if (PyDict_GET_SIZE(header_names) < HEADER_NAMES_MAX &&
        PyUnicode_GET_LENGTH(name) <= SHARED_NAME_LENGTH && PyUnicode_CheckExact(name)) {
        PyObject *entry = PyTuple_Pack(2, name, *key);
        if (entry == NULL || PyDict_SetItem(header_names, name, entry) < 0) {
            Py_XDECREF(entry);
            Py_CLEAR(*key);
            return FIELD_ERROR;
        }
        Py_DECREF(entry);
    }
    *checked_name = Py_NewRef(name);
    return FIELD_OK;
}

/* The value to store: the shared one when there is one. New reference. */
static PyObject *
share_value(PyObject *key, PyObject *value)
{
    PyObject *shared = PyDict_GetItemWithError(header_values, value);

    if (shared != NULL) {
        return Py_NewRef(shared);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    int share = PySet_Contains(shared_value_names, key);
    if (share < 0) {
        return NULL;
    }
    if (share && PyUnicode_GET_LENGTH(value) <= SHARED_VALUE_LENGTH &&
        PyDict_GET_SIZE(header_values) < HEADER_VALUES_MAX && PyUnicode_CheckExact(value) &&
        PyDict_SetItem(header_values, value, value) < 0) {
        return NULL;
    }
    return Py_NewRef(value);
}

static int
index_value(PyObject *index, PyObject *key, PyObject *value)
{
    PyObject *values = PyDict_GetItemWithError(index, key);

    if (values == NULL) {
        return PyErr_Occurred() ? -1 : PyDict_SetItem(index, key, value);
    }
    if (PyUnicode_Check(values)) {
        /* Held across the allocation: a collection it starts may run a
         * finalizer that changes the index. */
        Py_INCREF(values);
        PyObject *both = PyList_New(2);
        if (both == NULL) {
            Py_DECREF(values);
            return -1;
        }
        PyList_SET_ITEM(both, 0, values);
        PyList_SET_ITEM(both, 1, Py_NewRef(value));
        int result = PyDict_SetItem(index, key, both);
        Py_DECREF(both);
        return result;
    }
    return PyList_Append(values, value);
}

/* add_header() without its exceptions: FIELD_OK, FIELD_ERROR (an exception
 * is set), BAD_NAME or BAD_VALUE. */
static int
add_field(PyObject *items, PyObject *index, PyObject *name, PyObject *value)
{
    PyObject *checked_name = NULL, *key = NULL, *stored = NULL;
    int result = check_name(name, &checked_name, &key);

    if (result != FIELD_OK) {
        return result;
    }
    result = FIELD_ERROR;
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a header value must be a str, not %.100s",
                     Py_TYPE(value)->tp_name);
        goto done;
    }
    if (!is_field_value(value)) {
        result = BAD_VALUE;
        goto done;
    }
    stored = share_value(key, value);
    if (stored == NULL || PyList_Append(items, checked_name) < 0 ||
        PyList_Append(items, stored) < 0) {
        goto done;
    }
    if (index != Py_None && index_value(index, key, stored) < 0) {
        goto done;
    }
    result = FIELD_OK;
done:
    Py_XDECREF(stored);
    Py_DECREF(checked_name);
    Py_DECREF(key);
    return result;
}

static int
check_containers(PyObject *items, PyObject *index)
{
    if (!PyList_Check(items) || !(index == Py_None || PyDict_Check(index))) {
        PyErr_SetString(PyExc_TypeError, "add_header() takes a list and a dict or None");
        return -1;
    }
    return 0;
}

INTERNAL PyObject *
add_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "add_header() takes items, index, name and value");
        return NULL;
    }
    if (check_containers(args[0], args[1]) < 0) {
        return NULL;
    }
    switch (add_field(args[0], args[1], args[2], args[3])) {
    case FIELD_OK:
        Py_RETURN_NONE;
    case BAD_NAME:
        PyErr_Format(PyExc_ValueError, "invalid header name: %R", args[2]);
        return NULL;
    case BAD_VALUE:
        PyErr_Format(PyExc_ValueError, "invalid value for header %S: %R", args[2], args[3]);
        return NULL;
    default:
        return NULL;
    }
}

INTERNAL PyObject *
http_error(PyObject *type, PyObject *message, int status)
{
    if (message != NULL) {
        PyObject *exc = status ? PyObject_CallFunction(type, "Oi", message, status)
                               : PyObject_CallOneArg(type, message);
        if (exc != NULL) {
            PyErr_SetObject(type, exc);
            Py_DECREF(exc);
        }
        Py_DECREF(message);
    }
    return NULL;
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Where the CRLF at or after p[start] is in p[:end], or end. */
static Py_ssize_t
line_end(const char *p, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t i = start;

    while (i + 1 < end) {
        const char *cr = memchr(p + i, '\r', (size_t)(end - 1 - i));
        if (cr == NULL) {
            break;
        }
        i = cr - p;
        if (p[i + 1] == '\n') {
            return i;
        }
        i++;
    }
    return end;
}

/* The names and shared values met last, by a hash of their bytes: a str for
 * a name or value that is there costs no decoding and no hashing. Only
 * entries of the tables go in (never a credential), and any str equal to the
 * bytes would do as well, so a stale entry is harmless. */
#define STR_CACHE_SIZE 256
static PyObject *str_cache[STR_CACHE_SIZE];

/* A str of the Latin-1 text p[:n], new reference; *slot is its cache slot,
 * and *cached whether it came from there. */
static PyObject *
latin1_str(const char *p, Py_ssize_t n, size_t *slot, int *cached)
{
    uint32_t hash = 2166136261u; /* FNV-1a */

    for (Py_ssize_t i = 0; i < n; i++) {
        hash = (hash ^ (unsigned char)p[i]) * 16777619u;
    }
    *slot = hash & (STR_CACHE_SIZE - 1);
    PyObject *text = str_cache[*slot];
    /* The kind is checked: an entry put into a table by hand may be any str. */
    *cached = text != NULL && PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND &&
              PyUnicode_GET_LENGTH(text) == n &&
              memcmp(PyUnicode_1BYTE_DATA(text), p, (size_t)n) == 0;
    return *cached ? Py_NewRef(text) : PyUnicode_DecodeLatin1(p, n, NULL);
}

/* Cache text at slot when it is a key of table mapped to itself (values) or
 * to anything (names, when same is 0); 0, or -1 with an exception set. */
static int
remember(size_t slot, PyObject *text, PyObject *table, int same)
{
    PyObject *entry = PyDict_GetItemWithError(table, text);

    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!same || entry == text) {
        Py_XSETREF(str_cache[slot], Py_NewRef(text));
    }
    return 0;
}

/* The header line p[start:stop] into the fields; 0, or -1 with an exception set. */
static int
parse_line(PyObject *items, PyObject *index, const char *p, Py_ssize_t start, Py_ssize_t stop,
           Py_ssize_t max_line)
{
    if (max_line >= 0 && stop - start > max_line) {
        http_error(SecurityError, PyUnicode_FromString("header line is too long"), 0);
        return -1;
    }
    const char *colon = memchr(p + start, ':', (size_t)(stop - start));
    if (colon == NULL) {
        Py_ssize_t n = stop - start;
        PyObject *head = PyBytes_FromStringAndSize(p + start, n < 64 ? n : 64);
        if (head != NULL) {
            http_error(InvalidRequest, PyUnicode_FromFormat("invalid header line: %R", head), 0);
            Py_DECREF(head);
        }
        return -1;
    }
    Py_ssize_t name_end = colon - p, value_start = name_end + 1, value_end = stop;
    while (value_start < value_end && is_blank((unsigned char)p[value_start])) {
        value_start++;
    }
    while (value_end > value_start && is_blank((unsigned char)p[value_end - 1])) {
        value_end--;
    }
    size_t name_slot, value_slot;
    int name_cached, value_cached;
    PyObject *name = latin1_str(p + start, name_end - start, &name_slot, &name_cached);
    PyObject *value = latin1_str(p + value_start, value_end - value_start, &value_slot,
                                 &value_cached);
    int result = FIELD_ERROR;
    if (name != NULL && value != NULL) {
        result = add_field(items, index, name, value);
    }
    if (result == FIELD_OK) {
        /* What add_field() stored: the tables' objects when shared. */
        Py_ssize_t size = PyList_GET_SIZE(items);
        if ((!name_cached &&
             remember(name_slot, PyList_GET_ITEM(items, size - 2), header_names, 0) < 0) ||
            (!value_cached &&
             remember(value_slot, PyList_GET_ITEM(items, size - 1), header_values, 1) < 0)) {
            result = FIELD_ERROR;
        }
    }
    if (result == BAD_NAME) {
        /* Also catches obs-fold (a line starting with a space): RFC 7230 3.2.4. */
        PyObject *shown = PyUnicode_Substring(name, 0, 64);
        if (shown != NULL) {
            http_error(InvalidRequest, PyUnicode_FromFormat("invalid header name: %R", shown), 0);
            Py_DECREF(shown);
        }
    }
    else if (result == BAD_VALUE) {
        http_error(InvalidRequest, PyUnicode_FromFormat("invalid value for header %U", name), 0);
    }
    Py_XDECREF(name);
    Py_XDECREF(value);
    return result == FIELD_OK ? 0 : -1;
}

/* A limit argument: None or -1 (any negative number) for none; clamped, as
 * a limit beyond any length is no limit. A float counts as the reference's
 * comparisons have it: its floor, none when negative or NaN. */
static int
as_limit(PyObject *arg, Py_ssize_t *out)
{
    if (arg == Py_None) {
        *out = -1;
        return 0;
    }
    if (PyFloat_Check(arg)) {
        double limit = PyFloat_AS_DOUBLE(arg);
        *out = !(limit >= 0)                      ? -1
               : limit >= (double)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX
                                                  : (Py_ssize_t)floor(limit);
        return 0;
    }
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_head() limits are numbers or None");
        return -1;
    }
    *out = PyNumber_AsSsize_t(arg, NULL);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

INTERNAL PyObject *
parse_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    Py_ssize_t end, max_line, max_headers, max_header_bytes;

    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_head() takes bytes, an int end and three limits");
        return NULL;
    }
    if (as_limit(args[1], &end) < 0 || as_limit(args[2], &max_line) < 0 ||
        as_limit(args[3], &max_headers) < 0 || as_limit(args[4], &max_header_bytes) < 0) {
        return NULL;
    }
    PyObject *data = args[0];
    if (end < 0 || end > PyBytes_GET_SIZE(data)) {
        PyErr_SetString(PyExc_ValueError, "parse_head() end is out of range");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(data);
    if (max_header_bytes >= 0 && end + 2 > max_header_bytes) {
        http_error(SecurityError, PyUnicode_FromString("HTTP head is too large"), 0);
        return NULL;
    }
    Py_ssize_t first_end = line_end(p, 0, end);
    if (max_line >= 0 && first_end > max_line) {
        http_error(SecurityError, PyUnicode_FromString("request line is too long"), 414);
        return NULL;
    }
    if (max_headers >= 0) {
        Py_ssize_t fields = 0;
        for (Py_ssize_t at = first_end; at < end; at = line_end(p, at + 2, end)) {
            if (++fields > max_headers) {
                http_error(SecurityError, PyUnicode_FromString("too many header fields"), 0);
                return NULL;
            }
        }
    }
    PyObject *items = PyList_New(0), *index = PyDict_New();
    if (items == NULL || index == NULL) {
        goto error;
    }
    for (Py_ssize_t start = first_end; start < end;) {
        start += 2; /* the CRLF of the line before */
        Py_ssize_t stop = line_end(p, start, end);
        if (parse_line(items, index, p, start, stop, max_line) < 0) {
            goto error;
        }
        start = stop;
    }
    return Py_BuildValue("(y#NN)", p, first_end, items, index);
error:
    Py_XDECREF(items);
    Py_XDECREF(index);
    return NULL;
}

INTERNAL int
http_init(PyObject *module)
{
    static const char *const shared[] = {
        "accept-encoding", "accept-language",          "cache-control",         "connection",
        "host",            "origin",                   "pragma",                "sec-websocket-extensions",
        "sec-websocket-version", "server",             "upgrade",               "user-agent",
    };
    PyObject *exceptions = PyImport_ImportModule("rapidws.exceptions");
    PyObject *names = PyList_New(0);

    if (exceptions == NULL || names == NULL) {
        goto error;
    }
    InvalidRequest = PyObject_GetAttrString(exceptions, "InvalidRequest");
    SecurityError = PyObject_GetAttrString(exceptions, "SecurityError");
    if (InvalidRequest == NULL || SecurityError == NULL) {
        goto error;
    }
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        PyObject *name = PyUnicode_FromString(shared[i]);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            goto error;
        }
        Py_DECREF(name);
    }
    header_names = PyDict_New();
    header_values = PyDict_New();
    shared_value_names = PyFrozenSet_New(names);
    if (header_names == NULL || header_values == NULL || shared_value_names == NULL) {
        goto error;
    }
    /* The module holds a reference of its own to each. */
    if (PyModule_AddObjectRef(module, "HEADER_NAMES", header_names) < 0 ||
        PyModule_AddObjectRef(module, "HEADER_VALUES", header_values) < 0 ||
        PyModule_AddObjectRef(module, "SHARED_VALUE_NAMES", shared_value_names) < 0 ||
        PyModule_AddIntConstant(module, "HEADER_NAMES_MAX", HEADER_NAMES_MAX) < 0 ||
        PyModule_AddIntConstant(module, "HEADER_VALUES_MAX", HEADER_VALUES_MAX) < 0 ||
        PyModule_AddIntConstant(module, "SHARED_NAME_LENGTH", SHARED_NAME_LENGTH) < 0 ||
        PyModule_AddIntConstant(module, "SHARED_VALUE_LENGTH", SHARED_VALUE_LENGTH) < 0) {
        goto error;
    }
    Py_DECREF(exceptions);
    Py_DECREF(names);
    return 0;
error:
    Py_XDECREF(exceptions);
    Py_XDECREF(names);
    return -1;
}
