import * as tfc from '@tensorflow/tfjs-core';
import './gradients.js';
import { registerBackend } from './registry.js';
import { cpuBackend, stockCpuBackend } from './cpu/index.js';

export * as tf from '@tensorflow/tfjs-core';
export * from './errors.js';
export * from './registry.js';
export { processSingleton, compatibleVersions, DuplicatePackageError } from './singleton.js';
export * from './ops.js';
export { cpuBackend, stockCpuBackend, CPU_TFJS_NAME, captureNativeStderr, nativeInfo, setNativeThreads, type NativeInfo } from './cpu/index.js';

registerBackend(cpuBackend);
registerBackend(stockCpuBackend);
// PROD silences tfjs's "install tfjs-node" banner and skips debug-only checks.
tfc.env().set('PROD', true);
