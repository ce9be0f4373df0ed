// SPDX-License-Identifier: Apache-2.0
#ifndef STARGZ_CBUILDINFO_H
#define STARGZ_CBUILDINFO_H

/// The version this build was made as (Package.swift: $STARGZ_VERSION, else the checkout's tag, else a dev version).
const char *stargz_build_version(void);
/// The commit this build was made from (Package.swift: $STARGZ_COMMIT, else git), "-dirty" when the tree had
/// changes, or "unknown" outside a checkout.
const char *stargz_build_commit(void);

#endif
