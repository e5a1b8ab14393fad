/**
 * Kernels of the compiled WebGPU training step: pure generators `(params) => KernelSpec` with every
 * shape baked into the WGSL, a small runner, and a matmul benchmark / autotuner.
 */
export * from './kernel.js';
export * from './runner.js';
export * from './matmul.js';
