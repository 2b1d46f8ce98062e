//! zigstats: running statistics per temperature sensor, written in Zig
//! against docs/ABI.md (aegis-edge module ABI version 1) only.
//!
//! Subscribes to `sensor/+/temp`. Each reading (one CBOR number: major type
//! 0/1 integer, or a half/single/double float) updates the sensor's count,
//! min, max and mean, stored durably, and emits `stats/<id>` with the CBOR
//! map {"n": uint, "max": double, "min": double, "mean": double} (keys in
//! deterministic order: shorter first, then bytewise).
//!
//! State layout (one key per sensor, documented so later versions can read
//! it):
//!   key   = the sensor id bytes, when the id is 1..128 bytes long;
//!           otherwise 0xFF ++ id[0..119] ++ FNV-1a-64(id) (8 bytes LE), i.e.
//!           128 bytes (0xFF never occurs in UTF-8, so the two forms cannot
//!           collide). Long-id values carry the full id after the stats and
//!           a mismatch (hash collision) is refused with AEGIS_EINVAL.
//!   value = 32 bytes: count u64 LE, min f64 LE, max f64 LE, mean f64 LE
//!           (IEEE-754 binary64), followed by the full id for long ids.
//!
//! Build (see modules/build.py):
//!   zig build-exe zigstats.zig -target wasm32-freestanding -O ReleaseSmall
//!       -fno-entry -fstrip --stack 16384 --initial-memory=131072
//!       --export=aegis_start --export=aegis_alloc --export=aegis_event
//!       --export=aegis_stop -femit-bin=zigstats.wasm

// ---- imports (wasm module "aegis") --------------------------------------

extern "aegis" fn emit(topic: [*]const u8, topic_len: i32, data: [*]const u8, data_len: i32) i32;
extern "aegis" fn log(level: i32, text: [*]const u8, len: i32) void;
extern "aegis" fn state_get(key: [*]const u8, key_len: i32, buf: [*]u8, buf_cap: i32) i32;
extern "aegis" fn state_set(key: [*]const u8, key_len: i32, val: [*]const u8, val_len: i32) i32;

const AEGIS_OK: i32 = 0;
const AEGIS_ENOENT: i32 = -1;
const AEGIS_EINVAL: i32 = -3;
const AEGIS_E2BIG: i32 = -4;

const LOG_INFO: i32 = 1;

const TOPIC_MAX = 255;
const DATA_MAX = 65536;
const KEY_MAX = 128;

const TOPIC_PREFIX = "sensor/";
const TOPIC_SUFFIX = "/temp";
const EMIT_PREFIX = "stats/";

/// One static event buffer (max topic + default max data), as ABI.md allows.
var event_buf: [TOPIC_MAX + DATA_MAX]u8 = undefined;

// ---- small helpers (no std, no libc) --------------------------------------

fn copy(dst: []u8, src: []const u8) void {
    var i: usize = 0;
    while (i < src.len) : (i += 1) dst[i] = src[i];
}

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    var i: usize = 0;
    while (i < a.len) : (i += 1) if (a[i] != b[i]) return false;
    return true;
}

fn putU64le(dst: []u8, v: u64) void {
    var i: usize = 0;
    while (i < 8) : (i += 1) dst[i] = @truncate(v >> @intCast(8 * i));
}

fn getU64le(src: []const u8) u64 {
    var v: u64 = 0;
    var i: usize = 8;
    while (i > 0) {
        i -= 1;
        v = (v << 8) | src[i];
    }
    return v;
}

fn putF64le(dst: []u8, v: f64) void {
    putU64le(dst, @bitCast(v));
}

fn getF64le(src: []const u8) f64 {
    return @bitCast(getU64le(src));
}

fn fnv1a64(s: []const u8) u64 {
    var h: u64 = 0xcbf29ce484222325;
    for (s) |c| {
        h ^= c;
        h *%= 0x100000001b3;
    }
    return h;
}

// ---- CBOR ------------------------------------------------------------------

const DecodeError = error{Malformed};

/// Big-endian unsigned argument of `n` bytes following the initial byte.
fn readBe(data: []const u8, n: usize) DecodeError!u64 {
    if (data.len != 1 + n) return error.Malformed; // exactly one item, no trailing bytes
    var v: u64 = 0;
    var i: usize = 1;
    while (i <= n) : (i += 1) v = (v << 8) | data[i];
    return v;
}

/// IEEE-754 binary16 -> f64 (RFC 8949 Appendix D), exact.
fn halfToF64(h: u16) f64 {
    const exp: u32 = (h >> 10) & 0x1f;
    const mant: u32 = h & 0x3ff;
    var val: f64 = undefined;
    if (exp == 0) {
        val = @as(f64, @floatFromInt(mant)) * 0x1p-24; // subnormal
    } else if (exp != 31) {
        val = @as(f64, @floatFromInt(mant + 1024)) * ldexp1(@as(i32, @intCast(exp)) - 25);
    } else if (mant == 0) {
        val = inf;
    } else {
        val = nan;
    }
    return if (h & 0x8000 != 0) -val else val;
}

const inf: f64 = @bitCast(@as(u64, 0x7ff0000000000000));
const nan: f64 = @bitCast(@as(u64, 0x7ff8000000000000));

/// 2^e for the small exponent range binary16 needs (-24 .. 5).
fn ldexp1(e: i32) f64 {
    const bits: u64 = @as(u64, @intCast(e + 1023)) << 52;
    return @bitCast(bits);
}

/// Decode one CBOR number (the whole buffer must be exactly one item).
fn cborNumber(data: []const u8) DecodeError!f64 {
    if (data.len == 0) return error.Malformed;
    const ib = data[0];
    const major = ib >> 5;
    const ai = ib & 0x1f;
    switch (major) {
        0, 1 => {
            const arg: u64 = switch (ai) {
                0...23 => blk: {
                    if (data.len != 1) return error.Malformed;
                    break :blk ai;
                },
                24 => try readBe(data, 1),
                25 => try readBe(data, 2),
                26 => try readBe(data, 4),
                27 => try readBe(data, 8),
                else => return error.Malformed, // 28..30 reserved, 31 indefinite
            };
            const u: f64 = @floatFromInt(arg);
            // negative integer: -1 - arg
            return if (major == 0) u else -1.0 - u;
        },
        7 => {
            const v: f64 = switch (ai) {
                25 => halfToF64(@truncate(try readBe(data, 2))),
                26 => @floatCast(@as(f32, @bitCast(@as(u32, @truncate(try readBe(data, 4)))))),
                27 => @bitCast(try readBe(data, 8)),
                else => return error.Malformed, // simple values, true/false/null...
            };
            if (v != v) return error.Malformed; // NaN is not a reading
            return v;
        },
        else => return error.Malformed, // bytes, text, arrays, maps, tags
    }
}

/// Writes a CBOR text string head + bytes (short strings only, < 24).
fn cborText(out: []u8, pos: usize, s: []const u8) usize {
    out[pos] = 0x60 | @as(u8, @intCast(s.len));
    copy(out[pos + 1 ..], s);
    return pos + 1 + s.len;
}

/// Unsigned integer, shortest head.
fn cborUint(out: []u8, pos: usize, v: u64) usize {
    if (v < 24) {
        out[pos] = @intCast(v);
        return pos + 1;
    }
    var n: usize = undefined;
    var ai: u8 = undefined;
    if (v <= 0xff) {
        n = 1;
        ai = 24;
    } else if (v <= 0xffff) {
        n = 2;
        ai = 25;
    } else if (v <= 0xffffffff) {
        n = 4;
        ai = 26;
    } else {
        n = 8;
        ai = 27;
    }
    out[pos] = ai;
    var i: usize = 0;
    while (i < n) : (i += 1) out[pos + 1 + i] = @truncate(v >> @intCast(8 * (n - 1 - i)));
    return pos + 1 + n;
}

fn cborDouble(out: []u8, pos: usize, v: f64) usize {
    out[pos] = 0xfb;
    const bits: u64 = @bitCast(v);
    var i: usize = 0;
    while (i < 8) : (i += 1) out[pos + 1 + i] = @truncate(bits >> @intCast(8 * (7 - i)));
    return pos + 9;
}

// ---- stats -------------------------------------------------------------

const STATS_LEN = 32;
const LONG_ID_HEAD = KEY_MAX - 1 - 8; // 119

var key_buf: [KEY_MAX]u8 = undefined;
var val_buf: [STATS_LEN + TOPIC_MAX]u8 = undefined;
var topic_out: [TOPIC_MAX]u8 = undefined;
var data_out: [64]u8 = undefined;

fn makeKey(id: []const u8) []const u8 {
    if (id.len <= KEY_MAX) {
        copy(key_buf[0..], id);
        return key_buf[0..id.len];
    }
    key_buf[0] = 0xff;
    copy(key_buf[1..], id[0..LONG_ID_HEAD]);
    putU64le(key_buf[1 + LONG_ID_HEAD ..], fnv1a64(id));
    return key_buf[0..KEY_MAX];
}

fn handle(topic: []const u8, data: []const u8) i32 {
    // topic = sensor/<id>/temp (guaranteed by the subscription, checked anyway)
    if (topic.len <= TOPIC_PREFIX.len + TOPIC_SUFFIX.len) return AEGIS_EINVAL;
    if (!eql(topic[0..TOPIC_PREFIX.len], TOPIC_PREFIX)) return AEGIS_EINVAL;
    if (!eql(topic[topic.len - TOPIC_SUFFIX.len ..], TOPIC_SUFFIX)) return AEGIS_EINVAL;
    const id = topic[TOPIC_PREFIX.len .. topic.len - TOPIC_SUFFIX.len];
    if (EMIT_PREFIX.len + id.len > TOPIC_MAX) return AEGIS_EINVAL;

    const x = cborNumber(data) catch return AEGIS_EINVAL;

    const long = id.len > KEY_MAX;
    const key = makeKey(id);
    const val_len: usize = STATS_LEN + (if (long) id.len else 0);

    var n: u64 = 0;
    var mn: f64 = x;
    var mx: f64 = x;
    var mean: f64 = 0;
    const got = state_get(key.ptr, @intCast(key.len), &val_buf, @intCast(val_buf.len));
    if (got >= 0) {
        const g: usize = @intCast(got);
        if (g != val_len) return AEGIS_EINVAL; // unknown layout / collision
        if (long and !eql(val_buf[STATS_LEN..g], id)) return AEGIS_EINVAL;
        n = getU64le(val_buf[0..]);
        mn = getF64le(val_buf[8..]);
        mx = getF64le(val_buf[16..]);
        mean = getF64le(val_buf[24..]);
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    } else if (got != AEGIS_ENOENT) {
        return got;
    }
    n += 1;
    mean += (x - mean) / @as(f64, @floatFromInt(n));

    putU64le(val_buf[0..], n);
    putF64le(val_buf[8..], mn);
    putF64le(val_buf[16..], mx);
    putF64le(val_buf[24..], mean);
    if (long) copy(val_buf[STATS_LEN..], id);
    const rc = state_set(key.ptr, @intCast(key.len), &val_buf, @intCast(val_len));
    if (rc != AEGIS_OK) return rc;

    // stats/<id>
    copy(topic_out[0..], EMIT_PREFIX);
    copy(topic_out[EMIT_PREFIX.len..], id);
    const tl = EMIT_PREFIX.len + id.len;

    // {"n": n, "max": mx, "min": mn, "mean": mean}
    var p: usize = 0;
    data_out[p] = 0xa4;
    p += 1;
    p = cborText(&data_out, p, "n");
    p = cborUint(&data_out, p, n);
    p = cborText(&data_out, p, "max");
    p = cborDouble(&data_out, p, mx);
    p = cborText(&data_out, p, "min");
    p = cborDouble(&data_out, p, mn);
    p = cborText(&data_out, p, "mean");
    p = cborDouble(&data_out, p, mean);

    return emit(&topic_out, @intCast(tl), &data_out, @intCast(p));
}

// ---- exports ---------------------------------------------------------------

export fn aegis_start() i32 {
    const msg = "zigstats started";
    log(LOG_INFO, msg, msg.len);
    return AEGIS_OK;
}

export fn aegis_alloc(len: i32) ?[*]u8 {
    if (len < 0 or len > event_buf.len) return null; // 0: event dropped
    return &event_buf;
}

export fn aegis_event(topic: [*]const u8, topic_len: i32, data: [*]const u8, data_len: i32) i32 {
    if (topic_len < 0 or data_len < 0) return AEGIS_EINVAL;
    return handle(topic[0..@intCast(topic_len)], data[0..@intCast(data_len)]);
}

export fn aegis_stop() void {}
