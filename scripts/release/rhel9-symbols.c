// SPDX-License-Identifier: Apache-2.0
// Linked into the release executables only (scripts/release.sh, with lld and --wrap): it pins the few symbols
// the Swift runtime's static libraries take at a version newer than RHEL 9 has (glibc 2.34, libstdc++ from GCC 11:
// GLIBCXX_3.4.29) to the older version that every glibc and libstdc++ since then still exports.
//
//   hypot, hypotf   GLIBC_2.35 (the SVID error handling went away; results are the same) -> the base version
//                   (GLIBC_2.2.5 on x86_64, GLIBC_2.17 on aarch64)
//   std::condition_variable::wait(unique_lock<mutex>&)   GLIBCXX_3.4.30 (GCC 12) -> GLIBCXX_3.4.11
//
// --wrap=SYM sends every reference to SYM to __wrap_SYM, and the .symver aliases below are references to SYM at
// the old version. (gold wraps the versioned reference too, which would make each wrapper call itself: the
// release links with lld, which does not.) The test `ReleaseTests` reads the symbol versions of the result.

#if defined(__x86_64__)
#define GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define GLIBC_BASE "GLIBC_2.17"
#else
#error "no glibc base version known for this architecture"
#endif

__asm__(".symver stargz_hypot, hypot@" GLIBC_BASE);
double stargz_hypot(double, double);
__attribute__((visibility("hidden"))) double __wrap_hypot(double x, double y) { return stargz_hypot(x, y); }

__asm__(".symver stargz_hypotf, hypotf@" GLIBC_BASE);
float stargz_hypotf(float, float);
__attribute__((visibility("hidden"))) float __wrap_hypotf(float x, float y) { return stargz_hypotf(x, y); }

__asm__(".symver stargz_condvar_wait, _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
void stargz_condvar_wait(void *self, void *lock);
__attribute__((visibility("hidden"))) void __wrap__ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE(
    void *self, void *lock) {
    stargz_condvar_wait(self, lock);
}
