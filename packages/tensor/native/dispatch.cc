// patchflow cpu: runtime CPU-feature dispatch (dispatch.h). Compiled for the target's baseline, like
// bindings.cc. The build defines PF_HAVE_AVX2 / PF_HAVE_AVX512 when it compiled those variants
// (x86-64 only); the scalar variant is always there.
#include "dispatch.h"

#include <cstdlib>
#include <cstring>

namespace pf {
namespace scalar {
extern const KernelTable table;
}
#if PF_HAVE_AVX2
namespace avx2 {
extern const KernelTable table;
}
#endif
#if PF_HAVE_AVX512
namespace avx512 {
extern const KernelTable table;
}
#endif

namespace {

struct Variant {
  const char* name;
  const KernelTable* table;
  bool (*runs)();
};

#if defined(__x86_64__) || defined(__i386__)
// __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 register state (XCR0).
bool runs_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool runs_avx512() {
  __builtin_cpu_init();
  return runs_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
#endif
bool runs_always() { return true; }

const Variant kVariants[] = {
    {"scalar", &scalar::table, runs_always},
#if PF_HAVE_AVX2
    {"avx2", &avx2::table, runs_avx2},
#endif
#if PF_HAVE_AVX512
    {"avx512", &avx512::table, runs_avx512},
#endif
};

Dispatch choose() {
  Dispatch d;
  const Variant* best = &kVariants[0];
  for (const Variant& v : kVariants) {
    d.compiled.push_back(v.name);
    if (v.runs()) {
      d.supported.push_back(v.name);
      best = &v;  // kVariants is ordered from the baseline up
    }
  }
  d.table = best->table;
  const char* want = std::getenv("PATCHFLOW_SIMD");
  if (!want || !*want || std::strcmp(want, "auto") == 0) return d;
  for (const Variant& v : kVariants) {
    if (std::strcmp(want, v.name) != 0) continue;
    if (v.runs()) {
      d.table = v.table;
    } else {
      d.note = std::string("PATCHFLOW_SIMD=") + want + " ignored: this CPU does not support " + want + "; using " +
               best->name;
    }
    return d;
  }
  std::string names;
  for (const Variant& v : kVariants) names += (names.empty() ? "" : ", ") + std::string(v.name);
  d.note = std::string("PATCHFLOW_SIMD=") + want + " ignored: this binary has " + names + " (or auto); using " +
           best->name;
  return d;
}

}  // namespace

const Dispatch& select_kernels() {
  static const Dispatch d = choose();
  return d;
}

}  // namespace pf
