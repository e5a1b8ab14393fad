/**
 * The contract between the kernel generators of the compiled training step and the executor that
 * replays them. A kernel generator is a pure function `(params) => KernelSpec`: every shape is a
 * compile-time constant baked into the WGSL (no shape uniforms), so the executor only binds buffers
 * and dispatches `workgroups`.
 *
 * Buffers are bound as (buffer, offset, size) ranges: every kernel indexes its bindings from 0 and
 * never uses arrayLength, so a parameter living at a 256-byte aligned offset inside one flat buffer
 * can be bound directly. Kernels are correct without robustness (bounds clamping) in the driver:
 * every access is inside the ranges documented by each generator, so Dawn's
 * `create(['enable-dawn-features=allow_unsafe_apis,disable_robustness'])` is safe to use for speed.
 */

export interface BindingSpec {
  name: string;
  access: 'read' | 'read_write' | 'uniform';
  /**
   * True when the kernel writes every element of the bound range without reading it first (a pure
   * output): the executor needs no zero-fill, and the runner's poison mode fills it with NaN before
   * the kernel so an element the kernel fails to write shows up in tests. False or absent for inputs
   * and for outputs the kernel updates (accumulate, in-place).
   */
  overwrite?: boolean;
}

export interface KernelSpec {
  /** Identity of the code (pipeline cache key): equal code => equal key. */
  key: string;
  /** Human-readable, e.g. 'matmul NT 2048x768x256 +bias+gelu'. */
  label: string;
  /** WGSL source. */
  code: string;
  entryPoint: string;
  /** @group(0) @binding(i): i is the index in this array. */
  bindings: BindingSpec[];
  workgroups: [number, number, number];
  /** Floating-point operations of one dispatch (2 per multiply-add), for reporting. */
  flops?: number;
  /** Bytes moved to and from memory by one dispatch (ideal, each element once), for reporting. */
  bytes?: number;
}

/** cyrb53: a fast 53-bit string hash (collisions are astronomically unlikely for shader sources). */
function hash53(s: string, seed = 0): string {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

/** WGSL declaration of binding `i` of `b` holding `type` (array<f32>, array<vec4<f32>>, ...). */
export function declare(i: number, b: BindingSpec, type: string): string {
  const space = b.access === 'uniform' ? 'uniform' : b.access === 'read' ? 'storage, read' : 'storage, read_write';
  return `@group(0) @binding(${i}) var<${space}> ${b.name} : ${type};`;
}

/**
 * Assembles a KernelSpec: declares each binding (types[name]) ahead of `body`, and derives the key
 * from the whole source, the entry point and the binding accesses.
 */
export function makeKernel(o: {
  label: string;
  bindings: BindingSpec[];
  types: Record<string, string>;
  body: string;
  entryPoint?: string;
  workgroups: [number, number, number];
  enables?: string[];
  /** Global directives after the enables (e.g. `diagnostic(off, ...)`). */
  directives?: string[];
  flops?: number;
  bytes?: number;
}): KernelSpec {
  const entryPoint = o.entryPoint ?? 'main';
  for (const w of o.workgroups) {
    if (!(Number.isInteger(w) && w >= 1 && w <= 65535)) throw new Error(`${o.label}: workgroup count ${w} out of [1, 65535]`);
  }
  const decls = o.bindings.map((b, i) => {
    const t = o.types[b.name];
    if (!t) throw new Error(`${o.label}: no WGSL type for binding ${b.name}`);
    return declare(i, b, t);
  });
  const code = [...(o.enables ?? []).map((e) => `enable ${e};`), ...(o.directives ?? []).map((d) => `${d};`), ...decls, o.body].join('\n');
  const sig = o.bindings.map((b) => b.access).join(',');
  return {
    key: `${entryPoint}:${hash53(code)}:${hash53(code, 7)}:${sig}`,
    label: o.label,
    code,
    entryPoint,
    bindings: o.bindings,
    workgroups: o.workgroups,
    ...(o.flops !== undefined ? { flops: o.flops } : {}),
    ...(o.bytes !== undefined ? { bytes: o.bytes } : {}),
  };
}

/**
 * The same kernel with every 'read' storage binding declared read_write. WebGPU forbids binding one
 * GPUBuffer both read-only and writable in a dispatch, even as disjoint ranges; writable bindings of
 * one buffer may coexist as long as their ranges do not overlap. An executor that keeps inputs and
 * outputs of a kernel in one arena buffer binds this variant instead.
 */
export function withWritableInputs(spec: KernelSpec): KernelSpec {
  let code = spec.code;
  spec.bindings.forEach((b, i) => {
    if (b.access !== 'read') return;
    const from = `@group(0) @binding(${i}) var<storage, read> `;
    if (!code.includes(from)) throw new Error(`withWritableInputs: binding ${i} (${b.name}) not declared as expected`);
    code = code.replace(from, `@group(0) @binding(${i}) var<storage, read_write> `);
  });
  const bindings = spec.bindings.map((b) => (b.access === 'read' ? { ...b, access: 'read_write' as const } : b));
  const sig = bindings.map((b) => b.access).join(',');
  return { ...spec, code, bindings, key: `${spec.entryPoint}:${hash53(code)}:${hash53(code, 7)}:${sig}`, label: `${spec.label} (writable inputs)` };
}

/** Checks that `v` is a positive integer (shape dimensions are compile-time constants). */
export function dim(what: string, v: number, min = 1): number {
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`${what} must be an integer >= ${min}, got ${v}`);
  return v;
}

/** A WGSL f32 literal that round-trips `x` (always with a decimal point or exponent). */
export function f32lit(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`not a finite constant: ${x}`);
  const s = Math.fround(x).toPrecision(9);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** Ceil division. */
export const cdiv = (a: number, b: number) => Math.floor((a + b - 1) / b);

/**
 * Splits `n` workgroups over x and y (each at most 65535): returns the dispatch and the WGSL
 * expression of the flat workgroup index (which may exceed n - 1: kernels must guard with `< n`).
 */
export function grid(n: number): { workgroups: [number, number, number]; flat: string } {
  if (n <= 65535) return { workgroups: [Math.max(1, n), 1, 1], flat: 'wid.x' };
  const x = 65535;
  return { workgroups: [x, cdiv(n, x), 1], flat: `(wid.y * ${x}u + wid.x)` };
}
