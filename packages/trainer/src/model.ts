/**
 * The GPT of spec.ts run with tfjs: token embedding (+ learned positions or rotary), pre-LayerNorm
 * blocks of causal self-attention and a GELU MLP, a final LayerNorm and an LM head (optionally tied
 * to the token embedding). Every tensor stays at rank <= 4 (the webgpu backend's limit).
 */
import { tf, layerNorm, gelu, causalAttention } from '@patchflow/tensor';
import type { ModelConfig } from './config.js';
import { FINAL_NORM, LM_HEAD, POSITION_EMBEDDING, TOKEN_EMBEDDING, blockParamNames, forwardFlopsPerPosition, hasProduct, paramSpecs, type ParamSpec } from './spec.js';
import { Rng, fillNormal } from './rng.js';
import { CheckpointError } from './checkpoint.js';

export type ParamMap = Map<string, tf.Variable>;

/**
 * Computes x [M, K] @ w [K, N] (+ bias [N] when given) for one weight matrix in place of the dense
 * product (e.g. a block-sparse kernel for a pruned weight). It must equal the dense product of the
 * weight's current values and be differentiable in x, w and bias.
 */
export type MatMulImpl = (x: tf.Tensor2D, w: tf.Tensor2D, bias?: tf.Tensor) => tf.Tensor2D;

let modelCount = 0;

export class GPT {
  readonly config: ModelConfig;
  readonly params: ParamMap = new Map();
  readonly specs: ParamSpec[];
  private rope?: { cos: tf.Tensor2D; sin: tf.Tensor2D };
  private readonly matMuls = new Map<string, MatMulImpl>();
  /** tfjs variable names are global: each model instance gets its own prefix. */
  private readonly id = ++modelCount;

  constructor(config: ModelConfig, seed: number) {
    this.config = config;
    this.specs = paramSpecs(config);
    const rng = new Rng(seed);
    const residualStd = 0.02 / Math.sqrt(2 * config.nLayer);
    for (const s of this.specs) {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (s.init === 'ones') data.fill(1);
      else if (s.init === 'normal') fillNormal(data, 0.02, rng);
      else if (s.init === 'residual') fillNormal(data, residualStd, rng);
      const init = tf.tensor(data, s.shape);
      this.params.set(s.name, tf.variable(init, true, `gpt${this.id}/${s.name}`, 'float32'));
      init.dispose();
    }
  }

  /** Re-keys tfjs gradients (by variable name) to parameter names. */
  gradsByParam(grads: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = {};
    for (const s of this.specs) {
      const g = grads[this.p(s.name).name];
      if (g) out[s.name] = g;
    }
    return out;
  }

  /**
   * Routes the products with weight `param` (a projection, or the untied head: spec.ts `hasProduct`)
   * through `impl`; no impl restores the dense product.
   */
  setMatMul(param: string, impl?: MatMulImpl): void {
    this.p(param);
    const spec = this.specs.find((s) => s.name === param)!;
    if (!hasProduct(spec)) throw new Error(`setMatMul: ${param} (${spec.role}) is not a projection or head weight`);
    if (impl) this.matMuls.set(param, impl);
    else this.matMuls.delete(param);
  }

  /** Weights whose products currently go through a setMatMul impl. */
  matMulOverrides(): string[] {
    return [...this.matMuls.keys()];
  }

  p(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`no parameter ${name}`);
    return v;
  }

  parameterCount(): number {
    let n = 0;
    for (const s of this.specs) n += s.shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /** Training FLOPs per position (forward + backward = 3 × forward). */
  trainFlopsPerPosition(seqLen = this.config.seqLen): number {
    return 3 * forwardFlopsPerPosition(this.config, seqLen);
  }

  /** Token embeddings [B, T, d] of int32 ids [B, T] (no positions). */
  embed(ids: tf.Tensor2D): tf.Tensor3D {
    const [b, t] = ids.shape;
    const flat = tf.gather(this.p(TOKEN_EMBEDDING), tf.reshape(ids, [b * t]));
    return tf.reshape(flat, [b, t, this.config.dModel]);
  }

  /**
   * Runs the transformer on input embeddings x [B, T, d] (positions 0..T-1 are added here) and
   * returns logits [B*T, V].
   */
  forwardEmbeddings(x: tf.Tensor3D): tf.Tensor2D {
    const c = this.config;
    const [b, t, d] = x.shape;
    if (t > c.seqLen) throw new Error(`sequence of ${t} positions exceeds the model's seqLen ${c.seqLen}`);
    const h = c.nHead;
    const hd = d / h;
    let hs: tf.Tensor2D;
    if (c.positions === 'learned') {
      // a full-length slice would cost a Pad in the backward pass
      const pos = t === c.seqLen ? this.p(POSITION_EMBEDDING) : tf.slice(this.p(POSITION_EMBEDDING), [0, 0], [t, d]);
      hs = tf.reshape(tf.add(x, pos), [b * t, d]);
    } else {
      hs = tf.reshape(x, [b * t, d]);
    }
    const linear = (inp: tf.Tensor2D, p: { weight: string; bias: string }) => {
      const impl = this.matMuls.get(p.weight);
      if (impl) return impl(inp, this.p(p.weight) as tf.Tensor2D, this.p(p.bias));
      return tf.fused.matMul({ a: inp, b: this.p(p.weight) as tf.Tensor2D, bias: this.p(p.bias) }) as tf.Tensor2D;
    };
    const heads = (m: tf.Tensor2D) => tf.transpose(tf.reshape(m, [b, t, h, hd]), [0, 2, 1, 3]) as tf.Tensor4D;
    for (let i = 0; i < c.nLayer; i++) {
      const P = blockParamNames(i);
      const a = layerNorm(hs, this.p(P.ln1.gain), this.p(P.ln1.bias));
      const qkv = linear(a, P.qkv);
      const [q0, k0, v0] = tf.split(qkv, 3, 1) as tf.Tensor2D[];
      let q = heads(q0!);
      let k = heads(k0!);
      const v = heads(v0!);
      if (c.positions === 'rotary') {
        q = this.rotary(q, t);
        k = this.rotary(k, t);
      }
      const att = causalAttention(q, k, v);
      const merged = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [b * t, d]) as tf.Tensor2D;
      hs = tf.add(hs, linear(merged, P.out)) as tf.Tensor2D;
      const m = layerNorm(hs, this.p(P.ln2.gain), this.p(P.ln2.bias));
      const fc = gelu(linear(m, P.fc));
      hs = tf.add(hs, linear(fc, P.proj)) as tf.Tensor2D;
    }
    const f = layerNorm(hs, this.p(FINAL_NORM.gain), this.p(FINAL_NORM.bias));
    if (c.tiedEmbeddings) return tf.matMul(f, this.p(TOKEN_EMBEDDING), false, true);
    const head = this.matMuls.get(LM_HEAD);
    return head ? head(f as tf.Tensor2D, this.p(LM_HEAD) as tf.Tensor2D) : tf.matMul(f, this.p(LM_HEAD));
  }

  /** Logits [B*T, V] for token ids [B, T]. */
  forward(ids: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.forwardEmbeddings(this.embed(ids)));
  }

  /** Rotary position embedding (rotate-half form) on [B, H, T, hd]. */
  private rotary(x: tf.Tensor4D, t: number): tf.Tensor4D {
    const hd = x.shape[3];
    if (!this.rope || this.rope.cos.shape[0] < t) {
      this.rope?.cos.dispose();
      this.rope?.sin.dispose();
      const n = Math.max(t, this.config.seqLen);
      const cos = new Float32Array(n * hd);
      const sin = new Float32Array(n * hd);
      const half = hd / 2;
      for (let pos = 0; pos < n; pos++) {
        for (let i = 0; i < half; i++) {
          const ang = pos / Math.pow(10000, (2 * i) / hd);
          cos[pos * hd + i] = cos[pos * hd + i + half] = Math.cos(ang);
          sin[pos * hd + i] = sin[pos * hd + i + half] = Math.sin(ang);
        }
      }
      this.rope = { cos: tf.keep(tf.tensor2d(cos, [n, hd])), sin: tf.keep(tf.tensor2d(sin, [n, hd])) };
    }
    const cos = tf.slice(this.rope.cos, [0, 0], [t, hd]);
    const sin = tf.slice(this.rope.sin, [0, 0], [t, hd]);
    const [x1, x2] = tf.split(x, 2, 3);
    const rotated = tf.concat([tf.neg(x2!), x1!], 3);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
  }

  /** Copies weights in (e.g. from a checkpoint), checking names and shapes. */
  loadWeights(weights: Record<string, { shape: number[]; data: Float32Array }>): void {
    for (const s of this.specs) {
      const w = weights[s.name];
      if (!w) throw new CheckpointError(`checkpoint has no tensor "${s.name}" (is it from another model shape?)`);
      if (w.shape.join('x') !== s.shape.join('x')) {
        throw new CheckpointError(`checkpoint tensor "${s.name}" has shape [${w.shape}] but the model expects [${s.shape}]`);
      }
    }
    const extra = Object.keys(weights).filter((k) => !this.params.has(k));
    if (extra.length) throw new CheckpointError(`checkpoint has tensors this model lacks: ${extra.slice(0, 3).join(', ')}`);
    for (const s of this.specs) {
      const t = tf.tensor(weights[s.name]!.data, s.shape);
      this.p(s.name).assign(t);
      t.dispose();
    }
  }

  /** Weights as plain arrays (for checkpoints). */
  async exportWeights(): Promise<Record<string, { shape: number[]; data: Float32Array }>> {
    const out: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const s of this.specs) out[s.name] = { shape: s.shape, data: (await this.p(s.name).data()) as Float32Array };
    return out;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.rope?.cos.dispose();
    this.rope?.sin.dispose();
  }
}
