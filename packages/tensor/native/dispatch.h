// patchflow cpu: runtime CPU-feature dispatch. Picks the kernel table (kernel_table.h) of the best ISA
// variant that this binary contains and this CPU runs, or the one PATCHFLOW_SIMD names.
#pragma once
#include <string>
#include <vector>

#include "kernel_table.h"

namespace pf {

struct Dispatch {
  const KernelTable* table = nullptr;  // never null after select_kernels()
  std::vector<std::string> compiled;   // the variants in this binary, best last ("scalar", "avx2", "avx512")
  std::vector<std::string> supported;  // those of them this CPU (and OS) can run
  std::string note;                    // why the choice differs from PATCHFLOW_SIMD's ("" when it does not)
};

// Chooses once (reads PATCHFLOW_SIMD: unset/"auto" = the best supported; "scalar" | "avx2" | "avx512" =
// that variant when supported, else the best supported and a note saying why).
const Dispatch& select_kernels();

}  // namespace pf
