import { defineConfig } from 'tsup';
import { writeRequireShim } from '../../tools/write-require-shim.mjs';
export default defineConfig({ entry: ['src/index.ts'], format: ['esm'], dts: true, clean: true, sourcemap: true, target: 'node20', onSuccess: writeRequireShim });
