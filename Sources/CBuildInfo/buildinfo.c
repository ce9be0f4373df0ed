// SPDX-License-Identifier: Apache-2.0
// The values come from Package.swift as -D definitions of this target only, so a new commit rebuilds this file
// and relinks, nothing else.
#include "CBuildInfo.h"

#ifndef STARGZ_VERSION
#define STARGZ_VERSION "0.0.0-unknown"
#endif
#ifndef STARGZ_COMMIT
#define STARGZ_COMMIT "unknown"
#endif

const char *stargz_build_version(void) { return STARGZ_VERSION; }
const char *stargz_build_commit(void) { return STARGZ_COMMIT; }
