/**
 * Workarounds for tfjs-backend-webgpu 4.22 bugs that patchflow hits. They wrap methods of its
 * WebGPUBackend class (once, at setup), since the broken code is also called from inside other
 * kernels where no kernel override reaches. test/webgpu-vs-cpu.test.ts checks the results against
 * the cpu backend; test/fixes.test.ts checks the WGSL rewrite.
 */

/** The parts of tfjs-backend-webgpu's module and WebGPUBackend this file uses. */
export interface WebGpuModuleLike {
  WebGPUBackend?: { prototype: object };
}

interface ProgramLike {
  shaderKey?: string;
  getUserCode(): string;
}

const PATCHED_RUN = Symbol.for('patchflow.backend-gpu.runWebGPUProgram');
const PATCHED_READ = Symbol.for('patchflow.backend-gpu.readSync');
type Patchable<T> = T & { [PATCHED_RUN]?: true; [PATCHED_READ]?: true };

/**
 * Rewrites the WGSL of tfjs's two transpose programs for int32/bool outputs:
 * - TransposeProgram passes the raw i32 element to `setOutputAtIndex`, which takes f32: the shader
 *   does not compile, Dawn logs "type mismatch for argument 2 in call to 'setOutputAtIndex'", and
 *   the result is all zeros. Every int32 transpose that is not a plain 2-D swap hits it, including
 *   the ones Sum/Max/Min/Prod/Mean/ArgMax/... do internally to reduce a non-innermost axis (e.g.
 *   crossEntropy's composite sums an int32 one-hot over a middle axis: the loss came out 0).
 * - TransposeSharedProgram (2-D swap) goes through an f32 tile: exact only below 2^24.
 * Both become i32 throughout. Returns the (possibly rewritten) WGSL.
 */
export function fixIntTransposeWgsl(code: string, shaderKey: string): string {
  if (shaderKey.startsWith('transpose_')) {
    return code.replace(/setOutputAtIndex\(flatIndex, A\[/g, 'setOutputAtIndexI32(flatIndex, A[');
  }
  if (shaderKey === 'transposeShared') {
    return code
      .replace(/var<workgroup> tile : array<array<f32,/, 'var<workgroup> tile : array<array<i32,')
      .replace(/= f32\(A\[([^\]]*)\]\);/, '= A[$1];')
      .replace(/setOutputAtIndex\(/g, 'setOutputAtIndexI32(');
  }
  return code;
}

/**
 * Applies fixIntTransposeWgsl to every program WebGPUBackend runs (so also to the transposes that
 * kernels do internally, which no kernel override can reach). Idempotent.
 */
export function fixIntTransposes(mod: WebGpuModuleLike): void {
  const proto = mod.WebGPUBackend?.prototype as Patchable<{ runWebGPUProgram?: (p: ProgramLike, ...rest: unknown[]) => unknown }> | undefined;
  const run = proto?.runWebGPUProgram;
  if (!proto || !run || proto[PATCHED_RUN]) return;
  proto.runWebGPUProgram = function (this: unknown, program: ProgramLike, inputs: unknown, outputDtype: unknown, ...rest: unknown[]) {
    const key = program.shaderKey ?? '';
    if ((outputDtype === 'int32' || outputDtype === 'bool') && (key.startsWith('transpose_') || key === 'transposeShared')) {
      const getUserCode = program.getUserCode;
      program.getUserCode = () => fixIntTransposeWgsl(getUserCode.call(program), key);
    }
    return run.call(this, program, inputs, outputDtype, ...rest);
  };
  proto[PATCHED_RUN] = true;
}

export const SYNC_READ_MESSAGE =
  'the webgpu backend cannot read GPU data synchronously in Node (tfjs does it through OffscreenCanvas, ' +
  'which Node lacks): use `await tensor.data()` / `await tensor.array()` instead of dataSync()/arraySync(), ' +
  'and do not hand tensors that live on webgpu to another backend';

/**
 * tfjs's WebGPUBackend.readSync (behind dataSync, arraySync, and moving a tensor to another backend)
 * needs OffscreenCanvas; in Node it dies with "OffscreenCanvas is not defined". Say why instead.
 */
export function explainSyncReads(mod: WebGpuModuleLike): void {
  if (typeof (globalThis as { OffscreenCanvas?: unknown }).OffscreenCanvas !== 'undefined') return;
  const proto = mod.WebGPUBackend?.prototype as Patchable<{ readSync(dataId: object): unknown }> | undefined;
  if (!proto || proto[PATCHED_READ]) return;
  const readSync = proto.readSync;
  proto.readSync = function (this: unknown, dataId: object) {
    try {
      return readSync.call(this, dataId);
    } catch (e) {
      if (e instanceof ReferenceError && /OffscreenCanvas/.test(e.message)) throw new Error(SYNC_READ_MESSAGE);
      throw e;
    }
  };
  proto[PATCHED_READ] = true;
}
