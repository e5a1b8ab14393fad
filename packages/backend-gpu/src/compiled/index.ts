/**
 * Kernels of the compiled WebGPU training step: pure generators `(params) => KernelSpec` with every
 * shape baked into the WGSL, a small runner, and a matmul benchmark / autotuner.
 */
export * from './kernel.js';
export * from './runner.js';
export * from './matmul.js';
export * from './elementwise.js';
export * from './norm.js';
export * from './loss.js';
export * from './embedding.js';
export * from './attention.js';
export * from './blocksparse.js';
export * from './optimizer.js';
export * from './bench.js';
export * from './bench-f16.js';
export * from './matmul-sgmat.js';
export * from './mixed.js';
