// placeholder until native kernels land
