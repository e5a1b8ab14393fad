// patchflow cpu: OpenMP entry points that forward to libgomp.so.1 when it is installed and run
// serially when it is not (omp_shim.cc; prebuilt Linux binaries only, -DPF_OMP_SHIM).
#pragma once

namespace pf {

// Opens libgomp.so.1 (once; call before any kernel runs). False: none usable, the kernels run on
// one thread, and omp_note() says why and what to install.
bool omp_init();
const char* omp_note();

}  // namespace pf
