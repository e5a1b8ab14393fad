export * from './data.js';
export * from './random.js';
export * from './reference.js';
export * from './gpu.js';
