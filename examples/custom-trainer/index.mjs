// A custom trainer, composed from code alone (no CLI): patch-level training, block-sparse training,
// a plugin of our own, on the `rdu-sim` backend, whose simulated clock the trainer adds by itself.
//
//   node index.mjs            train and print the summary
//   node index.mjs --check    the same, then verify what it promises (CI runs this)
import { registerPlugin, resolveConfig, train } from '@patchflow/trainer';
import '@patchflow/patch-training'; // registers the plugin "patch"
import '@patchflow/sparsity'; // registers the plugin "sparsity"
import '@patchflow/backend-rdu-sim'; // registers the backend "rdu-sim" and its simulated clock

// A plugin of our own: every `every` steps it measures the L2 norm of all weights (through the hook
// API: ctx.model), reports it in each step's metrics and says how it moved in the run's summary.
// Its settings come from config.plugins['weight-norm'].
function weightNorm({ every = 10 } = {}) {
  const norms = [];
  return {
    name: 'weight-norm',
    async afterStep(ctx) {
      if (ctx.step % every !== 0) return;
      let sq = 0;
      for (const s of ctx.model.specs) for (const v of await ctx.model.p(s.name).data()) sq += v * v;
      norms.push([ctx.step, Math.sqrt(sq)]);
    },
    metrics: () => (norms.length ? { weightNorm: norms.at(-1)[1] } : {}),
    summary: () => [`weight-norm: ${norms.map(([step, n]) => `${n.toFixed(2)} at step ${step}`).join(', ')}`],
    get measured() {
      return norms.length;
    },
  };
}
registerPlugin({ name: 'weight-norm', create: (settings) => weightNorm(settings) });

const text = Array.from({ length: 500 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles east and ${(i * 3) % 11} west.\n`).join('');
const config = resolveConfig({
  model: { nLayer: 2, nHead: 2, dModel: 32, seqLen: 16 },
  batchSize: 4,
  steps: 40,
  evalEvery: 0,
  checkpointEvery: 0,
  backend: 'rdu-sim',
  plugins: {
    patch: { patchSize: 2, fraction: 0.5 },
    sparsity: { sparsity: 0.75, pattern: 'block:16' },
    'weight-norm': { every: 10 },
  },
});

const result = await train({ config, corpus: { name: 'whale lines', text } }).catch((e) => {
  console.error(`example failed: ${e.message}`);
  process.exit(1);
});

const names = result.plugins.map((p) => p.name);
console.log(`plugins: ${names.join(', ')}`);
console.log(`phases: ${result.phases.map((p) => `${p.name} (${p.steps} steps)`).join(', ')}`);
console.log(`validation loss ${result.valLoss.toFixed(4)} after ${result.steps} steps, ${(result.flops / 1e9).toFixed(2)} GFLOP`);
for (const p of result.plugins) for (const line of p.summary?.() ?? []) console.log(line);

if (process.argv.includes('--check')) {
  const fail = (msg) => {
    console.error(`check failed: ${msg}`);
    process.exit(1);
  };
  // patch first and sparsity last (their registered order), ours between, then the backend's clock
  const want = ['patch', 'weight-norm', 'sparsity', 'rdu-sim-clock'];
  if (names.join() !== want.join()) fail(`plugins ${names} (expected ${want})`);
  if (result.plugins.find((p) => p.name === 'weight-norm').measured !== Math.floor(result.steps / 10)) fail('weight-norm did not run every 10 steps');
  if (result.phases.map((p) => p.name).join() !== 'patch,token') fail(`phases ${result.phases.map((p) => p.name)}`);
  const clock = result.plugins.find((p) => p.name === 'rdu-sim-clock');
  if (!(clock.clockSeconds > 0)) fail('the simulated clock did not advance');
  const losses = result.losses.map((l) => l.loss);
  if (!(losses.at(-1) < losses[0])) fail(`the loss did not fall (${losses[0]} -> ${losses.at(-1)})`);
  console.log('check passed');
}
result.model.dispose();
