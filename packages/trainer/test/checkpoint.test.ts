import { describe, it, expect } from 'vitest';
import { suiteTempDir } from '@patchflow/test-fixtures';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  CheckpointError,
  f16ToF32,
  f32ToF16,
  loadCheckpoint,
  readSafetensors,
  saveCheckpoint,
  writeFileAtomic,
  writeSafetensors,
} from '../src/checkpoint.js';

const tmpDir = suiteTempDir('pf-ckpt-');

let counter = 0;
const fresh = (name: string) => path.join(tmpDir(), `${name}-${counter++}`);

function python(): { numpy: boolean; safetensors: boolean } {
  const has = (mod: string) => spawnSync('python3', ['-c', `import ${mod}`], { encoding: 'utf8' }).status === 0;
  return { numpy: has('numpy'), safetensors: has('safetensors') };
}
const py = python();

/** Builds a safetensors file from a raw header object and data bytes (header padded with spaces to 8). */
function craft(file: string, header: unknown, data: number[] | Uint8Array): string {
  let json = typeof header === 'string' ? header : JSON.stringify(header);
  while (json.length % 8) json += ' ';
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(json, 'utf8'), Buffer.from(data)]));
  return file;
}

describe('safetensors layout', () => {
  it('matches a hand-built byte layout', () => {
    const p = fresh('layout') + '.safetensors';
    writeSafetensors(
      p,
      { a: { dtype: 'F32', shape: [2], data: Float32Array.from([1.5, -2]) }, b: { shape: [1, 1], data: Int32Array.from([7]) } },
      { k: 'v' },
    );
    const bytes = fs.readFileSync(p);
    const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"k":"v"}}';
    expect(json.length).toBe(135);
    const padded = 136; // next multiple of 8
    const expected = [
      ...[136, 0, 0, 0, 0, 0, 0, 0], // u64 LE header length
      ...Buffer.from(json, 'utf8'),
      ...[0x20], // 1 space of padding
      ...[0x00, 0x00, 0xc0, 0x3f], // 1.5f  = 0x3FC00000 LE
      ...[0x00, 0x00, 0x00, 0xc0], // -2.0f = 0xC0000000 LE
      ...[0x07, 0x00, 0x00, 0x00], // int32 7 LE
    ];
    expect(Array.from(bytes)).toEqual(expected);
    expect(bytes.length).toBe(8 + padded + 12);
    expect((8 + padded) % 8).toBe(0);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(dv.getBigUint64(0, true)).toBe(136n);
    expect(dv.getFloat32(144, true)).toBe(1.5);
    expect(dv.getFloat32(148, true)).toBe(-2);
    expect(dv.getInt32(152, true)).toBe(7);
    // header keys in insertion order, __metadata__ last
    expect(Object.keys(JSON.parse(bytes.subarray(8, 144).toString('utf8')))).toEqual(['a', 'b', '__metadata__']);
  });

  it('header already a multiple of 8 gets no padding; empty tensors and no metadata work', () => {
    const p = fresh('nopad') + '.safetensors';
    writeSafetensors(p, { x: { shape: [0], data: new Float32Array(0) } });
    const bytes = fs.readFileSync(p);
    const json = '{"x":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}';
    const n = Math.ceil(json.length / 8) * 8;
    expect(Number(bytes.readBigUInt64LE(0))).toBe(n);
    expect(bytes.subarray(8).toString('utf8')).toBe(json.padEnd(n, ' '));
    expect(readSafetensors(p)).toEqual({ tensors: { x: { dtype: 'F32', shape: [0], data: new Float32Array(0) } }, metadata: {} });
  });

  it('round-trips every dtype', () => {
    const p = fresh('rt') + '.safetensors';
    const w = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i) * 1e3);
    writeSafetensors(
      p,
      {
        w: { shape: [2, 3, 4], data: w },
        i: { dtype: 'I32', shape: [3], data: Int32Array.from([-1, 0, 2 ** 31 - 1]) },
        u: { dtype: 'U8', shape: [2, 2], data: Uint8Array.from([0, 1, 254, 255]) },
        h: { dtype: 'F16', shape: [3], data: Float32Array.from([1, -2, 0.5]) },
      },
      { producer: 'test', note: 'ünïcödé' },
    );
    const r = readSafetensors(p);
    expect(r.metadata).toEqual({ producer: 'test', note: 'ünïcödé' });
    expect(r.tensors.w).toEqual({ dtype: 'F32', shape: [2, 3, 4], data: w });
    expect(r.tensors.i!.data).toEqual(Int32Array.from([-1, 0, 2 ** 31 - 1]));
    expect(r.tensors.u!.data).toEqual(Uint8Array.from([0, 1, 254, 255]));
    expect(r.tensors.h!.data).toEqual(Uint16Array.from([0x3c00, 0xc000, 0x3800]));
    expect(Object.keys(r.tensors)).toEqual(['w', 'i', 'u', 'h']);
  });

  it('rejects inconsistent tensors on write', () => {
    const p = fresh('badw') + '.safetensors';
    expect(() => writeSafetensors(p, { a: { shape: [3], data: new Float32Array(2) } })).toThrow(/needs 3 values but data has 2/);
    expect(() => writeSafetensors(p, { a: { dtype: 'I32', shape: [2], data: new Float32Array(2) } })).toThrow(/does not match/);
    expect(() => writeSafetensors(p, { __metadata__: { shape: [1], data: new Float32Array(1) } })).toThrow(/__metadata__/);
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readdirSync(path.dirname(p)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('half-precision conversion matches hand-worked bit patterns', () => {
    const v = Float32Array.from([1, -2, 0.5, 65504, 0.1, 2 ** -24, 1e-9, Infinity, -Infinity, 70000, 0, 2 ** -14]);
    expect(Array.from(f32ToF16(v))).toEqual([0x3c00, 0xc000, 0x3800, 0x7bff, 0x2e66, 0x0001, 0x0000, 0x7c00, 0xfc00, 0x7c00, 0x0000, 0x0400]);
    expect(Array.from(f16ToF32(Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x2e66])))).toEqual([1, -2, 65504, 2 ** -24, Infinity, 0.0999755859375]);
    expect(Number.isNaN(f16ToF32(Uint16Array.from([0x7e00]))[0])).toBe(true);
  });
});

describe('safetensors corrupt files', () => {
  const good = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'I32', shape: [1], data_offsets: [8, 12] } };
  const data12 = new Array<number>(12).fill(0);
  const cases: [string, (p: string) => void, RegExp][] = [
    ['shorter than 8 bytes', (p) => fs.writeFileSync(p, Buffer.from([1, 2, 3, 4, 5])), /truncated safetensors file \(5 bytes/],
    ['empty file', (p) => fs.writeFileSync(p, Buffer.alloc(0)), /truncated safetensors file \(0 bytes/],
    [
      'header length beyond the file',
      (p) => {
        const b = Buffer.alloc(18);
        b.writeBigUInt64LE(1000n);
        fs.writeFileSync(p, b);
      },
      /header length 1000 exceeds the file size \(18 bytes\)/,
    ],
    [
      'huge header length',
      (p) => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(0xffffffffffffffffn);
        fs.writeFileSync(p, b);
      },
      /header length 18446744073709551615 exceeds/,
    ],
    ['bad JSON', (p) => craft(p, '{"a": {"dtype": ', data12), /header is not valid JSON/],
    ['JSON that is not an object', (p) => craft(p, '[1,2]', data12), /header is not a JSON object/],
    ['truncated data', (p) => craft(p, good, data12.slice(0, 10)), /tensor "b": data_offsets \[8, 12\] are beyond the data buffer \(10 bytes\)/],
    ['overlapping offsets', (p) => craft(p, { ...good, b: { dtype: 'I32', shape: [1], data_offsets: [4, 8] } }, data12), /tensor "b": data_offsets \[4, 8\] overlap/],
    ['gap between tensors', (p) => craft(p, { ...good, b: { dtype: 'I32', shape: [1], data_offsets: [9, 13] } }, [...data12, 0]), /gap before data_offsets \[9, 13\]/],
    ['trailing bytes', (p) => craft(p, good, [...data12, 0, 0]), /data buffer has 14 bytes but the tensors cover 12/],
    ['size mismatch', (p) => craft(p, { ...good, a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data12), /tensor "a": 8 bytes but shape \[3\] of F32 needs 12/],
    ['unsupported dtype', (p) => craft(p, { ...good, a: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, data12), /tensor "a": unsupported dtype "F64"/],
    ['bad offsets', (p) => craft(p, { ...good, a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, data12), /tensor "a": invalid data_offsets/],
    ['bad shape', (p) => craft(p, { ...good, a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data12), /tensor "a": invalid shape/],
    ['bad metadata', (p) => craft(p, { ...good, __metadata__: { n: 1 } }, data12), /__metadata__ must be an object of strings/],
  ];
  it('the crafted good file reads', () => {
    const p = craft(fresh('good') + '.safetensors', good, data12);
    expect(Object.keys(readSafetensors(p).tensors)).toEqual(['a', 'b']);
  });
  for (const [name, make, re] of cases) {
    it(name, () => {
      const p = fresh('corrupt') + '.safetensors';
      make(p);
      expect(() => readSafetensors(p)).toThrow(re);
      expect(() => readSafetensors(p)).toThrow(CheckpointError);
      // the message names the file
      expect(() => readSafetensors(p)).toThrow(p);
    });
  }
  it('missing file', () => {
    expect(() => readSafetensors(path.join(tmpDir(), 'nope.safetensors'))).toThrow(/nope\.safetensors: file not found/);
  });
});

describe('cross-check with Python', () => {
  const values = Float32Array.from([0.1, -3.25, 1e-30, 6.5e7, -0, 42]);
  const setup = () => {
    const p = fresh('py') + '.safetensors';
    writeSafetensors(
      p,
      {
        w: { shape: [2, 3], data: values },
        ids: { shape: [3], data: Int32Array.from([-5, 0, 123456789]) },
        h: { dtype: 'F16', shape: [2], data: Float32Array.from([0.1, -1.5]) },
      },
      { producer: 'patchflow' },
    );
    return p;
  };
  const expectJson = (out: string) => {
    const r = JSON.parse(out) as { w: number[]; ids: number[]; h: number[]; shape: number[]; meta: Record<string, string> };
    expect(r.shape).toEqual([2, 3]);
    r.w.forEach((x, i) => expect(x).toBe(values[i]));
    expect(r.ids).toEqual([-5, 0, 123456789]);
    expect(r.h).toEqual([0.0999755859375, -1.5]);
    expect(r.meta).toEqual({ producer: 'patchflow' });
  };

  it.skipIf(!py.numpy)('an independent struct/json/numpy parser reads our file (needs python3 + numpy)', () => {
    const p = setup();
    const script = `
import json, struct, sys, numpy as np
b = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', b[:8])
assert n % 8 == 0
h = json.loads(b[8:8+n].decode('utf-8'))
buf = b[8+n:]
def get(name, dt):
    e = h[name]; s, t = e['data_offsets']
    return np.frombuffer(buf[s:t], dtype=dt).reshape(e['shape'])
w = get('w', '<f4')
print(json.dumps({'w': [float(x) for x in w.ravel()], 'shape': list(w.shape), 'ids': [int(x) for x in get('ids', '<i4')],
                  'h': [float(x) for x in get('h', '<f2')], 'meta': h['__metadata__']}))
`;
    const r = spawnSync('python3', ['-c', script, p], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expectJson(r.stdout);
  });

  it.skipIf(!py.safetensors)('the Python safetensors package loads our file (skipped: python3 has no safetensors package; not installable offline)', () => {
    const p = setup();
    const script = `
import json, sys
from safetensors.numpy import load_file
from safetensors import safe_open
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], framework='np') as f: meta = f.metadata()
print(json.dumps({'w': [float(x) for x in t['w'].ravel()], 'shape': list(t['w'].shape), 'ids': [int(x) for x in t['ids']],
                  'h': [float(x) for x in t['h']], 'meta': meta}))
`;
    const r = spawnSync('python3', ['-c', script, p], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expectJson(r.stdout);
  });
});

describe('writeFileAtomic', () => {
  it('writes, overwrites and leaves no temp files', () => {
    const d = fresh('atomic');
    fs.mkdirSync(d);
    const p = path.join(d, 'f.json');
    writeFileAtomic(p, '{"a":1}');
    writeFileAtomic(p, new TextEncoder().encode('{"a":2}'));
    expect(fs.readFileSync(p, 'utf8')).toBe('{"a":2}');
    writeFileAtomic(p, [Uint8Array.from([104, 105]), Uint8Array.from([33])]);
    expect(fs.readFileSync(p, 'utf8')).toBe('hi!');
    expect(fs.readdirSync(d)).toEqual(['f.json']);
  });
  it('a failed rename leaves the old file and no temp file', () => {
    const d = fresh('atomic-fail');
    fs.mkdirSync(path.join(d, 'target'), { recursive: true });
    fs.writeFileSync(path.join(d, 'target', 'keep'), 'x');
    // renaming a file over a non-empty directory fails
    expect(() => writeFileAtomic(path.join(d, 'target'), 'data')).toThrow();
    expect(fs.readdirSync(d)).toEqual(['target']);
    expect(() => writeFileAtomic(path.join(d, 'no', 'such', 'dir.txt'), 'x')).toThrow();
  });
});

describe('checkpoint directories', () => {
  const weights = (v: number) => ({
    'tok.emb': { shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, v]) },
    'ln.g': { shape: [2], data: Float32Array.from([1, 1]) },
  });
  const optimizer = (v: number) => ({ 'm.tok.emb': { shape: [3, 2], data: new Float32Array(6).fill(v) } });
  const state = (step: number) => ({ config: { seed: 1, model: { d: 2 } }, step, sampler: { rng: [1, 2, 3, 4] } });

  it('round-trips weights, optimizer, state and tokenizer.json; loads from the run dir or the checkpoint dir', () => {
    const run = fresh('run');
    const target = saveCheckpoint(run, { weights: weights(6), optimizer: optimizer(0.5), state: state(10), tokenizerJson: '{"model":{}}' });
    expect(target).toBe(path.join(run, 'checkpoint'));
    expect(fs.readdirSync(run)).toEqual(['checkpoint']);
    expect(fs.readdirSync(target).sort()).toEqual(['model.safetensors', 'optimizer.safetensors', 'state.json', 'tokenizer.json']);
    for (const d of [run, target]) {
      const c = loadCheckpoint(d);
      expect(c.dir).toBe(target);
      expect(c.recovered).toBe(false);
      expect(c.weights).toEqual(weights(6));
      expect(c.optimizer).toEqual(optimizer(0.5));
      expect((c.state as any)).toEqual({ ...state(10), checkpointId: expect.stringMatching(/^\d+-[a-z0-9]+$/) });
      expect(c.tokenizerJson).toBe('{"model":{}}');
    }
    // second save replaces the first; no tokenizer this time
    saveCheckpoint(run, { weights: weights(7), optimizer: optimizer(1), state: state(20) });
    const c = loadCheckpoint(run);
    expect((c.state as any).step).toBe(20);
    expect(c.weights['tok.emb']!.data[5]).toBe(7);
    expect(c.tokenizerJson).toBeUndefined();
    expect(fs.readdirSync(run)).toEqual(['checkpoint']);
  });

  it('non-F32 tensors load as Float32Array', () => {
    const run = fresh('dtypes');
    saveCheckpoint(run, {
      weights: { h: { dtype: 'F16', shape: [2], data: Float32Array.from([0.5, -4]) }, i: { shape: [1], data: Int32Array.from([3]) } },
      optimizer: {},
      state: state(1),
    });
    const c = loadCheckpoint(run);
    expect(c.weights.h!.data).toEqual(Float32Array.from([0.5, -4]));
    expect(c.weights.i!.data).toEqual(Float32Array.from([3]));
    expect(c.optimizer).toEqual({});
  });

  it('recovers from a crash between the renames (only checkpoint.old left)', () => {
    const run = fresh('crash');
    saveCheckpoint(run, { weights: weights(1), optimizer: optimizer(1), state: state(5) });
    // crash after "rename checkpoint -> checkpoint.old", before "rename temp -> checkpoint";
    // the temp dir of the interrupted save is still there
    fs.renameSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.old'));
    fs.mkdirSync(path.join(run, 'checkpoint.tmp-999-abc'));
    fs.writeFileSync(path.join(run, 'checkpoint.tmp-999-abc', 'model.safetensors'), 'partial');
    const c = loadCheckpoint(run);
    expect(c.recovered).toBe(true);
    expect(c.dir).toBe(path.join(run, 'checkpoint.old'));
    expect((c.state as any).step).toBe(5);
    expect(c.weights).toEqual(weights(1));
    // the next save succeeds and cleans up
    saveCheckpoint(run, { weights: weights(2), optimizer: optimizer(2), state: state(6) });
    expect(fs.readdirSync(run)).toEqual(['checkpoint']);
    expect((loadCheckpoint(run).state as { step: number }).step).toBe(6);
  });

  it('a stale checkpoint.old next to a complete checkpoint is ignored and removed', () => {
    const run = fresh('stale');
    saveCheckpoint(run, { weights: weights(1), optimizer: optimizer(1), state: state(1) });
    fs.cpSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.old'), { recursive: true });
    saveCheckpoint(run, { weights: weights(2), optimizer: optimizer(2), state: state(2) });
    expect((loadCheckpoint(run).state as { step: number }).step).toBe(2);
    fs.cpSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.old'), { recursive: true });
    expect(loadCheckpoint(run).recovered).toBe(false);
    saveCheckpoint(run, { weights: weights(3), optimizer: optimizer(3), state: state(3) });
    expect(fs.readdirSync(run)).toEqual(['checkpoint']);
  });

  it('a failed write leaves the previous checkpoint intact', () => {
    const run = fresh('fail');
    saveCheckpoint(run, { weights: weights(1), optimizer: optimizer(1), state: state(5) });
    const before = fs.readFileSync(path.join(run, 'checkpoint', 'model.safetensors'));
    // fails after model.safetensors and optimizer.safetensors were written to the temp dir
    expect(() => saveCheckpoint(run, { weights: weights(2), optimizer: optimizer(2), state: { ...state(6), big: 1n } })).toThrow(/BigInt/);
    // fails on the optimizer tensors, after model.safetensors was written
    expect(() =>
      saveCheckpoint(run, { weights: weights(2), optimizer: { m: { shape: [4], data: new Float32Array(3) } }, state: state(6) }),
    ).toThrow(/needs 4 values/);
    // refused up front: the state would not load
    expect(() => saveCheckpoint(run, { weights: weights(2), optimizer: optimizer(2), state: { config: {} } })).toThrow(/missing field "step"/);
    expect(fs.readdirSync(run)).toEqual(['checkpoint']);
    const c = loadCheckpoint(run);
    expect((c.state as any).step).toBe(5);
    expect(c.weights).toEqual(weights(1));
    expect(fs.readFileSync(path.join(run, 'checkpoint', 'model.safetensors'))).toEqual(before);
  });

  describe('load errors', () => {
    const saved = () => {
      const run = fresh('lerr');
      saveCheckpoint(run, { weights: weights(1), optimizer: optimizer(1), state: state(3) });
      return run;
    };
    const ck = (run: string, f: string) => path.join(run, 'checkpoint', f);
    const cases: [string, () => string, RegExp][] = [
      ['directory does not exist', () => path.join(tmpDir(), 'nowhere'), /no checkpoint at .*nowhere: the directory does not exist/],
      ['empty run dir', () => (fs.mkdirSync(fresh('emptyrun')), path.join(tmpDir(), `emptyrun-${counter - 1}`)), /no checkpoint in .*emptyrun.*expected .*checkpoint/],
      ['state.json not JSON', () => { const r = saved(); fs.writeFileSync(ck(r, 'state.json'), '{"step": 3,'); return r; }, /state\.json: not valid JSON/],
      ['state.json without config', () => { const r = saved(); fs.writeFileSync(ck(r, 'state.json'), '{"step": 3}'); return r; }, /state\.json: missing field "config"/],
      ['state.json without step', () => { const r = saved(); fs.writeFileSync(ck(r, 'state.json'), '{"config": {}}'); return r; }, /state\.json: missing field "step"/],
      ['state.json missing', () => { const r = saved(); fs.rmSync(ck(r, 'state.json')); return r; }, /state\.json: file not found/],
      [
        'truncated model.safetensors',
        () => { const r = saved(); const b = fs.readFileSync(ck(r, 'model.safetensors')); fs.writeFileSync(ck(r, 'model.safetensors'), b.subarray(0, b.length - 3)); return r; },
        /model\.safetensors: tensor "ln\.g": data_offsets \[24, 32\] are beyond the data buffer/,
      ],
      [
        'garbage optimizer.safetensors',
        () => { const r = saved(); fs.writeFileSync(ck(r, 'optimizer.safetensors'), 'garbage!garbage!'); return r; },
        /optimizer\.safetensors: safetensors header length \d+ exceeds the file size/,
      ],
      ['optimizer.safetensors missing', () => { const r = saved(); fs.rmSync(ck(r, 'optimizer.safetensors')); return r; }, /optimizer\.safetensors: file not found/],
    ];
    for (const [name, make, re] of cases) {
      it(name, () => {
        const d = make();
        expect(() => loadCheckpoint(d)).toThrow(re);
        expect(() => loadCheckpoint(d)).toThrow(CheckpointError);
      });
    }
  });
});
