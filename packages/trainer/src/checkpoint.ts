/**
 * safetensors files and atomic checkpoint directories.
 *
 * safetensors layout: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, ..., "__metadata__": {k: "v"}}` padded with
 * spaces to a multiple of 8, then the tensor bytes (little-endian), contiguous in header order;
 * offsets are relative to the start of that byte buffer.
 *
 * A checkpoint is the directory `<run>/checkpoint/` holding model.safetensors, optimizer.safetensors,
 * state.json and (for Hugging Face tokenizers) tokenizer.json. It is replaced as a whole: the new
 * one is written and fsynced in a temp sibling `checkpoint.tmp-*`, then `checkpoint` is renamed to
 * `checkpoint.old`, the temp dir to `checkpoint`, and `checkpoint.old` is removed. A crash between
 * the renames leaves only `checkpoint.old`, which loadCheckpoint falls back to.
 */
import { EXIT_CODES, PatchflowError } from '@patchflow/tensor';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export class CheckpointError extends PatchflowError {
  override name = 'CheckpointError';
}

/**
 * The environment refused a write (full disk, quota, read-only or permission-denied directory, an
 * I/O error): not a bug, and not the user's input either; a CLI exits with code 4.
 */
export class StorageError extends PatchflowError {
  override name = 'StorageError';
  override readonly exitCode = EXIT_CODES.storage;
  constructor(
    message: string,
    /** The errno code (ENOSPC, EACCES, ...). */
    readonly code?: string,
    /** The file or directory that could not be written. */
    readonly path?: string,
  ) {
    super(message);
  }
}

const STORAGE_ERRNO: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large for the file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
  ENOTDIR: 'a path component is not a directory',
  EISDIR: 'is a directory',
  ENAMETOOLONG: 'file name too long',
};

/**
 * `e` as a StorageError ("could not write <what> (<path>): <why> (<CODE>)<context>") when it is an
 * errno error of the environment, or a StorageError to restate with this `what` (the path it names
 * is kept); undefined for anything else (a bug stays a bug).
 */
export function asStorageError(e: unknown, what: string, file?: string, context = ''): StorageError | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (!code || !(code in STORAGE_ERRNO)) return undefined;
  const where = e instanceof StorageError ? e.path : (file ?? (e as NodeJS.ErrnoException).path);
  return new StorageError(`could not write ${what}${where ? ` (${where})` : ''}: ${STORAGE_ERRNO[code]} (${code})${context}`, code, where);
}

export type SafetensorsDtype = 'F32' | 'I32' | 'U8' | 'F16';
export type TensorData = Float32Array | Int32Array | Uint8Array | Uint16Array;

export interface TensorEntry {
  /** Inferred from the array when omitted: Float32Array F32, Int32Array I32, Uint8Array U8, Uint16Array F16 (raw half bits). */
  dtype?: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

export interface ReadTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** F16 comes back as raw half-precision bits (Uint16Array); see f16ToF32. */
  data: TensorData;
}

export interface FloatTensor {
  shape: number[];
  data: Float32Array;
}

const DTYPE_SIZE: Record<SafetensorsDtype, number> = { F32: 4, I32: 4, U8: 1, F16: 2 };
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

function inferDtype(data: TensorData): SafetensorsDtype {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof Uint8Array) return 'U8';
  if (data instanceof Uint16Array) return 'F16';
  throw new CheckpointError('unsupported tensor array type');
}

function arrayMatches(dtype: SafetensorsDtype, data: TensorData): boolean {
  return (
    (dtype === 'F32' && data instanceof Float32Array) ||
    (dtype === 'I32' && data instanceof Int32Array) ||
    (dtype === 'U8' && data instanceof Uint8Array) ||
    (dtype === 'F16' && (data instanceof Uint16Array || data instanceof Float32Array))
  );
}

function prod(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Little-endian bytes of a typed array (a view when the host is little-endian). */
function leBytes(data: TensorData): Uint8Array {
  if (LITTLE_ENDIAN_HOST || data.BYTES_PER_ELEMENT === 1) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) dv.setFloat32(i * 4, data[i]!, true);
    else if (data instanceof Int32Array) dv.setInt32(i * 4, data[i]!, true);
    else dv.setUint16(i * 2, data[i]!, true);
  }
  return out;
}

/** IEEE half bits -> float32 values. */
export function f16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) out[i] = s * m * 2 ** -24;
    else if (e === 31) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** float32 values -> IEEE half bits (round to nearest even; overflow to infinity). */
export function f32ToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    f[0] = values[i]!;
    const x = u[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    out[i] = sign | h;
  }
  return out;
}

/** Serialises tensors to safetensors chunks: [prefix + header, tensor bytes...]. */
export function encodeSafetensors(tensors: Record<string, TensorEntry>, metadata?: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new CheckpointError('a tensor cannot be named "__metadata__"');
    const dtype = t.dtype ?? inferDtype(t.data);
    if (!(dtype in DTYPE_SIZE)) throw new CheckpointError(`tensor "${name}": unsupported dtype ${dtype}`);
    if (!arrayMatches(dtype, t.data)) throw new CheckpointError(`tensor "${name}": dtype ${dtype} does not match its ${t.data.constructor.name}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new CheckpointError(`tensor "${name}": shape ${JSON.stringify(t.shape)} must be non-negative integers`);
    }
    const n = prod(t.shape);
    if (t.data.length !== n) throw new CheckpointError(`tensor "${name}": shape [${t.shape}] needs ${n} values but data has ${t.data.length}`);
    const data = dtype === 'F16' && t.data instanceof Float32Array ? f32ToF16(t.data) : t.data;
    const bytes = leBytes(data);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new CheckpointError(`metadata "${k}" must be a string`);
    header.__metadata__ = metadata;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  head.fill(0x20, 8 + json.length);
  return [head, ...chunks];
}

/** Parses a safetensors file's bytes; every inconsistency is a CheckpointError naming `label`. */
export function decodeSafetensors(bytes: Uint8Array, label = '<buffer>'): { tensors: Record<string, ReadTensor>; metadata: Record<string, string> } {
  const bad = (msg: string) => new CheckpointError(`${label}: ${msg}`);
  if (bytes.length < 8) throw bad(`truncated safetensors file (${bytes.length} bytes, shorter than the 8-byte header length)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(bytes.length - 8)) throw bad(`safetensors header length ${n} exceeds the file size (${bytes.length} bytes); the file is truncated or corrupt`);
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw bad(`safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad('safetensors header is not a JSON object');
  const bufStart = 8 + headerLen;
  const bufLen = bytes.length - bufStart;
  const tensors: Record<string, ReadTensor> = {};
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw bad('__metadata__ must be an object of strings');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw bad(`tensor "${name}": header entry is not an object`);
    const dtype = e.dtype as SafetensorsDtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZE)) throw bad(`tensor "${name}": unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`tensor "${name}": invalid shape ${JSON.stringify(shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0) || off[0] > off[1]) {
      throw bad(`tensor "${name}": invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (end > bufLen) throw bad(`tensor "${name}": data_offsets [${begin}, ${end}] are beyond the data buffer (${bufLen} bytes); the file is truncated or corrupt`);
    const want = prod(shape as number[]) * DTYPE_SIZE[dtype];
    if (end - begin !== want) throw bad(`tensor "${name}": ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${want}`);
    spans.push({ name, begin, end });
    tensors[name] = { dtype, shape: shape as number[], data: new Uint8Array(0) };
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const s of spans) {
    if (s.begin < pos) throw bad(`tensor "${s.name}": data_offsets [${s.begin}, ${s.end}] overlap the previous tensor (ends at ${pos})`);
    if (s.begin > pos) throw bad(`tensor "${s.name}": gap before data_offsets [${s.begin}, ${s.end}] (previous tensor ends at ${pos}); tensors must be contiguous`);
    pos = s.end;
  }
  if (pos !== bufLen) throw bad(`the data buffer has ${bufLen} bytes but the tensors cover ${pos}`);
  for (const s of spans) {
    const t = tensors[s.name]!;
    const src = bytes.subarray(bufStart + s.begin, bufStart + s.end);
    const copy = new Uint8Array(src.length);
    copy.set(src);
    const count = src.length / DTYPE_SIZE[t.dtype];
    if (t.dtype === 'U8') t.data = copy;
    else if (LITTLE_ENDIAN_HOST) {
      t.data = t.dtype === 'F32' ? new Float32Array(copy.buffer) : t.dtype === 'I32' ? new Int32Array(copy.buffer) : new Uint16Array(copy.buffer);
    } else {
      const d = new DataView(copy.buffer);
      if (t.dtype === 'F32') t.data = Float32Array.from({ length: count }, (_, i) => d.getFloat32(i * 4, true));
      else if (t.dtype === 'I32') t.data = Int32Array.from({ length: count }, (_, i) => d.getInt32(i * 4, true));
      else t.data = Uint16Array.from({ length: count }, (_, i) => d.getUint16(i * 2, true));
    }
  }
  return { tensors, metadata };
}

export function writeSafetensors(file: string, tensors: Record<string, TensorEntry>, metadata?: Record<string, string>): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

export function readSafetensors(file: string): { tensors: Record<string, ReadTensor>; metadata: Record<string, string> } {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(code === 'ENOENT' ? `${file}: file not found` : `${file}: cannot read (${(e as Error).message})`);
  }
  return decodeSafetensors(bytes, file);
}

// ---------------------------------------------------------------------------------------------
// atomic writes

type FileData = string | Uint8Array | Uint8Array[];

/** Writes and fsyncs a file (not atomic by itself). */
function writeSynced(file: string, data: FileData): void {
  const fd = fs.openSync(file, 'w');
  try {
    const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Array.isArray(data) ? data : [data];
    for (const c of chunks) {
      let off = 0;
      while (off < c.byteLength) off += fs.writeSync(fd, c, off, c.byteLength - off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync a directory so renames inside it are durable (best effort: not every platform allows it). */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // ignored (e.g. Windows)
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function tmpSuffix(): string {
  return `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Writes `data` to a temp file in the same directory, fsyncs it, then renames it over `file`. */
export function writeFileAtomic(file: string, data: FileData): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${tmpSuffix()}`);
  try {
    writeSynced(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
}

// ---------------------------------------------------------------------------------------------
// checkpoint directories

export interface CheckpointData {
  weights: Record<string, TensorEntry>;
  optimizer: Record<string, TensorEntry>;
  /** Trainer-owned JSON; must have `config` and `step`. */
  state: unknown;
  /** tokenizer.json content (Hugging Face tokenizers), stored as checkpoint/tokenizer.json. */
  tokenizerJson?: string;
}

export interface LoadedCheckpoint {
  /** The directory the checkpoint was read from. */
  dir: string;
  /** True when it came from checkpoint.old (a save crashed between its renames). */
  recovered: boolean;
  weights: Record<string, FloatTensor>;
  optimizer: Record<string, FloatTensor>;
  /** state.json as parsed; run-state.ts's readCheckpointState types a training checkpoint's. */
  state: unknown;
  tokenizerJson?: string;
}

export const CHECKPOINT_DIR = 'checkpoint';
export const CHECKPOINT_OLD_DIR = 'checkpoint.old';
const TMP_PREFIX = 'checkpoint.tmp-';

function checkStateFields(state: unknown, where: string): void {
  if (state === null || typeof state !== 'object' || Array.isArray(state)) throw new CheckpointError(`${where}: state must be a JSON object`);
  const s = state as Record<string, unknown>;
  if (s.config === undefined || s.config === null || typeof s.config !== 'object') throw new CheckpointError(`${where}: missing field "config"`);
  if (!Number.isInteger(s.step) || (s.step as number) < 0) throw new CheckpointError(`${where}: missing field "step" (a non-negative integer)`);
}

/**
 * Atomically replaces `<dir>/checkpoint` with a new checkpoint (see the module comment). Every file
 * of one save carries the same checkpoint id (state.json `checkpointId`, safetensors metadata
 * `checkpoint_id`), so a reader can tell a complete checkpoint from files of two saves. A write the
 * environment refuses throws StorageError; the previous checkpoint is then untouched.
 */
export function saveCheckpoint(dir: string, data: CheckpointData): string {
  checkStateFields(data.state, `checkpoint for ${dir}`);
  const id = tmpSuffix();
  const tmp = path.join(dir, TMP_PREFIX + id);
  const target = path.join(dir, CHECKPOINT_DIR);
  const old = path.join(dir, CHECKPOINT_OLD_DIR);
  let current = dir;
  try {
    fs.mkdirSync(dir, { recursive: true });
    // Temp dirs left by a crashed save are garbage.
    for (const e of fs.readdirSync(dir)) if (e.startsWith(TMP_PREFIX)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
    current = tmp;
    fs.mkdirSync(tmp);
    const write = (file: string, content: FileData) => {
      current = path.join(tmp, file);
      writeSynced(current, content);
    };
    try {
      const meta = { producer: 'patchflow', checkpoint_id: id };
      write('model.safetensors', encodeSafetensors(data.weights, meta));
      write('optimizer.safetensors', encodeSafetensors(data.optimizer, meta));
      if (data.tokenizerJson !== undefined) write('tokenizer.json', data.tokenizerJson);
      write('state.json', JSON.stringify({ ...(data.state as object), checkpointId: id }, null, 2) + '\n');
      fsyncDir(tmp);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
    current = dir;
    if (fs.existsSync(target)) {
      // A leftover checkpoint.old next to a complete checkpoint is stale.
      fs.rmSync(old, { recursive: true, force: true });
      fs.renameSync(target, old);
    }
    fs.renameSync(tmp, target);
    fsyncDir(dir);
    fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    throw asStorageError(e, 'the checkpoint', current) ?? e;
  }
  return target;
}

function isCheckpointDir(d: string): boolean {
  return fs.existsSync(path.join(d, 'state.json')) || fs.existsSync(path.join(d, 'model.safetensors'));
}

function toFloat(t: ReadTensor): FloatTensor {
  if (t.data instanceof Float32Array) return { shape: t.shape, data: t.data };
  if (t.dtype === 'F16') return { shape: t.shape, data: f16ToF32(t.data as Uint16Array) };
  return { shape: t.shape, data: Float32Array.from(t.data) };
}

/** Blocks the thread for `ms` (loadCheckpoint is synchronous). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Loads a checkpoint from a run directory (or a checkpoint directory itself). Safe while a run is
 * saving into the same directory: when a file vanishes mid-read (the swap renamed its directory) or
 * the files' checkpoint ids differ (they come from two saves), it reads again, so it always returns
 * one complete checkpoint.
 */
export function loadCheckpoint(dir: string): LoadedCheckpoint {
  for (let attempt = 0; ; attempt++) {
    try {
      return loadOnce(dir);
    } catch (e) {
      if (!(e instanceof TornCheckpoint) || attempt >= 20) throw e instanceof TornCheckpoint ? e.cause : e;
      sleepSync(25);
    }
  }
}

/** A read that raced with a save; loadCheckpoint retries it. */
class TornCheckpoint extends Error {
  constructor(override readonly cause: CheckpointError) {
    super(cause.message);
  }
}

function loadOnce(dir: string): LoadedCheckpoint {
  if (!fs.existsSync(dir)) throw new CheckpointError(`no checkpoint at ${dir}: the directory does not exist`);
  let ck: string;
  let recovered = false;
  if (isCheckpointDir(dir)) ck = dir;
  else if (fs.existsSync(path.join(dir, CHECKPOINT_DIR))) ck = path.join(dir, CHECKPOINT_DIR);
  else if (fs.existsSync(path.join(dir, CHECKPOINT_OLD_DIR))) {
    ck = path.join(dir, CHECKPOINT_OLD_DIR);
    recovered = true;
  } else throw new CheckpointError(`no checkpoint in ${dir} (expected ${path.join(dir, CHECKPOINT_DIR)}/ with state.json and model.safetensors)`);
  // a file that vanished under us: the directory was swapped mid-read (unless it is a plain checkpoint dir)
  const vanished = (err: CheckpointError) => (ck === dir ? err : new TornCheckpoint(err));

  const statePath = path.join(ck, 'state.json');
  let stateText: string;
  try {
    stateText = fs.readFileSync(statePath, 'utf8');
  } catch {
    throw vanished(new CheckpointError(`${statePath}: file not found (incomplete checkpoint)`));
  }
  let state: unknown;
  try {
    state = JSON.parse(stateText);
  } catch (e) {
    throw new CheckpointError(`${statePath}: not valid JSON (${(e as Error).message})`);
  }
  checkStateFields(state, statePath);
  const id = (state as { checkpointId?: unknown }).checkpointId;
  const floats = (file: string) => {
    const full = path.join(ck, file);
    let read: ReturnType<typeof readSafetensors>;
    try {
      read = readSafetensors(full);
    } catch (e) {
      if (e instanceof CheckpointError && e.message.endsWith(': file not found')) throw vanished(e);
      throw e;
    }
    const { tensors, metadata } = read;
    if (typeof id === 'string' && metadata.checkpoint_id !== undefined && metadata.checkpoint_id !== id) {
      throw new TornCheckpoint(new CheckpointError(`${ck}: ${file} (checkpoint ${metadata.checkpoint_id}) and state.json (checkpoint ${id}) come from different saves`));
    }
    return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, toFloat(t)]));
  };
  const weights = floats('model.safetensors');
  const optimizer = floats('optimizer.safetensors');
  const tokPath = path.join(ck, 'tokenizer.json');
  let tokenizerJson: string | undefined;
  try {
    tokenizerJson = fs.readFileSync(tokPath, 'utf8');
  } catch {
    tokenizerJson = undefined;
  }
  // the directory still holds the save we started reading (else the tokenizer may be another's)
  let again: unknown;
  try {
    again = JSON.parse(fs.readFileSync(statePath, 'utf8'));
  } catch {
    throw vanished(new CheckpointError(`${statePath}: changed while being read`));
  }
  if ((again as { checkpointId?: unknown }).checkpointId !== id) throw new TornCheckpoint(new CheckpointError(`${ck}: changed while being read`));
  return { dir: ck, recovered, weights, optimizer, state, tokenizerJson };
}
