/**
 * Process-wide registries that survive a second copy of a package.
 *
 * A backend or plugin package that brings its own copy of `@patchflow/tensor` (or of the trainer)
 * would otherwise register into that copy's registry, which the CLI never reads: the backend loads
 * without error and is then "unknown". Packages declare each other as peerDependencies so npm
 * installs one copy; when two are loaded anyway (a backend under development with its own
 * node_modules, `npm link`), the registries live on `globalThis` under a key per package, as tfjs
 * keeps its engine, so both copies see the same backends and plugins, and the second copy says so
 * on stderr, once, with the way to fix it. Copies whose versions may not share state (different
 * major, or different minor before 1.0) are refused with a PatchflowError instead.
 */
import { PatchflowError } from './errors.js';

interface Slot {
  version: string;
  /** The module that created the registries (a file URL). */
  home: string;
  values: Map<string, unknown>;
  /** Other copies seen, by URL (each is reported once). */
  copies: Set<string>;
}

/** Versions that may share registries: same major, and the same minor while the major is 0. */
export function compatibleVersions(a: string, b: string): boolean {
  const pa = a.split('.').map((x) => Number.parseInt(x, 10));
  const pb = b.split('.').map((x) => Number.parseInt(x, 10));
  if (pa.some(Number.isNaN) || pb.some(Number.isNaN)) return a === b;
  return pa[0] === pb[0] && (pa[0] !== 0 || pa[1] === pb[1]);
}

export class DuplicatePackageError extends PatchflowError {
  override name = 'DuplicatePackageError';
}

function describeUrl(url: string): string {
  try {
    return new URL(url).protocol === 'file:' ? decodeURIComponent(new URL(url).pathname) : url;
  } catch {
    return url;
  }
}

/**
 * The process-wide value `name` of package `pkg`, made by `make` the first time any copy asks.
 * `url` is the asking module's `import.meta.url`, `version` its package's version.
 */
export function processSingleton<T>(pkg: string, version: string, url: string, name: string, make: () => T, warn: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): T {
  const key = Symbol.for(`patchflow.registry:${pkg}`);
  const g = globalThis as unknown as Record<symbol, Slot | undefined>;
  let slot = g[key];
  if (!slot) {
    slot = { version, home: url, values: new Map(), copies: new Set() };
    g[key] = slot;
  } else if (slot.home !== url && !slot.copies.has(url)) {
    if (!compatibleVersions(slot.version, version)) {
      throw new DuplicatePackageError(
        `two incompatible copies of ${pkg} are loaded: ${slot.version} (${describeUrl(slot.home)}) and ${version} (${describeUrl(url)}); ` +
          `install one: declare ${pkg} as a peerDependency of the package that brings the second copy and reinstall (\`npm ls ${pkg}\` shows which)`,
      );
    }
    slot.copies.add(url);
    warn(
      `patchflow: a second copy of ${pkg} is loaded (${version}, ${describeUrl(url)}) besides ${slot.version} (${describeUrl(slot.home)}); ` +
        `they share one registry, but a package should list ${pkg} as a peerDependency so that npm installs one copy (\`npm ls ${pkg}\` shows which brought it)`,
    );
  }
  if (!slot.values.has(name)) slot.values.set(name, make());
  return slot.values.get(name) as T;
}
