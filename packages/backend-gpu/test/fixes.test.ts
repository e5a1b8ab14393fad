/** The WGSL rewrite for int32 transposes, as text (the GPU tests check that the result computes right). */
import { describe, expect, it } from 'vitest';
import { fixIntTransposeWgsl } from '../src/fixes.js';

// Shapes of what tfjs-backend-webgpu 4.22 generates (transpose_webgpu.ts, transpose_shared_webgpu.ts).
const transposeProgram = `
      fn main(index : i32) {
        for(var i = 0; i < 1; i = i + 1) {
          let flatIndex = index * 1 + i;
          if(flatIndex < uniforms.size) {
            let coords = getCoordsFromIndex(flatIndex);
            setOutputAtIndex(flatIndex, A[getIndexFromCoords3D(
              vec3<i32>(coords.x,coords.z,coords.y), uniforms.aShape)]);
          }
        }
      }`;
const sharedProgram = `
      var<workgroup> tile : array<array<f32, 17>, 16>;
      fn main() {
        if (x < width && y < height) {
          tile[localId.y][localId.x] = f32(A[y * width + x]);
        }
        workgroupBarrier();
        if (x < height && y < width) {
          setOutputAtIndex((y * height + x), tile[localId.x]
            [localId.y]);
        }
      }`;

describe('fixIntTransposeWgsl', () => {
  it('TransposeProgram: stores the i32 element with setOutputAtIndexI32', () => {
    const out = fixIntTransposeWgsl(transposeProgram, 'transpose_0,2,1');
    expect(out).toContain('setOutputAtIndexI32(flatIndex, A[getIndexFromCoords3D(');
    expect(out).not.toMatch(/setOutputAtIndex\(/);
  });

  it('TransposeSharedProgram: i32 tile, no f32 round trip', () => {
    const out = fixIntTransposeWgsl(sharedProgram, 'transposeShared');
    expect(out).toContain('var<workgroup> tile : array<array<i32, 17>, 16>;');
    expect(out).toContain('tile[localId.y][localId.x] = A[y * width + x];');
    expect(out).toContain('setOutputAtIndexI32((y * height + x)');
    expect(out).not.toMatch(/f32|setOutputAtIndex\(/);
  });

  it('leaves other programs alone', () => {
    expect(fixIntTransposeWgsl(transposeProgram, 'reduce_sum')).toBe(transposeProgram);
  });
});
