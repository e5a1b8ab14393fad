/**
 * Composition: which plugins a run has, built from its config alone.
 *
 * A plugin package registers a definition when it is imported (its name = its key under
 * `config.plugins`, a factory that validates the settings, and where it goes among the run's
 * plugins). `train({ config })` then builds the plugins from `config.plugins` (on resume, from the
 * checkpoint's), so a library user composes a trainer the way the CLI does, with no CLI code.
 * A backend may add run plugins of its own (rdu-sim's simulated clock) for runs on it.
 */
import { processSingleton } from '@patchflow/tensor';
import pkg from '../package.json' with { type: 'json' };
import { ConfigError, type TrainConfig } from './config.js';
import { PluginError, type TrainerPlugin } from './plugin.js';

export interface PluginDefinition {
  /** The key under `config.plugins` and the plugin's `name`. */
  name: string;
  /** Builds the plugin from its settings (the config entry); throws PluginError on bad settings. */
  create(settings: Record<string, unknown>): TrainerPlugin;
  /**
   * Where it goes among the run's plugins, which hooks chain in that order: 'first' for a plugin that
   * owns the row layout and the embeddings the others see (patch-level training), 'last' for one that
   * plans after the others (a final dense phase cut from the end of the last phase). Default: between,
   * in config order.
   */
  order?: 'first' | 'last';
  /** One line for listings. */
  description?: string;
}

// process-wide, so that a plugin package holding a second copy of the trainer registers here too
const definitions = processSingleton('@patchflow/trainer', pkg.version, import.meta.url, 'plugins', () => new Map<string, PluginDefinition>());
const runPlugins = processSingleton('@patchflow/trainer', pkg.version, import.meta.url, 'run-plugins', () => new Map<string, (config: TrainConfig) => TrainerPlugin[]>());

/** Registers (or replaces) a plugin definition. */
export function registerPlugin(def: PluginDefinition): void {
  if (!/^[a-z][a-z0-9-]*$/.test(def.name)) throw new PluginError(`invalid plugin name "${def.name}" (lowercase letters, digits and dashes)`);
  definitions.set(def.name, def);
}

export function pluginDefinitions(): PluginDefinition[] {
  return [...definitions.values()];
}

const rank = (d: PluginDefinition) => (d.order === 'first' ? 0 : d.order === 'last' ? 2 : 1);

/**
 * The plugins `config.plugins` names, built by their registered definitions and ordered by their
 * `order` (ties keep config order). An unknown name is a ConfigError listing what is registered.
 */
export function pluginsFromConfig(config: Pick<TrainConfig, 'plugins'>): TrainerPlugin[] {
  const entries = Object.entries(config.plugins ?? {}).map(([name, settings], i) => {
    const def = definitions.get(name);
    if (!def) {
      throw new ConfigError(
        `invalid config: unknown plugin "${name}" under plugins (registered: ${[...definitions.keys()].join(', ') || 'none'}; ` +
          'a plugin package registers itself when it is imported)',
      );
    }
    return { def, settings: settings ?? {}, i };
  });
  entries.sort((a, b) => rank(a.def) - rank(b.def) || a.i - b.i);
  return entries.map(({ def, settings }) => def.create(settings as Record<string, unknown>));
}

/** Throws PluginError for keys of a plugin's settings that it does not know. */
export function checkSettingKeys(plugin: string, settings: Record<string, unknown>, known: readonly string[]): void {
  for (const k of Object.keys(settings)) {
    if (!known.includes(k)) throw new PluginError(`invalid config: unknown key "plugins.${plugin}.${k}" (known: ${known.join(', ') || 'none'})`);
  }
}

/** Plugins a backend adds to every run on it (e.g. a simulated clock); `make` sees the run's config. */
export function registerRunPlugins(backend: string, make: (config: TrainConfig) => TrainerPlugin[]): void {
  runPlugins.set(backend, make);
}

/** The run plugins of `config.backend` (none for most backends). */
export function runPluginsFor(config: TrainConfig): TrainerPlugin[] {
  return runPlugins.get(config.backend)?.(config) ?? [];
}
