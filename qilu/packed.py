"""The wire envelope (qilu/contract.py) decoded straight into arrays: the ingest's fast path.

:func:`qilu.contract.decode` builds a Python object per reading and column (two strings, an
int, a float, an int): about 0.19 us per reading, and the validation then walks those lists
again to look each device up in a dictionary (~0.3 us). :func:`decode_packed` reads the
msgpack bytes of the envelope as the encoder writes them (:meth:`qilu.contract.Envelope.
encode`) without an object per reading:

* the timestamps (``ts``), values (``x``) and qualities (``q``) are read in place with numpy
  when every element has the same fixed-width encoding: a 64-bit unsigned integer
  (``0xcf``), a 64-bit float (``0xcb``) and a positive fixint (one byte, 0..127);
* the device ids (``d``) and metrics (``m``) when every element is an ASCII string of at
  most 31 bytes (msgpack's fixstr): a header byte ``0xa0 | length`` and bytes below 0x80, so
  the headers are exactly the column's bytes at or above 0x80, found in one numpy pass and
  checked to follow each other. Each string becomes its bytes, zero-padded, as little-endian
  64-bit words (:class:`StrColumn`), looked up in a :class:`StrTable` (open addressing over a
  hash of the words; a found entry is compared word by word, so a hash collision never
  matches the wrong string). The metrics' column is only checked here (:class:`FixStrs`)
  and read into words for a whole batch at once (:meth:`StrColumn.read`): numpy's fixed
  cost per call, spread over one envelope's ~1,000 strings, made reading them per envelope
  cost nearly as much as msgpack and a dictionary lookup per name (0.13 against 0.15 us per
  reading); checked per envelope (~0.02) and read and looked up per batch (~0.06) it is half
  (docs/adr/0008-ingest-write-path.md, "Amended (issue 17, session 7)").

Anything else (a value sent as an integer, a longer or non-ASCII id, gap records, a key this
reader does not know, a malformed envelope) makes :func:`decode_packed` return None, and the
caller decodes the envelope with :func:`qilu.contract.decode`, which gives the general result
or the :class:`~qilu.errors.DecodeError`. Whenever :func:`decode_packed` returns an envelope,
``decode`` returns the same one (tests/unit/test_packed.py compares them on random and
hostile envelopes).

Server side only (numpy is not part of the edge install): the edge imports qilu/contract.py,
never this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qilu.contract import MAX_ENVELOPE_BYTES, WIRE_VERSION, Envelope, decode

# envelopes smaller than this are decoded the general way by the ingest: decode_packed's
# fixed cost (~30 us of numpy calls per envelope) outweighs what it saves per reading below
# ~100 readings (decode + batch validation on the province stream cut into envelopes of n
# readings: 25: 0.89 against 1.76 us per reading; 100: 0.74 / 0.75; 200: 0.54 / 0.49;
# 400: 0.56 / 0.35), about 5 KB
PACKED_MIN_BYTES = 5_000
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
_MAX_FIXSTR = 31
_WORD_TAIL = 7  # a word loaded at a string's last byte reads 7 bytes past it
# the keys of an envelope this decoder reads; any other key (gap records "g" included) -> None
_KEYS = frozenset({"v", "a", "b", "s", "t", "d", "m", "ts", "x", "q"})
_WORDS = 4  # 31 bytes at most: four words
# after the joined columns of StrColumn.read: the last string's word loads (as many as the
# longest string's) stay inside the buffer
_PAD_BYTES = np.zeros(8 * _WORDS, np.uint8)
# low ``i`` bytes of a little-endian word (i = 0..8)
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(9)], np.uint64)
# [word j][string length]: the bytes of word j that belong to a string of that length
_WORD_MASKS = _MASKS[np.clip(np.arange(32)[None, :] - 8 * np.arange(_WORDS)[:, None], 0, 8)]
_TAIL_KEYS = b"\xa2ts\xa1x\xa1q"  # the keys after the metrics, as the encoder writes them
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
    np.uint64,
)
_MIX_LEN = np.uint64(0xFF51AFD7ED558CCD)
_DIRECT_MAX = 64  # a StrTable of at most this many strings may be looked up without probing


@dataclass(frozen=True, slots=True, eq=False)
class StrColumn:
    """ASCII strings of at most 31 bytes: their bytes as little-endian 64-bit words,
    zero-padded, word by word (``words[j]``: word j of every string; shape (4, n)), and
    their lengths."""

    words: U64
    lengths: I64

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def of(cls, strings: Sequence[str]) -> StrColumn:
        """Python strings as a column (ValueError for one that is not ASCII or is longer)."""
        n = len(strings)
        raw = [s.encode("ascii") for s in strings]  # UnicodeEncodeError is a ValueError
        lengths = np.fromiter(map(len, raw), np.int64, n)
        if n and int(lengths.max()) > _MAX_FIXSTR:
            raise ValueError(f"a string over {_MAX_FIXSTR} bytes")
        width = 8 * _WORDS
        padded = np.frombuffer(b"".join(b.ljust(width, b"\0") for b in raw), np.uint64)
        return cls(np.ascontiguousarray(padded.reshape(n, _WORDS).T), lengths)

    @classmethod
    def concat(cls, parts: Sequence[StrColumn]) -> StrColumn:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls(np.zeros((_WORDS, 0), np.uint64), np.zeros(0, np.int64))
        return cls(
            np.concatenate([p.words for p in parts], axis=1),
            np.concatenate([p.lengths for p in parts]),
        )

    @classmethod
    def read(cls, parts: Sequence[FixStrs]) -> StrColumn:
        """The strings of checked columns (:class:`FixStrs`), all in one column: their bytes
        joined, the headers found and the words read in one pass each."""
        n = sum(p.n for p in parts)
        if n == 0:
            return cls.concat([])
        raw = np.concatenate(
            [np.frombuffer(p.data, np.uint8, p.stop - p.start, p.start) for p in parts if p.n]
            + [_PAD_BYTES]
        )
        heads = np.flatnonzero(raw >= 0x80)  # exactly the headers: each column was checked
        if len(heads) != n:
            raise ValueError("not checked fixstr columns")
        lengths = (raw[heads] & 0x1F).astype(np.int64)
        words8: U64 = np.ndarray((len(raw) - 7,), np.dtype("<u8"), raw, 0, (1,))
        used = (int(lengths.max()) + 7) // 8
        words = np.empty((_WORDS, n), np.uint64)
        words[used:] = 0
        starts = heads + 1
        for j in range(used):
            np.bitwise_and(words8[starts], _WORD_MASKS[j][lengths], out=words[j])
            starts += 8
        return cls(words, lengths)

    def strings(self) -> list[str]:
        """Back to Python strings (tests, and the rare caller that needs them)."""
        raw = np.ascontiguousarray(self.words.T).view(np.uint8).reshape(len(self), 8 * _WORDS)
        return [bytes(raw[i, :n]).decode("ascii") for i, n in enumerate(self.lengths.tolist())]

    def used_words(self) -> int:
        """How many words the longest string fills (the others are zero in every string)."""
        return (int(self.lengths.max()) + 7) // 8 if len(self) else 0

    def hashes(self) -> U64:
        h = self.lengths.astype(np.uint64) * _MIX_LEN
        for j in range(self.used_words()):
            h ^= self.words[j] * _MIX[j]
        h ^= h >> np.uint64(31)
        h *= _MIX[0]
        h ^= h >> np.uint64(29)
        return h


@dataclass(frozen=True, slots=True, eq=False)
class FixStrs:
    """``n`` strings as they lie in an envelope, ``data[start:stop]``: msgpack fixstr
    headers, each followed by its ASCII bytes, checked by :func:`decode_packed` but not read
    (:meth:`StrColumn.read` reads a batch's at once)."""

    data: bytes
    start: int
    stop: int
    n: int

    def __len__(self) -> int:
        return self.n

    def strings(self) -> list[str]:
        return StrColumn.read([self]).strings()


# a slot of a StrTable: the string's words and length (-1: an empty slot), its position
_SLOT = np.dtype([("w", "<u8", (4,)), ("len", "<i4"), ("index", "<i4")])


class StrTable:
    """String -> its position in the list the table was built from (or the number given
    for it), for a whole :class:`StrColumn` at once (-1: not in the list). Strings that
    cannot be in a column (not ASCII, over 31 bytes) are left out: they are never found, as
    no column holds them.

    Open addressing with linear probing, at least 1.5 slots per string (a power of 2); a
    slot holds the string itself, so a lookup reads one slot (one cache line, 40 bytes)
    per string and probe, and compares the words: a hash collision never matches."""

    def __init__(self, strings: Sequence[str], index: Sequence[int] | None = None) -> None:
        """``index``: what each string maps to (default: its position in ``strings``)."""
        keep = [i for i, s in enumerate(strings) if s.isascii() and len(s) <= _MAX_FIXSTR]
        values = np.asarray(keep if index is None else [index[i] for i in keep], np.int64)
        col = StrColumn.of([strings[i] for i in keep])
        # 1,024 slots at least: a table of a few names (the metrics) then has hardly a
        # collision, and a lookup one probe
        bits = max(10, (3 * len(keep) // 2).bit_length())
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._slots = np.zeros(1 << bits, _SLOT)
        self._slots["len"] = -1
        slot = (col.hashes() >> self._shift).astype(np.int64)
        taken = np.zeros(1 << bits, bool)
        pending = np.arange(len(keep))
        rounds = 0
        while len(pending):  # place in rounds: one string per free slot per round
            rounds += 1
            cand = pending[~taken[slot[pending]]]
            _, first = np.unique(slot[cand], return_index=True)
            placed = cand[first]
            at = slot[placed]
            taken[at] = True
            self._slots["w"][at] = col.words[:, placed].T
            self._slots["len"][at] = col.lengths[placed]
            self._slots["index"][at] = values[placed]
            rest = np.setdiff1d(pending, placed, assume_unique=True)
            slot[rest] = (slot[rest] + 1) & self._mask
            pending = rest
        self._size = len(keep)
        # the same slots as opaque records: numpy gathers those ~10 times faster than records
        # with fields (measured: 15 against 210 ns per string)
        self._records = self._slots.view(np.dtype((np.void, _SLOT.itemsize)))
        # every string in its home slot (a few names in 1,024 slots, the metrics): a lookup
        # is one gather per field from small flat arrays, no probing
        self._direct = rounds <= 1 and len(keep) <= _DIRECT_MAX
        self._flat_len = self._slots["len"].astype(np.int64)
        self._flat_w = np.ascontiguousarray(self._slots["w"].T)
        self._flat_index = self._slots["index"].astype(np.int64)

    def __len__(self) -> int:
        return self._size

    def find(self, col: StrColumn, *, runs: bool = True) -> I64:
        """Each string's number in the table (its position in the list by default), -1
        where it is not there. With ``runs``, a string equal to the one before it is looked
        up once: an agent sends a device's metrics one after the other (2.5 readings per
        device in a row in the province stream); a column without runs (the metrics) is
        looked up as it is."""
        n = len(col)
        if runs and n > 1:
            new = np.empty(n, bool)
            new[0] = True
            np.not_equal(col.lengths[1:], col.lengths[:-1], out=new[1:])
            for j in range(col.used_words()):
                new[1:] |= col.words[j, 1:] != col.words[j, :-1]
            firsts = np.flatnonzero(new)
            if len(firsts) < n:
                once = self._find(StrColumn(col.words[:, firsts], col.lengths[firsts]))
                found: I64 = once[np.cumsum(new) - 1]
                return found
        return self._find(col)

    def _find(self, col: StrColumn) -> I64:
        n = len(col)
        out = np.full(n, -1, np.int64)
        if not n or not self._size:
            return out
        if self._direct:
            at = (col.hashes() >> self._shift).astype(np.intp)
            same = self._flat_len[at] == col.lengths
            for j in range(col.used_words()):
                same &= self._flat_w[j][at] == col.words[j]
            np.copyto(out, self._flat_index[at], where=same)
            return out
        used = col.used_words()
        slot = (col.hashes() >> self._shift).astype(np.int64)
        lengths, words = col.lengths, col.words
        todo = None  # the first round looks every string up, the next ones those left
        while True:
            got = self._records[slot].view(_SLOT)
            same = got["len"] == lengths
            for j in range(used):
                same &= got["w"][:, j] == words[j]
            found = got["index"][same]
            out[same if todo is None else todo[same]] = found
            again = ~same & (got["len"] >= 0)  # an empty slot: not in the table
            todo = np.flatnonzero(again) if todo is None else todo[again]
            if not len(todo):
                break
            slot = (slot[again] + 1) & self._mask
            lengths, words = col.lengths[todo], col.words[:, todo]
        return out


@dataclass(frozen=True, slots=True, eq=False)
class PackedEnvelope:
    """An envelope decoded by :func:`decode_packed`: its readings as arrays."""

    agent_id: str
    boot_id: str
    seq: int
    sent_at_us: int
    devices: StrColumn
    metrics: FixStrs  # a handful of names, read and looked up for the whole batch
    ts_us: I64
    values: npt.NDArray[np.float64]
    qualities: I64
    data: bytes  # the record's bytes, for :meth:`envelope`

    def __len__(self) -> int:
        return len(self.ts_us)

    def envelope(self) -> Envelope:
        """The same envelope as :func:`qilu.contract.decode` gives it (lists of Python
        objects): for the paths that need them (a refused reading's reasons)."""
        return decode(self.data)


class _NotPackedError(Exception):
    """Not in the shape :func:`decode_packed` reads: decode it the general way."""


def _same_length_column(
    buf: npt.NDArray[np.uint8], words8: U64, pos: int, n: int
) -> tuple[StrColumn, int] | None:
    """:func:`_str_column` when all ``n`` strings have the first one's length (device ids
    of one format): their words are strided loads. None when they do not."""
    first = int(buf[pos])
    if not 0xA0 <= first <= 0xBF:
        raise _NotPackedError
    size = first & 0x1F
    stride = size + 1
    end = pos + n * stride
    if end + _WORD_TAIL > len(buf):  # the last word loads would end past the data
        return None
    span = buf[pos:end]
    if not (span[::stride] == first).all() or np.count_nonzero(span >= 0x80) != n:
        return None
    words = np.zeros((_WORDS, n), np.uint64)
    for j in range((size + 7) // 8):
        words[j] = words8[pos + 1 + 8 * j : end + 8 * j : stride]
        if size - 8 * j < 8:
            words[j] &= _MASKS[size - 8 * j]
    return StrColumn(words, np.full(n, size, np.int64)), end


def _str_column(
    buf: npt.NDArray[np.uint8], words8: U64, pos: int, n: int, end_hint: int
) -> tuple[StrColumn, int]:
    """``n`` fixstr ASCII strings from ``pos``; returns them and the position after them.
    ``end_hint``: where the column ends if the envelope is laid out as the encoder writes
    it (:func:`_tail_start`): checked, never trusted."""
    if n == 0:
        return StrColumn.concat([]), pos
    same = _same_length_column(buf, words8, pos, n)
    if same is not None:
        return same
    size_of_data = len(buf)
    # lengths vary: the headers are the bytes at or above 0x80 (ASCII text is below). The
    # column is scanned up to the hint if it holds exactly the n strings, else as far as n
    # strings can reach
    heads_at = None
    if pos < end_hint <= size_of_data:
        found = np.flatnonzero(buf[pos:end_hint] >= 0x80)
        if len(found) == n:
            heads_at = found
    if heads_at is None:
        limit = min(size_of_data, pos + n * (_MAX_FIXSTR + 1))
        heads_at = np.flatnonzero(buf[pos:limit] >= 0x80)[:n]
        if len(heads_at) != n:
            raise _NotPackedError
    heads_at += pos
    head = buf[heads_at]
    if int(head.min()) < 0xA0 or int(head.max()) > 0xBF:
        raise _NotPackedError
    lengths = (head & 0x1F).astype(np.int64)
    ends = heads_at + 1 + lengths
    last, stop = int(heads_at[-1]) + 1, int(ends[-1])
    # each string ends where the next begins; the last one's bytes, after the scanned
    # headers, are checked on their own
    if not (ends[:-1] == heads_at[1:]).all() or stop > size_of_data:
        raise _NotPackedError
    if stop > last and int(buf[last:stop].max()) >= 0x80:
        raise _NotPackedError
    used = (int(lengths.max()) + 7) // 8
    # every string loads the words of the longest: the last one's must end inside the data
    if last + 8 * used > size_of_data:
        raise _NotPackedError
    starts = heads_at + 1
    words = np.zeros((_WORDS, n), np.uint64)
    for j in range(used):
        words[j] = words8[starts + 8 * j] & _WORD_MASKS[j][lengths]
    return StrColumn(words, lengths), stop


def _fixstr_span(
    data: bytes, buf: npt.NDArray[np.uint8], words8: U64, pos: int, n: int, end_hint: int
) -> tuple[FixStrs, int]:
    """The column of :func:`_str_column` (the same strings accepted), checked but not read
    into words: the metrics, read for the whole batch by :meth:`StrColumn.read`. In the
    encoder's layout the column ends at ``end_hint``, and the check is one pass for the
    headers (each at or above 0x80, ASCII below) and one for their lengths (each header
    ``0xa0 | length`` followed by ``length`` bytes up to the next one)."""
    size_of_data = len(buf)
    if n and pos < end_hint <= size_of_data and 0xA0 <= buf[pos] <= 0xBF:
        span = buf[pos:end_hint]
        heads = np.flatnonzero(span >= 0x80)
        if len(heads) == n:
            head = span[heads]
            last = int(head[-1]) - 0xA0  # the last string's length
            # a header 0xa0 | length where the next one is length + 1 bytes further
            if (
                int(head.max()) <= 0xBF
                and last >= 0
                and int(heads[-1]) + 1 + last == len(span)
                and bool(((np.diff(heads) + 0x9F) == head[:-1]).all())
            ):
                return FixStrs(data, pos, end_hint, n), end_hint
    _, stop = _str_column(buf, words8, pos, n, end_hint)  # another layout: the general check
    return FixStrs(data, pos, stop, n), stop


def _tail_start(size: int, n: int) -> int:
    """Where the timestamps' key begins if the envelope ends as the encoder writes it: the
    metrics, then ``ts``, ``x`` and ``q`` of ``n`` elements each, fixed width."""
    header = 1 if n < 16 else 3 if n < 2**16 else 5
    return size - (len(_TAIL_KEYS) + 3 * header + 19 * n)


def _array_header(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, pos + 1
    if b == 0xDC:
        return int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
    if b == 0xDD:
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
    raise _NotPackedError


def _str(data: bytes, pos: int) -> tuple[str, int]:
    b = data[pos]
    if 0xA0 <= b <= 0xBF:
        n, pos = b & 0x1F, pos + 1
    elif b == 0xD9:
        n, pos = data[pos + 1], pos + 2
    elif b == 0xDA:
        n, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
    else:
        raise _NotPackedError
    if pos + n > len(data):
        raise _NotPackedError
    try:
        return data[pos : pos + n].decode("utf-8"), pos + n
    except UnicodeDecodeError:
        raise _NotPackedError from None


def _int(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b <= 0x7F:
        return b, pos + 1
    if b >= 0xE0:
        return b - 0x100, pos + 1
    size = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}.get(b)
    if size is None or pos + 1 + size > len(data):
        raise _NotPackedError
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big", signed=b >= 0xD0), pos + 1 + size


def _fixed(
    buf: npt.NDArray[np.uint8], pos: int, n: int, prefix: int, dtype: str
) -> tuple[npt.NDArray[np.generic], int]:
    """``n`` elements of one prefix byte and 8 big-endian bytes each: a strided view of
    the bytes (``dtype``: '>i8' or '>f8'), converted to the native order in one copy."""
    end = pos + 9 * n
    if end > len(buf):
        raise _NotPackedError
    if n and not (buf[pos:end:9] == prefix).all():
        raise _NotPackedError
    view = np.ndarray((n,), np.dtype(dtype), buf.base, pos + 1, (9,))
    return view.astype(view.dtype.newbyteorder("=")), end


def decode_packed(data: bytes) -> PackedEnvelope | None:
    """The envelope's readings as arrays, or None when it is not in the shape this decoder
    reads (the module docstring); then :func:`qilu.contract.decode` decodes it or says
    why not."""
    if len(data) > MAX_ENVELOPE_BYTES or not data:
        return None
    try:
        return _decode(data)
    except (_NotPackedError, IndexError):  # IndexError: the data ended inside a header
        return None


@dataclass(slots=True)
class _Fields:
    """What :func:`_decode` has read so far."""

    scalars: dict[str, int | str]
    strings: dict[str, StrColumn]
    metrics: FixStrs | None
    numbers: dict[str, npt.NDArray[np.int64] | npt.NDArray[np.float64]]
    lengths: set[int]


def _read_value(
    key: str, data: bytes, buf: npt.NDArray[np.uint8], words8: U64, pos: int, got: _Fields
) -> int:
    """The value of ``key`` at ``pos`` into ``got``; returns the position after it."""
    if key in ("a", "b"):
        got.scalars[key], pos = _str(data, pos)
        return pos
    if key in ("v", "s", "t"):
        got.scalars[key], pos = _int(data, pos)
        return pos
    n, pos = _array_header(data, pos)
    got.lengths.add(n)
    if key == "d":
        got.strings[key], pos = _str_column(buf, words8, pos, n, _tail_start(len(data), n))
    elif key == "m":  # in the encoder's layout the tail follows the metrics
        got.metrics, pos = _fixstr_span(data, buf, words8, pos, n, _tail_start(len(data), n))
    elif key == "ts":
        ts, pos = _fixed(buf, pos, n, 0xCF, ">i8")
        if n and int(ts.min()) < 0:  # an unsigned integer of 2**63 or more
            raise _NotPackedError
        got.numbers[key] = ts.astype(np.int64, copy=False)
    elif key == "x":
        x, pos = _fixed(buf, pos, n, 0xCB, ">f8")
        got.numbers[key] = x.astype(np.float64, copy=False)
    else:  # q: positive fixints
        end = pos + n
        if end > len(data) or (n and int(buf[pos:end].max()) > 0x7F):
            raise _NotPackedError
        got.numbers[key], pos = buf[pos:end].astype(np.int64), end
    return pos


def _decode(data: bytes) -> PackedEnvelope:
    if len(data) < 8:
        raise _NotPackedError
    buf = np.frombuffer(data, np.uint8)
    # every 8 bytes from each position, as a little-endian word (unaligned loads), over the
    # data itself: a string column is read only if its last word ends inside the data (in
    # the encoder's layout the numbers' columns follow), where a padded copy of the data
    # cost ~0.01 us per reading
    words8: U64 = np.ndarray((len(data) - 7,), np.dtype("<u8"), data, 0, (1,))
    b = data[0]
    if 0x80 <= b <= 0x8F:
        entries, pos = b & 0x0F, 1
    elif b == 0xDE:
        entries, pos = int.from_bytes(data[1:3], "big"), 3
    else:
        raise _NotPackedError
    got = _Fields({}, {}, None, {}, set())
    seen: set[str] = set()
    for _ in range(entries):
        key, pos = _str(data, pos)
        if key not in _KEYS or key in seen:
            raise _NotPackedError
        seen.add(key)
        pos = _read_value(key, data, buf, words8, pos, got)
    if pos != len(data) or len(seen) != len(_KEYS) or len(got.lengths) != 1:
        raise _NotPackedError
    v, agent, boot = got.scalars["v"], got.scalars["a"], got.scalars["b"]
    seq, sent = got.scalars["s"], got.scalars["t"]
    if v != WIRE_VERSION or not (isinstance(agent, str) and agent):
        raise _NotPackedError
    if not (isinstance(boot, str) and boot and isinstance(seq, int) and seq >= 0):
        raise _NotPackedError
    if not isinstance(sent, int):
        raise _NotPackedError
    ts, values, qualities = got.numbers["ts"], got.numbers["x"], got.numbers["q"]
    if got.metrics is None:
        raise _NotPackedError
    return PackedEnvelope(
        agent,
        boot,
        seq,
        sent,
        got.strings["d"],
        got.metrics,
        ts.astype(np.int64, copy=False),
        values.astype(np.float64, copy=False),
        qualities.astype(np.int64, copy=False),
        data,
    )
