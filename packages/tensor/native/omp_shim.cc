// patchflow cpu: OpenMP without a hard dependency on libgomp, for the prebuilt Linux binaries.
//
// The kernels are compiled with GCC's -fopenmp, which turns their pragmas into calls to libgomp's
// entry points (GOMP_parallel, GOMP_loop_*, omp_get_thread_num, ...). A binary linked with
// libgomp.so.1 does not load at all where that library is missing (slim container images), and
// libgomp.a cannot be linked into a shared object (it uses local-exec TLS). So the prebuilt
// binaries do not link libgomp: this file defines the entry points the kernels call, and each one
// forwards to libgomp.so.1, opened with dlopen when the addon loads (pf_omp_init). Where there is
// no libgomp, every parallel region runs on the calling thread as a team of one (each loop whole),
// and info() says so. scripts/build-native.mjs checks that the linked binary calls no OpenMP entry
// point that is not defined here (another compiler version could emit others).
//
// Compiled for the target's baseline, only for prebuilt binaries (-DPF_OMP_SHIM); source builds
// link the compiler's OpenMP runtime as usual.
#include <dlfcn.h>

#include <string>

#include "omp_shim.h"

// Bind to the dlopen/dlsym versions every glibc has (2.34 moved them from libdl into libc under a
// new version; the old one stays), so that the binary keeps loading on glibc < 2.34.
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.17");
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
#endif

namespace {

struct Gomp {
  void (*parallel)(void (*)(void*), void*, unsigned, unsigned) = nullptr;
  void (*barrier)() = nullptr;
  bool (*dynamic_start)(long, long, long, long, long*, long*) = nullptr;
  bool (*dynamic_next)(long*, long*) = nullptr;
  void (*loop_end)() = nullptr;
  void (*loop_end_nowait)() = nullptr;
  int (*num_procs)() = nullptr;
  int (*num_threads)() = nullptr;
  int (*thread_num)() = nullptr;
};

Gomp g;  // all null: no libgomp, serial
bool g_loaded = false;
std::string g_note;

template <class F>
bool sym(void* h, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(h, name));
  return f != nullptr;
}

}  // namespace

namespace pf {

bool omp_init() {
  static bool tried = false;  // Init (main thread) calls it first
  if (tried) return g_loaded;
  tried = true;
  void* h = dlopen("libgomp.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    g_note =
        "libgomp.so.1 (GCC's OpenMP runtime) is not installed, so the native kernels run on one thread: apt-get install "
        "libgomp1 (Debian/Ubuntu), dnf install libgomp (Fedora/RHEL) for all cores";
    return false;
  }
  Gomp t;
  const char* missing = nullptr;
  if (!sym(h, "GOMP_parallel", t.parallel)) missing = "GOMP_parallel";
  else if (!sym(h, "GOMP_barrier", t.barrier)) missing = "GOMP_barrier";
  else if (!sym(h, "GOMP_loop_nonmonotonic_dynamic_start", t.dynamic_start)) missing = "GOMP_loop_nonmonotonic_dynamic_start";
  else if (!sym(h, "GOMP_loop_nonmonotonic_dynamic_next", t.dynamic_next)) missing = "GOMP_loop_nonmonotonic_dynamic_next";
  else if (!sym(h, "GOMP_loop_end", t.loop_end)) missing = "GOMP_loop_end";
  else if (!sym(h, "GOMP_loop_end_nowait", t.loop_end_nowait)) missing = "GOMP_loop_end_nowait";
  else if (!sym(h, "omp_get_num_procs", t.num_procs)) missing = "omp_get_num_procs";
  else if (!sym(h, "omp_get_num_threads", t.num_threads)) missing = "omp_get_num_threads";
  else if (!sym(h, "omp_get_thread_num", t.thread_num)) missing = "omp_get_thread_num";
  if (missing) {
    g_note = std::string("libgomp.so.1 is too old (no ") + missing +
             ", GCC >= 6 has it), so the native kernels run on one thread";
    return false;
  }
  g = t;
  g_loaded = true;
  return true;
}

const char* omp_note() { return g_note.c_str(); }

}  // namespace pf

// The entry points GCC's -fopenmp code calls (libgomp_g.h / omp.h), hidden: they bind inside this
// binary only, and never interpose on a libgomp that something else in the process uses.
#define PF_OMP_ENTRY extern "C" __attribute__((visibility("hidden")))

PF_OMP_ENTRY void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) {
  if (g.parallel) g.parallel(fn, data, num_threads, flags);
  else fn(data);
}

PF_OMP_ENTRY void GOMP_barrier() {
  if (g.barrier) g.barrier();
}

PF_OMP_ENTRY bool GOMP_loop_nonmonotonic_dynamic_start(long start, long end, long incr, long chunk, long* istart,
                                                       long* iend) {
  if (g.dynamic_start) return g.dynamic_start(start, end, incr, chunk, istart, iend);
  if (incr > 0 ? start >= end : start <= end) return false;
  *istart = start;  // a team of one takes every iteration at once
  *iend = end;
  return true;
}

PF_OMP_ENTRY bool GOMP_loop_nonmonotonic_dynamic_next(long* istart, long* iend) {
  if (g.dynamic_next) return g.dynamic_next(istart, iend);
  return false;
}

PF_OMP_ENTRY void GOMP_loop_end() {
  if (g.loop_end) g.loop_end();
}

PF_OMP_ENTRY void GOMP_loop_end_nowait() {
  if (g.loop_end_nowait) g.loop_end_nowait();
}

PF_OMP_ENTRY int omp_get_num_procs() { return g.num_procs ? g.num_procs() : 1; }
PF_OMP_ENTRY int omp_get_num_threads() { return g.num_threads ? g.num_threads() : 1; }
PF_OMP_ENTRY int omp_get_thread_num() { return g.thread_num ? g.thread_num() : 0; }
