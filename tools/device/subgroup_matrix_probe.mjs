// Probe of WebGPU tensor cores on the device (issue 12): with Dawn's toggles the adapter lists
// `shader-f16` and `chromium-experimental-subgroup-matrix`; this compiles f16 x f16 -> f32 GEMM
// kernels written on subgroup matrices (16x16x16), checks them against a float64 reference on a
// small product, and times them at 4096^3. Variants: each subgroup owns RT x CT result tiles of
// 16x16 (loads straight from storage, the caches doing the reuse), WG subgroups per workgroup.
//   node tools/device/subgroup_matrix_probe.mjs > $OUT/subgroup_matrix.json
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const gpu = create(['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
const log = (s) => process.stderr.write(s + '\n');
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const features = [...adapter.features].sort();
const out = { adapter: adapter.info.description, features, configs: null, variants: [] };
const want = ['shader-f16', 'chromium-experimental-subgroup-matrix', 'timestamp-query', 'subgroups'].filter((f) => adapter.features.has(f));
if (!adapter.features.has('chromium-experimental-subgroup-matrix')) {
  out.error = 'no chromium-experimental-subgroup-matrix';
  console.log(JSON.stringify(out, null, 2));
  process.exit(0);
}
try {
  const info = adapter.info;
  out.configs = (info.subgroupMatrixConfigs ?? []).map((c) => ({ component: c.componentType, result: c.resultComponentType, M: c.M, N: c.N, K: c.K }));
  out.subgroupMinSize = info.subgroupMinSize;
  out.subgroupMaxSize = info.subgroupMaxSize;
} catch (e) {
  out.configsError = String(e);
}
const l = adapter.limits;
const device = await adapter.requestDevice({
  requiredFeatures: want,
  requiredLimits: { maxStorageBufferBindingSize: l.maxStorageBufferBindingSize, maxBufferSize: l.maxBufferSize, maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize, maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup },
});
device.onuncapturederror = (e) => log(`uncaptured: ${e.error.message}`);

function kernel(M, N, K, RT, CT, WG) {
  // workgroup = WG subgroups stacked along rows; subgroup s owns rows [tileRow + s*RT*16, +RT*16), cols [tileCol, +CT*16)
  const accs = [];
  for (let r = 0; r < RT; r++) for (let c = 0; c < CT; c++) accs.push(`acc_${r}_${c}`);
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> A : array<f16>;
@group(0) @binding(1) var<storage, read> B : array<f16>;
@group(0) @binding(2) var<storage, read_write> C : array<f32>;
@compute @workgroup_size(${32 * WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let sg = ${WG > 1 ? 'lid / 32u' : '0u'};
  let row0 = (wid.y * ${WG}u + sg) * ${RT * 16}u;
  let col0 = wid.x * ${CT * 16}u;
  ${accs.map((a) => `var ${a} = subgroup_matrix_result<f32, 16, 16>();`).join('\n  ')}
  for (var k = 0u; k < ${K}u; k = k + 16u) {
    ${Array.from({ length: RT }, (_, r) => `let a_${r} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, (row0 + ${r * 16}u) * ${K}u + k, false, ${K}u);`).join('\n    ')}
    ${Array.from({ length: CT }, (_, c) => `let b_${c} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&B, k * ${N}u + col0 + ${c * 16}u, false, ${N}u);`).join('\n    ')}
    ${accs.map((a) => { const [, r, c] = a.split('_'); return `${a} = subgroupMatrixMultiplyAccumulate(a_${r}, b_${c}, ${a});`; }).join('\n    ')}
  }
  ${accs.map((a) => { const [, r, c] = a.split('_'); return `subgroupMatrixStore(&C, (row0 + ${Number(r) * 16}u) * ${N}u + col0 + ${Number(c) * 16}u, ${a}, false, ${N}u);`; }).join('\n  ')}
}`;
}

function f16bits(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  let e = ((u >>> 23) & 0xff) - 127 + 15;
  const m = u & 0x7fffff;
  if (e <= 0) return sign;
  if (e >= 31) return sign | 0x7c00;
  return sign | (e << 10) | (m >>> 13);
}
const f16val = (h) => { const s = h & 0x8000 ? -1 : 1; const e = (h >> 10) & 31; const m = h & 1023; return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15); };

async function run(M, N, K, RT, CT, WG, check, reps) {
  const code = kernel(M, N, K, RT, CT, WG);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const msgs = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  if (msgs.length) return { error: msgs.join(' | ') };
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const seed = (i) => ((i * 2654435761) >>> 0) / 4294967296 - 0.5;
  const a16 = new Uint16Array(M * K).map((_, i) => f16bits(seed(i)));
  const b16 = new Uint16Array(K * N).map((_, i) => f16bits(seed(i + 7919)));
  const mk = (data, usage) => { const b = device.createBuffer({ size: Math.max(16, Math.ceil(data.byteLength / 16) * 16), usage }); device.queue.writeBuffer(b, 0, data.buffer, 0, data.byteLength); return b; };
  const A = mk(a16, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  const B = mk(b16, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  const C = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [A, B, C].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const wg = [N / (CT * 16), M / (RT * 16 * WG), 1];
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
  const res = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const rd = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const go = (n, timed) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass(timed ? { timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : undefined);
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(...wg);
    pass.end();
    if (timed) { enc.resolveQuerySet(qs, 0, 2, res, 0); enc.copyBufferToBuffer(res, 0, rd, 0, 16); }
    device.queue.submit([enc.finish()]);
  };
  const err = await device.popErrorScope();
  if (err) return { error: err.message };
  go(2, false);
  await device.queue.onSubmittedWorkDone();
  let maxErr;
  if (check) {
    const st = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(C, 0, st, 0, M * N * 4);
    device.queue.submit([enc.finish()]);
    await st.mapAsync(GPUMapMode.READ);
    const c = new Float32Array(st.getMappedRange().slice(0));
    maxErr = 0;
    for (let i = 0; i < M; i += Math.max(1, M >> 5)) for (let j = 0; j < N; j += Math.max(1, N >> 5)) {
      let s = 0;
      for (let p = 0; p < K; p++) s += f16val(a16[i * K + p]) * f16val(b16[p * N + j]);
      maxErr = Math.max(maxErr, Math.abs(c[i * N + j] - s));
    }
  }
  go(reps, true);
  await rd.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(rd.getMappedRange().slice(0));
  const ms = Number(t[1] - t[0]) / 1e6 / reps;
  [A, B, C, qs, res, rd].forEach((x) => x.destroy());
  return { ms, tflops: (2 * M * N * K) / (ms * 1e-3) / 1e12, ...(maxErr !== undefined ? { maxAbsErr: maxErr } : {}) };
}

// one subgroup per workgroup: subgroupMatrixStore's offset must be uniform, and WGSL's uniformity is per workgroup
for (const [RT, CT, WG] of [[1, 1, 1], [2, 2, 1], [4, 2, 1], [2, 4, 1], [4, 4, 1]]) {
  const small = await run(256, 256, 256, RT, CT, WG, true, 3).catch((e) => ({ error: String(e) }));
  const big = small.error ? {} : await run(4096, 4096, 4096, RT, CT, WG, false, 10).catch((e) => ({ error: String(e) }));
  const v = { RT, CT, WG, check256: small, at4096: big };
  out.variants.push(v);
  log(JSON.stringify(v));
}
console.log(JSON.stringify(out, null, 2));
process.exit(0);
