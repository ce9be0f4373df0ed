// SPDX-License-Identifier: Apache-2.0
#ifndef CZSTD_SHIM_H
#define CZSTD_SHIM_H
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
static inline size_t CZstd_contentSizeUnknown(void) { return (size_t)ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long CZstd_contentSizeError(void) { return ZSTD_CONTENTSIZE_ERROR; }
#endif
