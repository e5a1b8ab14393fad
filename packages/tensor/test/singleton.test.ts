/**
 * A second copy of @patchflow/tensor shares the first one's registries and says so; incompatible
 * copies are refused. The last test loads two real copies of the built package (dist/) in one
 * child process, as a backend package with its own node_modules would.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DuplicatePackageError, compatibleVersions, processSingleton } from '../src/singleton.js';

const root = fileURLToPath(new URL('..', import.meta.url));

describe('compatibleVersions', () => {
  it('same major; before 1.0 also the same minor', () => {
    expect(compatibleVersions('1.2.3', '1.9.0')).toBe(true);
    expect(compatibleVersions('1.2.3', '2.0.0')).toBe(false);
    expect(compatibleVersions('0.1.0', '0.1.7')).toBe(true);
    expect(compatibleVersions('0.1.0', '0.2.0')).toBe(false);
    expect(compatibleVersions('0.0.0-dev', '0.0.0-dev')).toBe(true);
    expect(compatibleVersions('x', 'y')).toBe(false);
  });
});

describe('processSingleton', () => {
  it('one value per package and name across copies, and one warning per extra copy naming both', () => {
    const pkg = `@test/pkg-${Math.random()}`;
    const lines: string[] = [];
    const warn = (l: string) => lines.push(l);
    const a = processSingleton(pkg, '0.3.1', 'file:///a/dist/index.js', 'reg', () => new Map<string, number>(), warn);
    a.set('x', 1);
    expect(lines).toEqual([]);
    const b = processSingleton(pkg, '0.3.2', 'file:///b/node_modules/p/dist/index.js', 'reg', () => new Map<string, number>(), warn);
    expect(b).toBe(a);
    expect(b.get('x')).toBe(1);
    processSingleton(pkg, '0.3.2', 'file:///b/node_modules/p/dist/index.js', 'other', () => 0, warn);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('/a/dist/index.js');
    expect(lines[0]).toContain('/b/node_modules/p/dist/index.js');
    expect(lines[0]).toContain('peerDependency');
  });
  it('refuses an incompatible copy with the fix in the message', () => {
    const pkg = `@test/pkg-${Math.random()}`;
    processSingleton(pkg, '0.3.1', 'file:///a/x.js', 'reg', () => 1, () => {});
    expect(() => processSingleton(pkg, '0.4.0', 'file:///b/x.js', 'reg', () => 2, () => {})).toThrow(DuplicatePackageError);
    expect(() => processSingleton(pkg, '0.4.0', 'file:///b/x.js', 'reg', () => 2, () => {})).toThrow(/two incompatible copies of .* 0\.3\.1 \(\/a\/x\.js\) and 0\.4\.0 \(\/b\/x\.js\).*peerDependency/);
  });
});

describe('two real copies of the built package in one process', () => {
  it('a backend registered through the second copy is found through the first, with one warning', () => {
    expect(fs.existsSync(path.join(root, 'dist', 'index.js')), 'dist/ missing: run `npm run build` first').toBe(true);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-two-copies-'));
    try {
      // the second copy: package.json + dist, resolving tfjs through the workspace's node_modules
      const copy = path.join(dir, 'node_modules', '@patchflow', 'tensor');
      fs.mkdirSync(copy, { recursive: true });
      fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
      fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
      fs.symlinkSync(path.resolve(root, '..', '..', 'node_modules', '@tensorflow'), path.join(dir, 'node_modules', '@tensorflow'));
      const app = `
        const a = await import(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
        const b = await import(${JSON.stringify(path.join(copy, 'dist', 'index.js'))});
        if (a === b) throw new Error('one copy only');
        b.registerBackend({ name: 'from-copy-b', description: 'x', tfjsName: 'cpu', checkAvailability: async () => ({ ok: true }), setup: async () => {}, capabilities: () => ({ device: 'cpu', maxRank: 4, fusedOps: [] }) });
        console.log(JSON.stringify(a.listBackends().map((p) => p.name)));
      `;
      fs.writeFileSync(path.join(dir, 'app.mjs'), app);
      const r = spawnSync(process.execPath, ['app.mjs'], { cwd: dir, encoding: 'utf8', env: { ...process.env, PATCHFLOW_NATIVE_BUILD: '0' }, timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toContain('from-copy-b');
      const warnings = r.stderr.split('\n').filter((l) => l.includes('a second copy of @patchflow/tensor'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(copy);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
