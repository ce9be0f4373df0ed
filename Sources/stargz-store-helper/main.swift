// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

exit(Helper.main(Array(CommandLine.arguments.dropFirst())))
