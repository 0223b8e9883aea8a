/* dsa/dsa.h — the C ABI of libdsa.so: plain C99, also valid C++ (for ctypes, Rust, Go, C engines).
 *
 * Every op of the C++ API (dsa/params.hpp) has a versioned params struct and five calls:
 *
 *   dsa_<op>_params_init(p)                      fills struct_size, abi_version and the defaults
 *   dsa_<op>_supports(p)                         DSA_STATUS_OK or why not (see the last error)
 *   dsa_<op>_workspace_size(p, &bytes)           caller-owned scratch run() needs
 *   dsa_<op>_run(p, workspace, bytes, stream)    host pointers: CPU reference; device: CUDA
 *   dsa_<op>_run_reference(p, accum)             the CPU reference (DSA_ACCUM_F32 | _F64)
 *
 * Rules (docs/c_abi.md):
 *   - Types are fixed-width; enums are int32_t with the DSA_* values below (equal to the C++ enums);
 *     bool fields are uint8_t (0 = false); the stream is a `void*` (a cudaStream_t, or NULL).
 *   - Every struct starts with `uint32_t struct_size, abi_version`; initialise it first with
 *     DSA_PARAMS_INIT(op, &p) (or dsa_<op>_params_init(&p)). Fields are only ever appended. The library reads the prefix the caller declared in
 *     struct_size and defaults the rest. struct_size must cover at least every dsa_tensor field of
 *     the struct (the scalars after the last tensor may be left out); a different ABI major
 *     version is rejected.
 *   - Every call returns a dsa_status; on failure dsa_last_error_message() holds a message (per
 *     thread) naming the op, the argument, its value and the rule. No call throws or aborts.
 */
#ifndef DSA_DSA_H_
#define DSA_DSA_H_

#include <stddef.h>
#include <stdint.h>

#ifndef DSA_API
#if defined(_WIN32)
#define DSA_API __declspec(dllexport)
#else
#define DSA_API __attribute__((visibility("default")))
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- versions ------------------------------------------------------------------------------ */

/* ABI version: major << 16 | minor. A struct whose abi_version has another major is rejected;
 * a newer minor only appends fields. */
#define DSA_ABI_VERSION_MAJOR 1
#define DSA_ABI_VERSION_MINOR 3  /* 1.1: dsa_indexer_bwd_params gained dq_post, dk_post, dw_post;
                                    1.2: the fused dsa_indexer_topk op;
                                    1.3: dsa_sparse_mla_decode_params gained num_splits */
#define DSA_ABI_VERSION ((uint32_t)((DSA_ABI_VERSION_MAJOR << 16) | DSA_ABI_VERSION_MINOR))

/* ---- status codes (dsa::StatusCode) -------------------------------------------------------- */

typedef int32_t dsa_status;
#define DSA_STATUS_OK 0
#define DSA_STATUS_INVALID_ARGUMENT 1
#define DSA_STATUS_NULL_POINTER 2
#define DSA_STATUS_MISALIGNED 3
#define DSA_STATUS_UNSUPPORTED_SHAPE 4
#define DSA_STATUS_UNSUPPORTED_DTYPE 5
#define DSA_STATUS_UNSUPPORTED_ARCH 6
#define DSA_STATUS_WORKSPACE_TOO_SMALL 7
#define DSA_STATUS_NOT_BUILT_WITH_CUDA 8
#define DSA_STATUS_NOT_IMPLEMENTED 9
#define DSA_STATUS_CUDA_ERROR 10
#define DSA_STATUS_INTERNAL 11

/* ---- enums (values equal the C++ enums of dsa/types.hpp) ----------------------------------- */

typedef int32_t dsa_dtype; /* dsa::DType */
#define DSA_DTYPE_INVALID (-1)
#define DSA_DTYPE_F32 0
#define DSA_DTYPE_BF16 1
#define DSA_DTYPE_E4M3 2 /* OCP float8 e4m3fn */
#define DSA_DTYPE_I32 3
#define DSA_DTYPE_U8 4
#define DSA_DTYPE_F64 5

typedef int32_t dsa_scale_format; /* dsa::ScaleFormat */
#define DSA_SCALE_FORMAT_UE8M0 0   /* power-of-two scales stored as fp32 (default) */
#define DSA_SCALE_FORMAT_RAW 1

typedef int32_t dsa_lse_base; /* dsa::LseBase */
#define DSA_LSE_BASE_NATURAL 0
#define DSA_LSE_BASE_BASE2 1

typedef int32_t dsa_rope_style; /* dsa::RopeStyle */
#define DSA_ROPE_STYLE_NON_INTERLEAVED 0
#define DSA_ROPE_STYLE_INTERLEAVED 1

typedef int32_t dsa_indexer_mode; /* dsa::IndexerMode */
#define DSA_INDEXER_MODE_FP8 0
#define DSA_INDEXER_MODE_EXACT 1

typedef int32_t dsa_index_domain; /* dsa::IndexDomain */
#define DSA_INDEX_DOMAIN_ABSOLUTE 0
#define DSA_INDEX_DOMAIN_RELATIVE 1
#define DSA_INDEX_DOMAIN_PAGED_SLOT 2

typedef int32_t dsa_mla_cache_format; /* dsa::MlaCacheFormat */
#define DSA_MLA_CACHE_FORMAT_FP8 0
#define DSA_MLA_CACHE_FORMAT_BF16 1

typedef int32_t dsa_accum; /* dsa::Accum */
#define DSA_ACCUM_F32 0
#define DSA_ACCUM_F64 1

/* ---- tensors ------------------------------------------------------------------------------- */

#define DSA_MAX_RANK 4

/* Non-owning strided view; same layout as dsa::TensorView (80 bytes on LP64). Strides count
 * elements; the innermost stride is 1. All zero ("absent") turns an optional argument off. */
typedef struct dsa_tensor {
  void* data;
  dsa_dtype dtype;
  int32_t rank;
  int64_t shape[DSA_MAX_RANK];
  int64_t stride[DSA_MAX_RANK];
} dsa_tensor;

/* ---- params: one struct per op, fields in the order of dsa/params.hpp ---------------------- */

typedef struct dsa_rope_table_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor cos;                /* [max_pos, rope_dim / 2] f32, out */
  dsa_tensor sin;                /* [max_pos, rope_dim / 2] f32, out */
  int32_t rope_dim;              /* 64 */
  float base;                    /* 10000 */
  float yarn_factor;             /* 40; 1 disables YaRN */
  int64_t original_max_position; /* 4096 */
  float beta_fast;               /* 32 */
  float beta_slow;               /* 1 */
} dsa_rope_table_params;

typedef struct dsa_rope_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor x;           /* [n, heads, d] bf16 */
  dsa_tensor out;         /* [n, heads, d] bf16; may be x */
  dsa_tensor positions;   /* [n] i32 */
  dsa_tensor cos;         /* [max_pos, rope_dim / 2] f32 */
  dsa_tensor sin;         /* [max_pos, rope_dim / 2] f32 */
  dsa_rope_style style;   /* DSA_ROPE_STYLE_NON_INTERLEAVED */
  int32_t rope_offset;    /* 0 */
  int32_t rope_dim;       /* 64 */
  uint8_t inverse;        /* 0 */
} dsa_rope_params;

typedef struct dsa_hadamard_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor x;   /* [n, 128] bf16 */
  dsa_tensor out; /* [n, 128] bf16; may be x */
} dsa_hadamard_params;

typedef struct dsa_quantize_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor x;                  /* [n, d] bf16 | f32, d % 128 == 0 */
  dsa_tensor codes;              /* [n, d] e4m3, out */
  dsa_tensor scales;             /* [n, d / 128] f32, out */
  dsa_scale_format scale_format; /* DSA_SCALE_FORMAT_UE8M0 */
} dsa_quantize_params;

typedef struct dsa_dequantize_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor codes;  /* [n, d] e4m3 */
  dsa_tensor scales; /* [n, d / 128] f32 */
  dsa_tensor out;    /* [n, d] bf16 | f32, out */
} dsa_dequantize_params;

typedef struct dsa_indexer_prep_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;                  /* [T, h_idx, 128] bf16, optional */
  dsa_tensor weights;            /* [T, h_idx] f32, with q */
  dsa_tensor k;                  /* [T, 128] bf16, optional */
  dsa_tensor positions;          /* [T] i32 */
  dsa_tensor rope_cos;           /* [max_pos, 32] f32 */
  dsa_tensor rope_sin;           /* [max_pos, 32] f32 */
  dsa_indexer_mode mode;         /* DSA_INDEXER_MODE_FP8 */
  uint8_t hadamard;              /* 1 */
  dsa_scale_format scale_format; /* DSA_SCALE_FORMAT_UE8M0 */
  dsa_tensor q_out;              /* [T, h_idx, 128] e4m3 | bf16, out */
  dsa_tensor weights_out;        /* [T, h_idx] f32, out */
  dsa_tensor k_out;              /* [T, 128] e4m3 | bf16, out, optional */
  dsa_tensor k_scale_out;        /* [T] f32, out */
  dsa_tensor k_cache;            /* [num_blocks, page_bytes] u8, optional */
  dsa_tensor slot_mapping;       /* [T] i32, with k_cache */
  int32_t page_block_size;       /* 64 */
} dsa_indexer_prep_params;

typedef struct dsa_indexer_logits_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;         /* [s_q, h_idx, d_idx] e4m3 | bf16 | f32 */
  dsa_tensor k;         /* [s_kv, d_idx] e4m3 | bf16 | f32 */
  dsa_tensor k_scale;   /* [s_kv] f32, FP8 mode only */
  dsa_tensor weights;   /* [s_q, h_idx] f32 */
  dsa_tensor ks;        /* [s_q] i32 */
  dsa_tensor ke;        /* [s_q] i32 */
  dsa_tensor logits;    /* [s_q, s_kv] f32, out */
  uint8_t clean_logits; /* 1 */
} dsa_indexer_logits_params;

typedef struct dsa_indexer_paged_logits_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;            /* [b, next_n, h_idx, d_idx] e4m3 */
  dsa_tensor k_cache;      /* [num_blocks, page_bytes] u8 */
  dsa_tensor weights;      /* [b * next_n, h_idx] f32 */
  dsa_tensor context_lens; /* [b, next_n] or [b] i32 */
  dsa_tensor block_table;  /* [b, max_blocks] i32 */
  dsa_tensor logits;       /* [b * next_n, max_context_len] f32, out */
  int32_t page_block_size; /* 64 */
} dsa_indexer_paged_logits_params;

typedef struct dsa_topk_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor scores;       /* [rows, cols] f32 */
  dsa_tensor ks;           /* [rows] i32, optional */
  dsa_tensor ke;           /* [rows] i32, optional */
  dsa_tensor indices;      /* [rows, k] i32, out */
  dsa_tensor out_scores;   /* [rows, k] f32, out, optional */
  dsa_tensor k_eff;        /* [rows] i32, out, optional */
  dsa_index_domain domain; /* DSA_INDEX_DOMAIN_ABSOLUTE */
  dsa_tensor block_table;  /* [b, max_blocks] i32, for DSA_INDEX_DOMAIN_PAGED_SLOT */
  int32_t rows_per_batch;  /* 1 */
  int32_t page_block_size; /* 64 */
  uint8_t sorted;          /* 1 */
} dsa_topk_params;

typedef struct dsa_mla_cache_write_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor kv;                 /* [n, 576] bf16 */
  dsa_tensor slot_mapping;       /* [n] i32; negative = skip */
  dsa_tensor cache;              /* [num_blocks, P, 656] u8 | [num_blocks, P, 576] bf16 */
  dsa_scale_format scale_format; /* DSA_SCALE_FORMAT_UE8M0 */
} dsa_mla_cache_write_params;

typedef struct dsa_sparse_mla_fwd_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;           /* [s_q, h_q, d_qk] bf16 | f32 */
  dsa_tensor kv;          /* [s_kv, d_qk] bf16 | f32 */
  dsa_tensor indices;     /* [s_q, topk] i32 */
  dsa_tensor topk_length; /* [s_q] i32, optional */
  dsa_tensor attn_sink;   /* [h_q] f32, optional */
  dsa_tensor out;         /* [s_q, h_q, d_v] bf16 | f32, out */
  dsa_tensor lse;         /* [s_q, h_q] f32, out */
  dsa_tensor max_logits;  /* [s_q, h_q] f32, out, optional */
  float sm_scale;         /* 0: required (> 0) */
  dsa_lse_base lse_base;  /* DSA_LSE_BASE_NATURAL */
} dsa_sparse_mla_fwd_params;

typedef struct dsa_sparse_mla_decode_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;           /* [b, s_q, h_q, 576] bf16 */
  dsa_tensor cache;       /* [num_blocks, P, 656] u8 | [num_blocks, P, 576] bf16 */
  dsa_tensor indices;     /* [b, s_q, topk] i32 */
  dsa_tensor topk_length; /* [b] i32, optional */
  dsa_tensor attn_sink;   /* [h_q] f32, optional */
  dsa_tensor out;         /* [b, s_q, h_q, 512] bf16 | f32, out */
  dsa_tensor lse;         /* [b, s_q, h_q] f32, out */
  float sm_scale;         /* 0: required (> 0) */
  dsa_lse_base lse_base;  /* DSA_LSE_BASE_NATURAL */
  int32_t num_splits;     /* ABI 1.3; 1: never split, batch-invariant (also for an older caller's
                             shorter struct); n >= 2: n splits; 0: automatic (bits depend on b) */
} dsa_sparse_mla_decode_params;

typedef struct dsa_dense_mla_fwd_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;          /* [s_q, h_q, d_qk] bf16 | f32 */
  dsa_tensor kv;         /* [s_kv, d_qk] bf16 | f32 */
  dsa_tensor ks;         /* [s_q] i32 */
  dsa_tensor ke;         /* [s_q] i32 */
  dsa_tensor out;        /* [s_q, h_q, d_v] bf16 | f32, out */
  dsa_tensor lse;        /* [s_q, h_q] f32, out */
  dsa_tensor max_logits; /* [s_q, h_q] f32, out, optional */
  float sm_scale;        /* 0: required (> 0) */
  dsa_lse_base lse_base; /* DSA_LSE_BASE_NATURAL */
} dsa_dense_mla_fwd_params;

/* ABI 1.2: indexer_logits → topk fused, without the [s_q, s_kv] logits (scratch: workspace). */
typedef struct dsa_indexer_topk_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;            /* [s_q, h_idx, d_idx] e4m3 | bf16 | f32 */
  dsa_tensor k;            /* [s_kv, d_idx] e4m3 | bf16 | f32 */
  dsa_tensor k_scale;      /* [s_kv] f32, FP8 mode only */
  dsa_tensor weights;      /* [s_q, h_idx] f32 */
  dsa_tensor ks;           /* [s_q] i32 */
  dsa_tensor ke;           /* [s_q] i32 */
  dsa_tensor indices;      /* [s_q, k] i32, out */
  dsa_tensor out_scores;   /* [s_q, k] f32, out, optional */
  dsa_tensor k_eff;        /* [s_q] i32, out, optional */
  dsa_index_domain domain; /* DSA_INDEX_DOMAIN_ABSOLUTE (or _RELATIVE; paged slots are rejected) */
  uint8_t sorted;          /* 1 */
  int32_t chunk_rows;      /* 0: streaming where available, else automatic chunks; > 0: chunk rows */
} dsa_indexer_topk_params;

/* ---- library ------------------------------------------------------------------------------- */

DSA_API const char* dsa_version(void);     /* "MAJOR.MINOR.PATCH" of the loaded library */
DSA_API uint32_t dsa_abi_version(void);    /* DSA_ABI_VERSION of the loaded library */
DSA_API const char* dsa_status_string(dsa_status status); /* "null pointer", ... */
/* The message of the last failing call on this thread ("" if none). Valid until the thread's
 * next failing call. */
DSA_API const char* dsa_last_error_message(void);

/* ---- ops ----------------------------------------------------------------------------------- */

#define DSA_DECLARE_C_OP(op)                                                                    \
  DSA_API dsa_status dsa_##op##_params_init(dsa_##op##_params* params);                         \
  DSA_API dsa_status dsa_##op##_supports(const dsa_##op##_params* params);                      \
  DSA_API dsa_status dsa_##op##_workspace_size(const dsa_##op##_params* params, size_t* bytes); \
  DSA_API dsa_status dsa_##op##_run(const dsa_##op##_params* params, void* workspace,           \
                                    size_t workspace_bytes, void* stream);                      \
  DSA_API dsa_status dsa_##op##_run_reference(const dsa_##op##_params* params, dsa_accum accum);

DSA_DECLARE_C_OP(rope_table)
DSA_DECLARE_C_OP(rope)
DSA_DECLARE_C_OP(hadamard)
DSA_DECLARE_C_OP(quantize)
DSA_DECLARE_C_OP(dequantize)
DSA_DECLARE_C_OP(indexer_prep)
DSA_DECLARE_C_OP(indexer_logits)
DSA_DECLARE_C_OP(indexer_paged_logits)
DSA_DECLARE_C_OP(topk)
DSA_DECLARE_C_OP(mla_cache_write)
DSA_DECLARE_C_OP(sparse_mla_fwd)
DSA_DECLARE_C_OP(sparse_mla_decode)
DSA_DECLARE_C_OP(dense_mla_fwd)
DSA_DECLARE_C_OP(indexer_topk) /* ABI 1.2 */

/* dsa_<op>_params_init(p) writes the header and the C++ defaults. When p->abi_version already has
 * this major version and p->struct_size >= 8, that size is the caller's struct and only that
 * prefix is written (safe when the library is newer than the caller's header); otherwise
 * sizeof(the library's struct) bytes are written. DSA_PARAMS_INIT presets the header from the
 * header you compile against: prefer it. */
#define DSA_PARAMS_INIT(op, p)                                                           \
  ((p)->struct_size = (uint32_t)sizeof(*(p)), (p)->abi_version = DSA_ABI_VERSION, \
   dsa_##op##_params_init(p))

#ifdef __cplusplus
} /* extern "C" */
#endif

/* The training ops' C ABI (sparse MLA backward, indexer backward, losses). */
#include "dsa/dsa_training.h"

#endif /* DSA_DSA_H_ */
