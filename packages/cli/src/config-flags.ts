/**
 * Which config key each training flag sets. The libraries speak in config keys (`plugins.patch.fraction
 * must be in [0, 1)`); the CLI maps its flags to keys here and nowhere else, and names the flag back
 * in messages that mention a key (`plugins.patch.fraction (--patch-fraction) must be ...`).
 */
import { PLUGIN_NAME as PATCH_PLUGIN } from '@patchflow/patch-training';
import { PLUGIN_NAME as SPARSITY_PLUGIN } from '@patchflow/sparsity';

/**
 * The config key each training flag sets (a dotted path into TrainConfig). The CLI maps flags to
 * keys here and nowhere else; errors from the libraries name keys, and `flagForKey` names the flag
 * back to the user.
 */
export const FLAG_KEYS: Readonly<Record<string, string>> = Object.freeze({
  data: 'data',
  tokenizer: 'tokenizer',
  steps: 'steps',
  backend: 'backend',
  precision: 'precision',
  'batch-size': 'batchSize',
  'grad-accum': 'gradAccum',
  lr: 'optim.lr',
  'seq-len': 'model.seqLen',
  layers: 'model.nLayer',
  'd-model': 'model.dModel',
  heads: 'model.nHead',
  'eval-every': 'evalEvery',
  'checkpoint-every': 'checkpointEvery',
  seed: 'seed',
  'patch-size': `plugins.${PATCH_PLUGIN}.patchSize`,
  'patch-fraction': `plugins.${PATCH_PLUGIN}.fraction`,
  'patch-optimizer': `plugins.${PATCH_PLUGIN}.optimizer`,
  sparsity: `plugins.${SPARSITY_PLUGIN}.sparsity`,
  'sparsity-pattern': `plugins.${SPARSITY_PLUGIN}.pattern`,
  'sparsity-mode': `plugins.${SPARSITY_PLUGIN}.mode`,
  'sparsity-distribution': `plugins.${SPARSITY_PLUGIN}.distribution`,
  'dense-fraction': `plugins.${SPARSITY_PLUGIN}.denseFraction`,
});

/** The flag that sets config key `key`, if there is one. */
export function flagForKey(key: string): string | undefined {
  const f = Object.entries(FLAG_KEYS).find(([, k]) => k === key)?.[0];
  return f === undefined ? undefined : `--${f}`;
}

/** `message` with ` (--flag)` after each plugin config key that a flag sets (the first time the key appears). */
export function withFlagNames(message: string): string {
  let out = message;
  for (const [flag, key] of Object.entries(FLAG_KEYS)) {
    if (!key.startsWith('plugins.')) continue; // core keys are named as in a config file, as they always were
    const re = new RegExp(`(^|[^\\w.])(${key.replace(/\./g, '\\.')})(?![\\w.])(?! \\(--)`);
    out = out.replace(re, `$1$2 (--${flag})`);
  }
  return out;
}
