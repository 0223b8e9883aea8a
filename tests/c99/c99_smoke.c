/* tests/c99/c99_smoke.c — dsa/dsa.h compiles as C99 (-std=c99 -pedantic-errors -Wall -Werror) and
 * one real op runs through the C ABI: block-128 FP8 quantization of a small random block
 * (SPEC §4.4, ue8m0 scales). Exit 0 on success; prints the failure otherwise. */
#include <dsa/dsa.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 3
#define D 256

static int failures = 0;
#define EXPECT(cond, ...)                               \
  do {                                                  \
    if (!(cond)) {                                      \
      ++failures;                                       \
      fprintf(stderr, "FAILED %s: ", #cond);            \
      fprintf(stderr, __VA_ARGS__);                     \
      fprintf(stderr, "\n");                            \
    }                                                   \
  } while (0)

static uint64_t rng_state;
static double uniform01(void) { /* xorshift64* → [0, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* OCP e4m3fn decode, written here from the format definition (bias 7, no infinities). */
static double e4m3_decode(uint8_t c) {
  int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
  return s ? -v : v;
}

static dsa_tensor view2(void* data, dsa_dtype dtype, int64_t rows, int64_t cols) {
  dsa_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.rank = 2;
  t.shape[0] = rows;
  t.shape[1] = cols;
  t.stride[0] = cols;
  t.stride[1] = 1;
  return t;
}

int main(int argc, char** argv) {
  static float x[N][D];
  static uint8_t codes[N][D];
  static float scales[N][D / 128];
  dsa_quantize_params p;
  dsa_status st;
  int r, i;

  /* Fresh data every run; `c99_smoke SEED` reproduces one. */
  rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) : 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
  if (rng_state == 0) rng_state = 1;
  printf("seed %llu (rerun: c99_smoke SEED), dsa %s, ABI 0x%x (header 0x%x)\n", (unsigned long long)rng_state, dsa_version(),
         (unsigned)dsa_abi_version(), (unsigned)DSA_ABI_VERSION);
  EXPECT(dsa_abi_version() == DSA_ABI_VERSION, "library ABI 0x%x", (unsigned)dsa_abi_version());
  EXPECT(strlen(dsa_version()) >= 5, "version '%s'", dsa_version());

  for (r = 0; r < N; ++r)
    for (i = 0; i < D; ++i) /* blocks of very different magnitudes, never constant */
      x[r][i] = (float)((uniform01() - 0.5) * ldexp(1.0, (int)(r * 7 + (i / 128) * 3) - 8));
  memset(codes, 0xFF, sizeof codes);  /* poison: NaN codes */
  memset(scales, 0xFF, sizeof scales);

  st = dsa_quantize_params_init(&p);
  EXPECT(st == DSA_STATUS_OK, "params_init: %s", dsa_status_string(st));
  EXPECT(p.struct_size == sizeof p && p.abi_version == DSA_ABI_VERSION, "header %u %u",
         (unsigned)p.struct_size, (unsigned)p.abi_version);
  EXPECT(p.scale_format == DSA_SCALE_FORMAT_UE8M0, "default scale_format %d", (int)p.scale_format);
  p.x = view2(x, DSA_DTYPE_F32, N, D);
  p.codes = view2(codes, DSA_DTYPE_E4M3, N, D);
  p.scales = view2(scales, DSA_DTYPE_F32, N, D / 128);

  st = dsa_quantize_run(&p, NULL, 0, NULL);
  EXPECT(st == DSA_STATUS_OK, "run: %s: %s", dsa_status_string(st), dsa_last_error_message());

  for (r = 0; r < N; ++r)
    for (i = 0; i < D / 128; ++i) {
      const double s = scales[r][i];
      int e;
      double amax = 0.0;
      int k;
      EXPECT(isfinite(s) && s > 0 && frexp(s, &e) == 0.5, "scales[%d][%d] = %g is not a power of two", r, i, s);
      for (k = 0; k < 128; ++k) {
        const double v = fabs(x[r][i * 128 + k]);
        if (v > amax) amax = v;
      }
      /* s = 2^ceil(log2 fl32(amax * fl32(1/448))): within a rounding of [amax/448, 2 amax/448) */
      EXPECT(s >= amax / 448.0 * (1.0 - 0x1p-22) && s <= amax / 448.0 * 2.0 * (1.0 + 0x1p-22), "scales[%d][%d] = %g for amax %g", r, i, s, amax);
    }
  for (r = 0; r < N; ++r)
    for (i = 0; i < D; ++i) {
      const uint8_t c = codes[r][i];
      const double s = scales[r][i / 128];
      const double back = e4m3_decode(c) * s, ref = x[r][i];
      EXPECT((c & 0x7F) != 0x7F, "codes[%d][%d] = 0x%02x is NaN", r, i, c);
      EXPECT(isfinite(back) && fabs(back - ref) <= fabs(ref) / 16.0 + ldexp(s, -10),
             "codes[%d][%d]: %g * %g = %g vs x = %g", r, i, e4m3_decode(c), s, back, ref);
    }

  /* A failing call through the C ABI names the argument in the thread's last error. */
  p.codes.data = NULL;
  st = dsa_quantize_run(&p, NULL, 0, NULL);
  EXPECT(st == DSA_STATUS_NULL_POINTER, "null codes: %s", dsa_status_string(st));
  EXPECT(strstr(dsa_last_error_message(), "codes") != NULL, "message '%s'", dsa_last_error_message());

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("c99 smoke: quantize of %dx%d through the C ABI ok\n", N, D);
  return 0;
}
