/**
 * @patchflow/sparsity: sparse training from scratch (Srinivasan et al., 2023) as a trainer plugin.
 * Importing it registers the plugin, so a config's `plugins.sparsity` entry builds it.
 */
import { registerPlugin } from '@patchflow/trainer';
import { PLUGIN_NAME, type SparsityOptions } from './options.js';
import { sparseTraining } from './plugin.js';

export * from './masks.js';
export * from './schedules.js';
export * from './options.js';
export * from './maskset.js';
export * from './plugin.js';

// It plans after the other plugins, so a final dense phase is cut from the end of the last phase
// (the token phase of a patch plan).
registerPlugin({
  name: PLUGIN_NAME,
  create: (settings) => sparseTraining(settings as SparsityOptions),
  order: 'last',
  description: 'sparse training from scratch (Srinivasan et al., 2023): masks on the projections, static / GMP / RigL, optional final dense phase',
});
