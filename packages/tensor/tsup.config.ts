import { defineConfig } from 'tsup';
import { writeRequireShim } from '../../tools/write-require-shim.mjs';

// tfjs-core's Node (CommonJS) bundle registers no gradients; they live only in its ESM sources
// (dist/register_all_gradients), whose extensionless imports plain Node cannot load. So a second
// build bundles those sources into dist/gradients.js. The copy of tfjs-core's ops it carries talks to
// the one engine and the one kernel/gradient registry that every tfjs-core copy shares through
// tfjs's global namespace (the design tfjs uses for exactly this situation).
export default defineConfig([
  {
    entry: ['src/index.ts'],
    format: ['esm'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    external: ['./gradients.js'],
    onSuccess: writeRequireShim,
  },
  {
    entry: { gradients: 'src/gradients.ts' },
    format: ['esm'],
    dts: false,
    clean: false,
    sourcemap: false,
    target: 'node20',
    noExternal: [/^@tensorflow\/tfjs-core/],
    platform: 'node',
  },
]);
