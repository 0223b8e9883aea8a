#!/usr/bin/env python3
"""dsa_ctypes.py — a ctypes binding of libdsa's C ABI (dsa/dsa.h): dsa_tensor, the quantize op and
the thread's last error. Standard library only (no numpy).

    python3 dsa_ctypes.py /path/to/libdsa.so [seed]

quantizes a small random fp32 block to FP8 (e4m3 codes + power-of-two scales, SPEC §4.4), checks
the result in Python, shows a failing call's message, and exits non-zero on any mismatch.
"""
import ctypes
import math
import random
import struct
import sys

# ---- constants of dsa/dsa.h ------------------------------------------------------------------------
DSA_ABI_VERSION_MAJOR = 1
DSA_ABI_VERSION = (1 << 16) | 0
DSA_STATUS_OK = 0
DSA_STATUS_NULL_POINTER = 2
DSA_DTYPE_F32, DSA_DTYPE_BF16, DSA_DTYPE_E4M3, DSA_DTYPE_I32, DSA_DTYPE_U8 = 0, 1, 2, 3, 4
DSA_SCALE_FORMAT_UE8M0, DSA_SCALE_FORMAT_RAW = 0, 1
DSA_MAX_RANK = 4


class DsaTensor(ctypes.Structure):
    """dsa_tensor: a non-owning strided view (strides in elements; innermost stride 1)."""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.c_int64 * DSA_MAX_RANK),
        ("stride", ctypes.c_int64 * DSA_MAX_RANK),
    ]

    @classmethod
    def of(cls, buffer, dtype, shape):
        """A row-major view of a ctypes array (kept alive by the caller)."""
        t = cls()
        t.data = ctypes.cast(buffer, ctypes.c_void_p)
        t.dtype = dtype
        t.rank = len(shape)
        step = 1
        for d in reversed(range(len(shape))):
            t.shape[d] = shape[d]
            t.stride[d] = step
            step *= shape[d]
        return t


class DsaQuantizeParams(ctypes.Structure):
    """dsa_quantize_params: the versioned header first, then the fields of dsa::QuantizeParams."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("x", DsaTensor),        # [n, d] bf16 | f32, d % 128 == 0
        ("codes", DsaTensor),    # [n, d] e4m3, out
        ("scales", DsaTensor),   # [n, d / 128] f32, out
        ("scale_format", ctypes.c_int32),
    ]


class Dsa:
    """The loaded library with typed entry points."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        self.lib = lib
        lib.dsa_version.restype = ctypes.c_char_p
        lib.dsa_version.argtypes = []
        lib.dsa_abi_version.restype = ctypes.c_uint32
        lib.dsa_abi_version.argtypes = []
        lib.dsa_status_string.restype = ctypes.c_char_p
        lib.dsa_status_string.argtypes = [ctypes.c_int32]
        lib.dsa_last_error_message.restype = ctypes.c_char_p
        lib.dsa_last_error_message.argtypes = []
        qp = ctypes.POINTER(DsaQuantizeParams)
        lib.dsa_quantize_params_init.restype = ctypes.c_int32
        lib.dsa_quantize_params_init.argtypes = [qp]
        lib.dsa_quantize_supports.restype = ctypes.c_int32
        lib.dsa_quantize_supports.argtypes = [qp]
        lib.dsa_quantize_workspace_size.restype = ctypes.c_int32
        lib.dsa_quantize_workspace_size.argtypes = [qp, ctypes.POINTER(ctypes.c_size_t)]
        lib.dsa_quantize_run.restype = ctypes.c_int32
        # (params, workspace, workspace_bytes, stream): the stream is a void* (cudaStream_t or None)
        lib.dsa_quantize_run.argtypes = [qp, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        if lib.dsa_abi_version() >> 16 != DSA_ABI_VERSION_MAJOR:
            raise RuntimeError("libdsa ABI 0x%x, binding expects major %d" % (lib.dsa_abi_version(), DSA_ABI_VERSION_MAJOR))

    def version(self):
        return self.lib.dsa_version().decode()

    def last_error(self):
        return self.lib.dsa_last_error_message().decode()

    def check(self, status, what):
        if status != DSA_STATUS_OK:
            raise RuntimeError("%s: %s: %s" % (what, self.lib.dsa_status_string(status).decode(), self.last_error()))

    def quantize_params(self):
        p = DsaQuantizeParams()
        # Preset the header: the library then writes only this binding's prefix, even when it
        # is newer (has a longer struct) than this mirror.
        p.struct_size = ctypes.sizeof(p)
        p.abi_version = DSA_ABI_VERSION
        self.check(self.lib.dsa_quantize_params_init(ctypes.byref(p)), "dsa_quantize_params_init")
        return p

    def quantize(self, rows, cols, values, scale_format=DSA_SCALE_FORMAT_UE8M0):
        """FP8-quantizes a row-major list of floats; returns (codes: bytes, scales: list)."""
        x = (ctypes.c_float * (rows * cols))(*values)
        codes = (ctypes.c_uint8 * (rows * cols))()
        scales = (ctypes.c_float * (rows * cols // 128))()
        p = self.quantize_params()
        p.x = DsaTensor.of(x, DSA_DTYPE_F32, [rows, cols])
        p.codes = DsaTensor.of(codes, DSA_DTYPE_E4M3, [rows, cols])
        p.scales = DsaTensor.of(scales, DSA_DTYPE_F32, [rows, cols // 128])
        p.scale_format = scale_format
        self.check(self.lib.dsa_quantize_supports(ctypes.byref(p)), "dsa_quantize_supports")
        ws = ctypes.c_size_t(0)
        self.check(self.lib.dsa_quantize_workspace_size(ctypes.byref(p), ctypes.byref(ws)), "dsa_quantize_workspace_size")
        workspace = ctypes.create_string_buffer(ws.value) if ws.value else None
        self.check(self.lib.dsa_quantize_run(ctypes.byref(p), workspace, ws.value, None), "dsa_quantize_run")
        return bytes(codes), list(scales)


def e4m3_decode(c):
    """OCP e4m3fn (bias 7, no infinities), from the format definition."""
    s, e, m = c >> 7, (c >> 3) & 15, c & 7
    v = math.ldexp(m / 8.0, -6) if e == 0 else math.ldexp(1.0 + m / 8.0, e - 7)
    return -v if s else v


def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    dsa = Dsa(argv[1])
    seed = int(argv[2]) if len(argv) > 2 else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    rows, cols = 3, 256
    values = [f32(rng.gauss(0.0, 1.0) * 10.0 ** rng.randint(-3, 2)) for _ in range(rows * cols)]
    failures = 0

    assert ctypes.sizeof(DsaTensor) == 80 and DsaQuantizeParams.x.offset == 8, "layout"
    codes, scales = dsa.quantize(rows, cols, values)
    for r in range(rows):
        for b in range(cols // 128):
            s = scales[r * (cols // 128) + b]
            mant, _ = math.frexp(s)
            amax = max(abs(v) for v in values[r * cols + b * 128:r * cols + (b + 1) * 128])
            if not (mant == 0.5 and amax / 448 * (1 - 2 ** -22) <= s <= 2 * amax / 448 * (1 + 2 ** -22)):
                print("FAILED: scales[%d][%d] = %r for amax %r" % (r, b, s, amax))
                failures += 1
            for i in range(b * 128, (b + 1) * 128):
                c = codes[r * cols + i]
                v = values[r * cols + i]
                back = e4m3_decode(c) * s
                if (c & 0x7F) == 0x7F or abs(back - v) > abs(v) / 16 + math.ldexp(s, -10):
                    print("FAILED: codes[%d][%d] = 0x%02x -> %r, x = %r" % (r, i, c, back, v))
                    failures += 1

    # A failing call: the status says what kind, the thread's last error says which argument.
    p = dsa.quantize_params()
    status = dsa.lib.dsa_quantize_run(ctypes.byref(p), None, 0, None)
    message = dsa.last_error()
    if status != DSA_STATUS_NULL_POINTER or "x" not in message:
        print("FAILED: empty params gave status %d, message %r" % (status, message))
        failures += 1

    print("dsa %s via ctypes (seed %d): quantized %dx%d fp32, scales %s; empty params -> '%s'"
          % (dsa.version(), seed, rows, cols, sorted(set(scales))[:3], message))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
