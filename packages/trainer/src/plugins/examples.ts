/**
 * Two small, real plugins that show the hook interface (docs/architecture.md walks through them).
 *
 * neftune: NEFTune (Jain et al., 2023) adds uniform noise of scale alpha / sqrt(T * d) to the input
 *   embeddings during training (hook: transformEmbeddings).
 * labelSmoothing: cross-entropy against (1 - eps) * one-hot + eps / V (Szegedy et al., 2016)
 *   (hook: loss), computed from one log-softmax of the logits.
 */
import { tf, crossEntropy } from '@patchflow/tensor';
import { PluginError, addToAllPhases, type TrainerPlugin } from '../plugin.js';
import { checkSettingKeys, registerPlugin } from '../composition.js';
import { Rng } from '../rng.js';

export function neftune(alpha = 5, seed = 7): TrainerPlugin {
  if (!(typeof alpha === 'number' && alpha > 0)) throw new PluginError(`invalid config: plugins.neftune.alpha must be a number > 0, got ${JSON.stringify(alpha)}`);
  let rng = new Rng(seed);
  return {
    name: 'neftune',
    plan: (phases) => addToAllPhases(phases, 'neftune', { alpha }),
    transformEmbeddings(emb) {
      const [b, t, d] = emb.shape;
      const scale = alpha / Math.sqrt(t * d);
      const noise = new Float32Array(b * t * d);
      for (let i = 0; i < noise.length; i++) noise[i] = (rng.next() * 2 - 1) * scale;
      return tf.add(emb, tf.tensor3d(noise, [b, t, d]));
    },
    saveState: () => ({ json: { rng: rng.state() } }),
    loadState: (s) => {
      rng = Rng.fromState((s.json as { rng: number[] }).rng);
    },
  };
}

export function labelSmoothing(eps = 0.1): TrainerPlugin {
  if (!(typeof eps === 'number' && eps >= 0 && eps < 1)) throw new PluginError(`invalid config: plugins.label-smoothing.eps must be a number in [0, 1), got ${JSON.stringify(eps)}`);
  return {
    name: 'label-smoothing',
    plan: (phases) => addToAllPhases(phases, 'label-smoothing', { eps }),
    compiled: () => ({ labelSmoothing: eps }),
    loss(logits, labels) {
      // -sum_v target_v log p_v = (1 - eps) * CE(labels) + eps * mean_v(-log p_v), and
      // mean_v(-log p_v) = logsumexp(logits) - mean_v(logits): one log-softmax, via the fused op
      return tf.tidy(() => {
        const hard = tf.mean(crossEntropy(logits, labels));
        const uniform = tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.mean(logits, 1)));
        return tf.add(tf.mul(hard, 1 - eps), tf.mul(uniform, eps)) as tf.Scalar;
      });
    },
  };
}

registerPlugin({
  name: 'neftune',
  create: (s) => {
    checkSettingKeys('neftune', s, ['alpha']);
    return neftune(s.alpha === undefined ? undefined : (s.alpha as number));
  },
  description: 'NEFTune: uniform noise on the input embeddings (Jain et al., 2023)',
});

registerPlugin({
  name: 'label-smoothing',
  create: (s) => {
    checkSettingKeys('label-smoothing', s, ['eps']);
    return labelSmoothing(s.eps === undefined ? undefined : (s.eps as number));
  },
  description: 'label smoothing of the cross-entropy (Szegedy et al., 2016)',
});
