# Differential transcript: the same libnbd session run against every peer (nbdkit memory 64M and a
# snapnbd 64M volume). It prints one line per observation (flags, data read back after writes,
# zeroes and trims, allocation, error names); the test compares the transcripts line by line.
#
# Run by nbdsh (python3-libnbd): nbdsh -n -c "exec(open(PATH).read())" with NBD_URI in the env.
# Lines starting with "~" are peer-specific facts (export name, advertised block sizes) that are
# printed for the record and excluded from the comparison; see the test for why each one differs.
#
# Allocation is only compared at 1 MiB granularity: servers choose their own extent boundaries
# (nbdkit memory pages are 32 KiB, snapnbd chunks 64 KiB), so adjacent extents with equal flags are
# merged and every region the script touches is 1 MiB aligned.
import errno
import hashlib
import os
import random

import nbd

MiB = 1 << 20
KiB = 1 << 10
uri = os.environ["NBD_URI"]

# NBD_STRUCTURED=0 takes the kernel's path: simple replies, so no block status either.
structured = os.environ.get("NBD_STRUCTURED", "1") != "0"

h = nbd.NBD()
if structured:
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
else:
    h.set_request_structured_replies(False)
h.connect_uri(uri)
# The server, not libnbd, must judge bad requests: send them as given.
h.set_strict_mode(0)


def out(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


def digest(buf):
    return hashlib.sha256(bytes(buf)).hexdigest()[:16]


def pattern(seed, n):
    # Deterministic and aperiodic, so a read from the wrong offset cannot match by accident.
    return bytearray(random.Random(seed).randbytes(n))


def errname(e):
    return errno.errorcode.get(e.errnum, str(e.errnum)) if e.errnum else "no-errno"


def attempt(label, fn):
    try:
        r = fn()
        if isinstance(r, (bytes, bytearray)):
            out(label, "ok", len(r), digest(r))
        else:
            out(label, "ok")
    except nbd.Error as e:
        out(label, "error", errname(e))
        if h.aio_is_closed() or h.aio_is_dead():
            # libnbd's own errors on a dead handle would hide the server's later answers.
            out(label, "connection closed by the server:", e.string)
            raise SystemExit(1)


def flags_of(f):
    names = []
    if f & nbd.STATE_HOLE:
        names.append("hole")
    if f & nbd.STATE_ZERO:
        names.append("zero")
    return ",".join(names) or "data"


def block_status(label, offset, length, req_one=False, zero_bit_only=False, zero_bit_only_units=()):
    if not structured:
        out(label, "skipped: no structured replies")
        return
    extents = []

    def cb(metacontext, off, entries, err):
        if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        pos = off
        for i in range(0, len(entries), 2):
            fl = entries[i + 1] & nbd.STATE_ZERO if zero_bit_only else entries[i + 1]
            extents.append([pos, entries[i], fl])
            pos += entries[i]
        return 0

    try:
        h.block_status(length, offset, cb, nbd.CMD_FLAG_REQ_ONE if req_one else 0)
    except nbd.Error as e:
        out(label, "error", errname(e))
        return
    # A reply may stop short of the request (the client asks again), never start elsewhere.
    merged = []
    for pos, ln, fl in extents:
        if merged and merged[-1][2] == fl and merged[-1][0] + merged[-1][1] == pos:
            merged[-1][1] += ln
        else:
            merged.append([pos, ln, fl])
    if req_one:
        # REQ_ONE: exactly one extent, starting at offset; only its start and flags are
        # comparable (its length may be cut anywhere inside the first run of equal flags).
        first = extents[0] if extents else None
        out(label, "count", len(extents), "first", first and first[0], first and flags_of(first[2]))
        return
    # Compare whole 1 MiB units: the flags of each MiB, and "mixed" if a MiB has several.
    units = []
    for u in range(offset, offset + length, MiB):
        seen = set()
        for pos, ln, fl in merged:
            if pos < u + MiB and pos + ln > u:
                seen.add(flags_of(fl & nbd.STATE_ZERO if u in zero_bit_only_units else fl))
        units.append("/".join(sorted(seen)) if seen else "none")
    covered = merged[-1][0] + merged[-1][1] - offset if merged else 0
    out(label, "starts-at", merged[0][0] if merged else None, "covers-request", covered >= min(length, MiB), "units", ",".join(units))


# --- flags and sizes -------------------------------------------------------------------------
size = h.get_size()
out("size", size)
out("protocol", h.get_protocol())
out("structured", h.get_structured_replies_negotiated())
for name in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df",
             "can_multi_conn", "can_cache", "is_read_only", "is_rotational"]:
    out(name, getattr(h, name)())
out("meta base:allocation", h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION))
try:
    out("~export", repr(h.get_canonical_export_name()))
except nbd.Error as e:
    out("~export", "not advertised", errname(e))
for name, c in [("minimum", nbd.SIZE_MINIMUM), ("preferred", nbd.SIZE_PREFERRED), ("maximum", nbd.SIZE_MAXIMUM)]:
    out("~block-size", name, h.get_block_size(c))

# --- a fresh export reads as zeros -----------------------------------------------------------
attempt("read fresh 0+1M", lambda: h.pread(MiB, 0))
block_status("status fresh 0+8M", 0, 8 * MiB)

# --- writes, aligned and not, read back ------------------------------------------------------
h.pwrite(pattern(1, MiB), 1 * MiB)
attempt("read after write 1M+1M", lambda: h.pread(MiB, 1 * MiB))
h.pwrite(pattern(2, 3), 2 * MiB + 1)
attempt("read unaligned write 2M+0..8", lambda: h.pread(8, 2 * MiB))
h.pwrite(pattern(3, 70000), 3 * MiB - 5000, nbd.CMD_FLAG_FUA)
attempt("read fua write spanning 3M", lambda: h.pread(80000, 3 * MiB - 10000))
attempt("read one byte 1M+7", lambda: h.pread(1, MiB + 7))
if structured:
    attempt("read with DF 1M+64K", lambda: h.pread(64 * KiB, MiB, nbd.CMD_FLAG_DF))
attempt("flush", lambda: h.flush())
attempt("cache 1M+1M", lambda: h.cache(MiB, MiB))
block_status("status after writes 0+8M", 0, 8 * MiB)
block_status("status req_one at 1M", 1 * MiB, 4 * MiB, req_one=True)
block_status("status req_one at 0", 0, 4 * MiB, req_one=True)

# --- zeroes ----------------------------------------------------------------------------------
h.pwrite(pattern(4, 4 * MiB), 8 * MiB)
h.zero(MiB, 8 * MiB)
attempt("read after zero 8M+1M", lambda: h.pread(MiB, 8 * MiB))
h.zero(MiB, 9 * MiB, nbd.CMD_FLAG_NO_HOLE)
attempt("read after zero no_hole 9M+1M", lambda: h.pread(MiB, 9 * MiB))
h.zero(100, 10 * MiB + 50, nbd.CMD_FLAG_FUA)
attempt("read after small zero 10M+0..200", lambda: h.pread(200, 10 * MiB))
# FAST_ZERO may be refused with ENOTSUP (the spec lets a server that cannot zero faster than it
# writes say so); either answer is right, and on a never-written range (12M) both leave zeros.
try:
    h.zero(MiB, 12 * MiB, nbd.CMD_FLAG_FAST_ZERO)
    out("zero fast 12M+1M", "ok-or-ENOTSUP")
except nbd.Error as e:
    out("zero fast 12M+1M", "ok-or-ENOTSUP" if e.errnum == errno.ENOTSUP else "error " + errname(e))
attempt("read 12M+1M", lambda: h.pread(MiB, 12 * MiB))
attempt("read after zeroes 8M+5M", lambda: h.pread(5 * MiB, 8 * MiB))
# Zeroed units read as zero. After a NO_HOLE zero only the ZERO bit is compared: nbdkit memory
# frees zeroed pages whatever the flag (it has no allocation to keep), so HOLE is not comparable.
block_status("status zeroed 8M+1M", 8 * MiB, MiB)
block_status("status no_hole zero 9M+1M", 9 * MiB, MiB, zero_bit_only=True)

# --- trims -----------------------------------------------------------------------------------
h.pwrite(pattern(5, 4 * MiB), 16 * MiB)
h.trim(2 * MiB, 17 * MiB)
attempt("read after trim 17M+2M (must be zero or old data)", lambda: bytes(
    b"Z" if h.pread(2 * MiB, 17 * MiB) == bytes(2 * MiB) else b"?"))
attempt("read untrimmed neighbours 16M+1M", lambda: h.pread(MiB, 16 * MiB))
attempt("read untrimmed neighbours 19M+1M", lambda: h.pread(MiB, 19 * MiB))
attempt("trim fua 24M+1M", lambda: h.trim(MiB, 24 * MiB, nbd.CMD_FLAG_FUA))

def wait_all(cookies):
    # aio_command_completed retires a finished command (it raises on a failed one).
    pending = set(cookies)
    while pending:
        pending = {c for c in pending if not h.aio_command_completed(c)}
        if pending:
            h.poll(-1)


# --- many requests in flight, completed out of order ----------------------------------------
cookies = []
for i in range(64):
    buf = nbd.Buffer.from_bytearray(pattern(100 + i, 64 * KiB))
    cookies.append(h.aio_pwrite(buf, 32 * MiB + i * 64 * KiB))
wait_all(cookies)
attempt("read after 64 aio writes 32M+4M", lambda: h.pread(4 * MiB, 32 * MiB))
reads = [(i, nbd.Buffer(128 * KiB)) for i in range(32)]
rcookies = [h.aio_pread(b, 32 * MiB + i * 128 * KiB) for i, b in reads]
wait_all(rcookies)
whole = b"".join(bytes(b.to_bytearray()) for _, b in reads)
out("aio reads 32M+4M", len(whole), digest(whole))
attempt("read 32M max payload", lambda: h.pread(32 * MiB, 0))
# The NO_HOLE unit (9M) compares only its ZERO bit, as above.
block_status("status whole 0+64M", 0, size, zero_bit_only_units=(9 * MiB,))

# --- requests the server must refuse, session continues ---------------------------------------
attempt("read past end", lambda: h.pread(4096, size - 2048))
attempt("read starting at end", lambda: h.pread(1, size))
attempt("write past end", lambda: h.pwrite(bytearray(4096), size - 2048))
attempt("write starting at end", lambda: h.pwrite(bytearray(1), size))
attempt("zero past end", lambda: h.zero(MiB, size - 4096))
attempt("trim past end", lambda: h.trim(MiB, size - 4096))
attempt("cache past end", lambda: h.cache(MiB, size))
if structured:
    attempt("block status past end", lambda: h.block_status(MiB, size, lambda *a: 0))
attempt("read with unknown flag 0x40", lambda: h.pread(512, 0, 0x40))
attempt("write with unknown flag 0x40", lambda: h.pwrite(bytearray(512), 0, 0x40))
attempt("read with NO_HOLE (inapplicable)", lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE))
attempt("flush with FUA", lambda: h.flush(nbd.CMD_FLAG_FUA))
attempt("read after refusals 1M+1M", lambda: h.pread(MiB, 1 * MiB))
attempt("end of device write", lambda: h.pwrite(pattern(6, 4096), size - 4096))
attempt("end of device read", lambda: h.pread(4096, size - 4096))
# Last: an offset near 2^62 is well-framed, so EINVAL and the session goes on (not a disconnect).
attempt("read far past end", lambda: h.pread(512, 1 << 62))
attempt("read after far past end", lambda: h.pread(4096, size - 4096))

h.shutdown()
out("done")
