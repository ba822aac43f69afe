# cython: language_level=3
"""Compiled JSON writer; the pure-Python twin is ``fastpath._jsonw_py`` (same API, same bytes).

The storage records of every run and every changed symbol are JSON. Encoding them with msgspec
meant building a tuple per record (and per step) for it to walk, and printing each float with
a shortest-round-trip algorithm. Here a record is written piece by piece into one C buffer by
the compiled record builders (``engine.core.records``), with no object made per piece: an
integer is its digits, a short ASCII string is copied, and a float that is an exact multiple
of a millionth -- a price, a volume, a time in microseconds: nearly every market-data value --
is printed as that integer with a decimal point (exact, see :meth:`JsonWriter.real`). Anything
else goes through msgspec, as before.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport signbit
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import msgspec

cdef object _encode = msgspec.json.Encoder().encode

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    const unsigned char* PyUnicode_1BYTE_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object)
    char* PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

cdef extern from *:
    int __builtin_clzll(unsigned long long)  # GCC and clang: leading zero bits (not of 0)

# 10**0 .. 10**19, to count an integer's digits from its bit length (_digits)
cdef unsigned long long _POW10[20]
for _i in range(20):
    _POW10[_i] = 10 ** _i

# 2**53: below it every integer is a double, so the check in real() is exact.
cdef double _EXACT = 9007199254740992.0
# "00", "01", ..., "99": an integer's digits two at a time (half the divisions).
cdef const char* _PAIRS = (
    b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
    b"5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"
)


cdef inline uint64_t _copy(char* dst, const char* src, Py_ssize_t n) noexcept:
    # Most pieces are a few bytes (punctuation, a key, a name): copied in 8-byte words (a
    # fixed-size memcpy is one load and one store), the last word overlapping the one before,
    # rather than through a call into libc or byte by byte. Returns the copied bytes' high
    # bits, OR-ed: nonzero if any is not ASCII.
    cdef uint64_t word, high = 0
    cdef uint32_t half
    cdef Py_ssize_t i = 0
    if n >= 8:
        while i + 8 <= n:
            memcpy(&word, src + i, 8)
            memcpy(dst + i, &word, 8)
            high |= word
            i += 8
        if i < n:
            memcpy(&word, src + n - 8, 8)
            memcpy(dst + n - 8, &word, 8)
            high |= word
    elif n >= 4:
        memcpy(&half, src, 4)
        memcpy(dst, &half, 4)
        high = half
        memcpy(&half, src + n - 4, 4)
        memcpy(dst + n - 4, &half, 4)
        high |= half
    else:
        while i < n:
            dst[i] = src[i]
            high |= <unsigned char>src[i]
            i += 1
    return high & 0x8080808080808080ULL


cdef inline char* _eight(char* end, uint32_t v) noexcept:
    # The eight digits of v (< 10**8, leading zeros kept) just before end, two at a time;
    # returns where they start.
    cdef uint32_t pair
    cdef int i
    for i in range(4):
        pair = (v % 100) * 2
        v //= 100
        end -= 2
        end[0] = _PAIRS[pair]
        end[1] = _PAIRS[pair + 1]
    return end


cdef inline void _rest(char* end, uint32_t v) noexcept:
    # The digits of v (< 10**8, no leading zeros) just before end, two at a time.
    cdef uint32_t pair
    while v >= 100:
        pair = (v % 100) * 2
        v //= 100
        end -= 2
        end[0] = _PAIRS[pair]
        end[1] = _PAIRS[pair + 1]
    if v >= 10:
        pair = v * 2
        end -= 2
        end[0] = _PAIRS[pair]
        end[1] = _PAIRS[pair + 1]
    else:
        end -= 1
        end[0] = <char>(48 + v)


cdef inline int _digits(unsigned long long u) noexcept:
    # log10 from log2: bits * 1233 / 4096 (1233 / 4096 ~ log10(2)), one short for some; the
    # table settles it.
    cdef int guess
    if u < 10:
        return 1
    guess = ((64 - __builtin_clzll(u)) * 1233) >> 12
    return guess + (u >= _POW10[guess])


cdef class JsonWriter:
    # fields and the C-level methods: _jsonw.pxd

    def __cinit__(self, Py_ssize_t capacity=4096):
        if capacity < 64:
            capacity = 64
        self.data = <char*>malloc(capacity)
        if self.data is NULL:
            raise MemoryError()
        self.cap = capacity
        self.size = 0
        self.utf8 = False

    def __dealloc__(self):
        free(self.data)

    def __len__(self):
        return self.size

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef char* grown
        if self.size + n <= cap:
            return 0
        while cap < self.size + n:
            cap *= 2
        grown = <char*>realloc(self.data, cap)
        if grown is NULL:
            raise MemoryError()
        self.data = grown
        self.cap = cap
        return 0

    cpdef int raw(self, bytes piece) except -1:
        """Append ``piece``, JSON already."""
        if piece is None:
            raise TypeError("expected bytes, got NoneType")
        cdef Py_ssize_t n = PyBytes_GET_SIZE(piece)
        if self.size + n > self.cap:
            self._reserve(n)
        if _copy(self.data + self.size, PyBytes_AS_STRING(piece), n):
            self.utf8 = True
        self.size += n
        return 0

    cpdef int byte(self, int c) except -1:
        """Append one ASCII character (punctuation)."""
        if not 0 <= c < 128:
            raise ValueError(f"not an ASCII character: {c}")
        if self.size >= self.cap:
            self._reserve(1)
        self.data[self.size] = <char>c
        self.size += 1
        return 0

    cpdef int null(self) except -1:
        self._reserve(4)
        _copy(self.data + self.size, b"null", 4)
        self.size += 4
        return 0

    cpdef int integer(self, long long v) except -1:
        cdef int n
        cdef unsigned long long u
        cdef char* end
        if v < 0:
            u = <unsigned long long>(-(v + 1)) + 1  # LLONG_MIN too
        else:
            u = <unsigned long long>v
        n = _digits(u)
        if self.size + n + 1 > self.cap:
            self._reserve(n + 1)
        if v < 0:
            self.data[self.size] = b"-"
            self.size += 1
        end = self.data + self.size + n  # the digits go in place, right to left
        self.size += n
        # Eight digits at a time while more than eight are left (a time in microseconds has
        # sixteen): one 64-bit division each, the rest in cheaper 32-bit arithmetic.
        while u >= 100000000:
            end = _eight(end, <uint32_t>(u % 100000000))
            u //= 100000000
        _rest(end, <uint32_t>u)
        return 0

    cpdef int real(self, double x) except -1:
        """Append ``x`` exactly. When ``x`` is ``v / 10**6`` for an integer ``v`` below 2**53
        (checked by computing that quotient: a correctly rounded division, so the decimal
        ``v`` with its point six places left reads back as ``x`` too), ``v`` is printed with a
        decimal point; otherwise msgspec prints it (shortest round trip; null if not finite)."""
        cdef double y = x * 1e6
        cdef long long v
        cdef unsigned long long whole, frac
        cdef int width, i
        if -_EXACT < y < _EXACT and not (x == 0.0 and signbit(x)):
            v = <long long>(y + 0.5) if y >= 0 else <long long>(y - 0.5)
            if (<double>v) / 1e6 == x:
                if v < 0:
                    self.byte(45)
                    v = -v
                whole = <unsigned long long>v // 1000000
                frac = <unsigned long long>v % 1000000
                self.integer(<long long>whole)
                self._reserve(7)
                self.data[self.size] = b"."
                self.size += 1
                if frac == 0:
                    self.data[self.size] = b"0"
                    self.size += 1
                    return 0
                width = 6  # the fraction's digits: leading zeros kept, trailing ones dropped
                while frac % 10 == 0:
                    frac //= 10
                    width -= 1
                i = width
                while i > 0:  # right to left; once frac is spent, the zeros that lead it
                    i -= 1
                    self.data[self.size + i] = <char>(48 + frac % 10)
                    frac //= 10
                self.size += width
                return 0
        return self.raw(_encode(x))

    cpdef int text(self, str s) except -1:
        """Append ``s`` as a JSON string: copied when it is ASCII with nothing to escape."""
        cdef Py_ssize_t n, i
        cdef const unsigned char* p
        cdef unsigned char c
        if s is None:
            raise TypeError("expected str, got NoneType")
        if PyUnicode_IS_ASCII(s):
            n = PyUnicode_GET_LENGTH(s)
            p = PyUnicode_1BYTE_DATA(s)
            for i in range(n):
                c = p[i]
                if c < 32 or c == 34 or c == 92:
                    break
            else:
                if self.size + n + 2 > self.cap:
                    self._reserve(n + 2)
                self.data[self.size] = b'"'
                _copy(self.data + self.size + 1, <const char*>p, n)  # ASCII: checked above
                self.data[self.size + n + 1] = b'"'
                self.size += n + 2
                return 0
        return self.raw(_encode(s))

    cpdef int value(self, object o) except -1:
        """Append ``o`` encoded by msgspec (any value it can encode)."""
        return self.raw(_encode(o))

    cpdef int close(self, int bracket) except -1:
        """End an array or object whose every member is followed by a comma: the last comma
        becomes ``bracket`` (appended if there is no member)."""
        if not 0 <= bracket < 128:
            raise ValueError(f"not an ASCII character: {bracket}")
        if self.size and self.data[self.size - 1] == b",":
            self.data[self.size - 1] = <char>bracket
            return 0
        return self.byte(bracket)

    cpdef int truncate(self, Py_ssize_t size) except -1:
        """Drop what was written after ``size`` bytes (a record that failed half-way)."""
        if 0 <= size < self.size:
            self.size = size
        return 0

    cpdef str take(self):
        """What was written, as text; the writer starts empty again (its buffer is kept)."""
        cdef str out
        cdef char* smaller
        if self.utf8:
            out = PyUnicode_DecodeUTF8(self.data, self.size, NULL)
        else:  # all ASCII, as it nearly always is: copied, not decoded
            out = PyUnicode_New(self.size, 127)
            memcpy(PyUnicode_DATA(out), self.data, self.size)
        self.size = 0
        self.utf8 = False
        if self.cap > (1 << 22):
            # A burst made it large: give the memory back instead of keeping it for good.
            smaller = <char*>malloc(4096)
            if smaller is not NULL:
                free(self.data)
                self.data = smaller
                self.cap = 4096
        return out
