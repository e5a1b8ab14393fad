export * from './types.js';
export * from './model.js';
export * from './sparsity.js';
export * from './graph.js';
export * from './hardware.js';
export * from './execute.js';
export * from './serialize.js';
export * from './lower.js';
