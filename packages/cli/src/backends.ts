/** Backend discovery for the CLI: our packages plus third-party modules named in PATCHFLOW_BACKEND_MODULES. */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { listBackends } from '@patchflow/tensor';
import { UserError } from './errors.js';
import { formatTable } from './table.js';

let loaded = false;
export async function loadBackendModules(): Promise<void> {
  if (loaded) return;
  loaded = true;
  await import('@patchflow/backend-gpu');
  await import('@patchflow/backend-rdu-sim');
  const extra = (process.env.PATCHFLOW_BACKEND_MODULES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of extra) {
    try {
      await import(backendModuleUrl(m));
    } catch (e) {
      throw new UserError(`cannot load backend module "${m}" (from PATCHFLOW_BACKEND_MODULES): ${(e as Error).message.split('\n')[0]}`);
    }
  }
}

/**
 * Where a PATCHFLOW_BACKEND_MODULES entry is imported from: a path (./x.js, /abs/x.js) relative to
 * the current directory; a package name as the current project resolves it (its node_modules), else
 * as the CLI's own location does (a global install next to the backend).
 */
export function backendModuleUrl(m: string, cwd = process.cwd()): string {
  if (m.startsWith('file:')) return m;
  if (m.startsWith('.') || path.isAbsolute(m)) return pathToFileURL(path.resolve(cwd, m)).href;
  try {
    return pathToFileURL(createRequire(path.join(cwd, 'package.json')).resolve(m)).href;
  } catch {
    return m;
  }
}

export async function backendsCommand(): Promise<number> {
  await loadBackendModules();
  const rows: Record<string, string>[] = [];
  for (const b of listBackends()) {
    const a = await b.checkAvailability();
    const caps = b.capabilities();
    rows.push({
      backend: b.name,
      available: a.ok ? 'yes' : 'no',
      device: caps.device,
      details: a.ok ? [b.description, ...(caps.notes ?? [])].join('; ') : a.reason,
    });
  }
  process.stdout.write(formatTable(rows, undefined, { maxWidth: process.stdout.isTTY ? Math.max(80, process.stdout.columns ?? 120) : undefined }) + '\n');
  return 0;
}
