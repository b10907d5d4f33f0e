// The record layout of Q4_1 and Q8_0 rows repacked four at a time, in one place: xk_repack_x4
// writes it, gemm_body.h's block_at and gemv_x4.c's kernels read it (included, not compiled alone).
//
// Block b of rows 4g … 4g+3 is one record: the four rows' heads (Q4_1: (d, m), 4 bytes; Q8_0: d,
// 2 bytes), then the four rows' quantized values (Q4_1: 16 nibble bytes; Q8_0: 32 bytes) in row
// order. Q4_1: 16 + 4·16 = 80 bytes; Q8_0: 8 + 4·32 = 136 — four of the file's blocks.
#ifndef XERO_X4_LAYOUT_H
#define XERO_X4_LAYOUT_H
#include "xero_kernels.h"

#define XK_X4_Q4_1_HEAD 4
#define XK_X4_Q4_1_VALUES 16
#define XK_X4_Q8_0_HEAD 2
#define XK_X4_Q8_0_VALUES 32
#define XK_X4_Q4_1_RECORD (4 * (XK_X4_Q4_1_HEAD + XK_X4_Q4_1_VALUES))
#define XK_X4_Q8_0_RECORD (4 * (XK_X4_Q8_0_HEAD + XK_X4_Q8_0_VALUES))

static inline int x4_head_bytes(int type) { return type == XK_Q4_1 ? XK_X4_Q4_1_HEAD : XK_X4_Q8_0_HEAD; }
static inline int x4_value_bytes(int type) { return type == XK_Q4_1 ? XK_X4_Q4_1_VALUES : XK_X4_Q8_0_VALUES; }
static inline int x4_record_bytes(int type) { return 4 * (x4_head_bytes(type) + x4_value_bytes(type)); }
// Offsets inside a record of row r's (0–3) head and values.
static inline int x4_head_at(int type, int r) { return x4_head_bytes(type) * r; }
static inline int x4_values_at(int type, int r) { return 4 * x4_head_bytes(type) + x4_value_bytes(type) * r; }

#endif
