/* examples/c_abi — calling libdsa from C: FP8 block quantization and back (SPEC §4.4).
 *
 *   1. DSA_PARAMS_INIT(op, &p) fills struct_size, abi_version and the defaults;
 *   2. describe each tensor with a dsa_tensor (pointer, dtype, shape, element strides);
 *   3. dsa_<op>_run(); on failure dsa_last_error_message() says which argument and why.
 */
#include <dsa/dsa.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { ROWS = 4, COLS = 512 };

static dsa_tensor matrix(void* data, dsa_dtype dtype, int64_t rows, int64_t cols) {
  dsa_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.rank = 2;
  t.shape[0] = rows;
  t.shape[1] = cols;
  t.stride[0] = cols; /* row-major, in elements */
  t.stride[1] = 1;
  return t;
}

static int check(dsa_status status, const char* what) {
  if (status == DSA_STATUS_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, dsa_status_string(status), dsa_last_error_message());
  return 1;
}

int main(void) {
  static float x[ROWS][COLS], back[ROWS][COLS];
  static uint8_t codes[ROWS][COLS];          /* e4m3 */
  static float scales[ROWS][COLS / 128];     /* one power-of-two scale per block of 128 */
  dsa_quantize_params q;
  dsa_dequantize_params dq;
  double max_rel = 0.0;
  int r, i;

  if (dsa_abi_version() >> 16 != DSA_ABI_VERSION_MAJOR) {
    fprintf(stderr, "libdsa ABI 0x%x does not match the header's 0x%x\n", (unsigned)dsa_abi_version(),
            (unsigned)DSA_ABI_VERSION);
    return 1;
  }
  for (r = 0; r < ROWS; ++r)
    for (i = 0; i < COLS; ++i) x[r][i] = (float)(sin(0.37 * i + r) * pow(10.0, r - 2));

  if (check(DSA_PARAMS_INIT(quantize, &q), "dsa_quantize_params_init")) return 1;
  q.x = matrix(x, DSA_DTYPE_F32, ROWS, COLS);
  q.codes = matrix(codes, DSA_DTYPE_E4M3, ROWS, COLS);
  q.scales = matrix(scales, DSA_DTYPE_F32, ROWS, COLS / 128);
  q.scale_format = DSA_SCALE_FORMAT_UE8M0;
  if (check(dsa_quantize_run(&q, NULL, 0, NULL), "dsa_quantize_run")) return 1;

  if (check(DSA_PARAMS_INIT(dequantize, &dq), "dsa_dequantize_params_init")) return 1;
  dq.codes = q.codes;
  dq.scales = q.scales;
  dq.out = matrix(back, DSA_DTYPE_F32, ROWS, COLS);
  if (check(dsa_dequantize_run(&dq, NULL, 0, NULL), "dsa_dequantize_run")) return 1;

  for (r = 0; r < ROWS; ++r)
    for (i = 0; i < COLS; ++i) {
      const double err = fabs((double)back[r][i] - x[r][i]) / (fabs(x[r][i]) + 1e-3 * pow(10.0, r - 2));
      if (err > max_rel) max_rel = err;
    }
  printf("dsa %s (ABI 0x%x): quantize + dequantize of %dx%d fp32 through the C ABI, max rel error %.4f\n",
         dsa_version(), (unsigned)dsa_abi_version(), ROWS, COLS, max_rel);
  /* e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normal codes (small values: subnormal). */
  return max_rel <= 0.0625 ? 0 : 1;
}
