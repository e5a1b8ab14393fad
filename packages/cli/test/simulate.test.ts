/** `patchflow graph` / `patchflow simulate` end to end (spawns bin/patchflow.js over dist/: build first). */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';

vi.setConfig({ testTimeout: 60_000 });
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, PATCHFLOW_DEBUG: '' } });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-sim-'));

describe('patchflow simulate / graph', () => {
  it('simulate --json gives the documented fields for GPT 13B', () => {
    const r = run('simulate', '--model', 'gpt-13b', '--hw', 'sn30', '--mode', 'dataflow', '--sparsity', '0.875', '--sparsity-pattern', 'block:16', '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    for (const k of ['stepSeconds', 'tokensPerSecond', 'utilization', 'offChipBytes', 'onChipPeakBytes']) expect(typeof j[k]).toBe('number');
    expect(j.groups.length).toBeGreaterThan(3);
    expect(j.groups[0].bound).toMatch(/compute|bandwidth/);
    expect(j.simulateMilliseconds).toBeLessThan(1000);
  });

  it('graph --json for a train-config file', () => {
    const f = path.join(tmp, 'cfg.json');
    fs.writeFileSync(f, JSON.stringify({ model: { nLayer: 2, nHead: 2, dModel: 32, seqLen: 16, vocabSize: 64 }, steps: 5 }));
    const r = run('graph', '--model', f, '--json', '--batch', '2', '--patch-size', '2');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.schema).toBe('patchflow.dataflow-graph/1');
    expect(j.ops.some((o: { kind: string }) => o.kind === 'patch-average')).toBe(true);
  });

  it('bad hardware and model files: one line on stderr naming the field, exit 2', () => {
    const hw = path.join(tmp, 'hw.json');
    const raw = JSON.parse(fs.readFileSync(path.resolve(path.dirname(BIN), '../../backend-rdu-sim/hw/h100.json'), 'utf8'));
    raw.offChip.efficiency = 2;
    fs.writeFileSync(hw, JSON.stringify(raw));
    let r = run('simulate', '--model', 'gpt-124m', '--hw', hw);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^patchflow: .*offChip\.efficiency must be <= 1/);
    const m = path.join(tmp, 'm.json');
    fs.writeFileSync(m, JSON.stringify({ nLayer: 2, nHead: 3, dModel: 32, vocabSize: 64 }));
    r = run('simulate', '--model', m, '--hw', 'h100');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^patchflow: .*model\.nHead \(3\) must divide model\.dModel/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
