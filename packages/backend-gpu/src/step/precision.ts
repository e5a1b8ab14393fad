/**
 * What an adapter offers f16 mixed-precision training (`precision: 'f16'`), from its features and
 * info as Dawn reports them with the f16 toggles (F16_DAWN_FLAGS): shader-f16 is required; subgroup
 * matrices with an f16×f16→f32 16×16×16 config put the matmuls on tensor cores, without them the f16
 * step runs on fallback kernels (f16-rounded operands, f32 math).
 */
import { PatchflowError } from '@patchflow/tensor';

/** `precision: 'f16'` where it cannot run (a CPU backend, the eager step, an adapter without shader-f16). */
export class PrecisionError extends PatchflowError {
  override name = 'PrecisionError';
}

export interface F16Support {
  shaderF16: boolean;
  /** Subgroup matrices usable by the f16 matmuls (f16×f16→f32 at 16×16×16). */
  subgroupMatrix: boolean;
  /** Invocations per subgroup (subgroupMaxSize) when subgroupMatrix. */
  subgroupSize?: number;
  /** The adapter's subgroup-matrix configs, 'f16xf16->f32 16x16x16' style. */
  configs: string[];
  /** Why f16 or its tensor cores are not available; empty when both are. */
  reason: string;
}

interface SubgroupMatrixConfigLike {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';

/** Dawn toggles under which an adapter shows its f16 features (shader-f16 on NVIDIA's Vulkan driver, subgroup matrices). */
export const F16_PROBE_FLAGS = ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia'];

export function f16Support(features: Iterable<string>, info?: { subgroupMatrixConfigs?: Iterable<SubgroupMatrixConfigLike>; subgroupMaxSize?: number }): F16Support {
  const fs = new Set(features);
  const shaderF16 = fs.has('shader-f16');
  let configs: string[] = [];
  try {
    configs = [...(info?.subgroupMatrixConfigs ?? [])].map((c) => `${c.componentType}x${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`);
  } catch {
    configs = [];
  }
  const hasFeature = fs.has(SUBGROUP_MATRIX_FEATURE) && fs.has('subgroups');
  const hasConfig = configs.includes('f16xf16->f32 16x16x16');
  const size = info?.subgroupMaxSize;
  const subgroupMatrix = shaderF16 && hasFeature && hasConfig && !!size && size >= 8 && 256 % size === 0;
  let reason = '';
  if (!shaderF16) reason = 'the adapter lacks shader-f16';
  else if (!fs.has(SUBGROUP_MATRIX_FEATURE)) reason = `the adapter lacks ${SUBGROUP_MATRIX_FEATURE}`;
  else if (!fs.has('subgroups')) reason = 'the adapter lacks subgroups';
  else if (!hasConfig) reason = `no f16xf16->f32 16x16x16 subgroup-matrix config (has: ${configs.join(', ') || 'none'})`;
  else if (!subgroupMatrix) reason = `unsupported subgroup size ${size}`;
  return { shaderF16, subgroupMatrix, ...(subgroupMatrix ? { subgroupSize: size! } : {}), configs, reason };
}
