"""
Smoke tests of scaling_crosscheck.py on a tiny config (CPU, about a minute):
  python3 tools/device/test_scaling_crosscheck.py        (needs torch; Debian: apt-get install python3-torch)
"""
import json
import math
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scaling_crosscheck as xc  # noqa: E402

SENTENCES = [
    "Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse,",
    "and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.",
    "It is a way I have of driving off the spleen and regulating the circulation.",
    "Whenever I find myself growing grim about the mouth, I account it high time to get to sea as soon as I can.",
]


def corpus_file(tmp):
    import random

    rnd = random.Random(0)
    text = "\n".join(" ".join(rnd.choice(SENTENCES) for _ in range(3)) for _ in range(3000))
    p = os.path.join(tmp, "corpus.txt")
    with open(p, "w", encoding="utf-8") as fh:
        fh.write(text)
    return p


def config(corpus, mode, steps=30):
    return xc.resolve_config({
        "name": "t", "corpus": corpus,
        "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "seq_len": 32},
        "train": {"batch": 8, "steps": steps, "lr": 3e-3, "warmup_steps": 5},
        "eval": {"every_steps": 10, "max_windows": 32},
        "mode": mode, "log_every": 5, "threads": 2,
    })


class CrossCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.corpus = corpus_file(cls.tmp)

    def test_token(self):
        r = xc.run(config(self.corpus, {"type": "token"}))
        c = r["curve"]
        self.assertAlmostEqual(c[0]["val_loss"], math.log(256), delta=0.1)
        self.assertLess(c[-1]["val_loss"], c[0]["val_loss"] - 1.0)
        self.assertEqual(r["final"]["flops_vs_dense_token_level"], 1.0)
        json.dumps(r)  # serializable

    def test_patch(self):
        r = xc.run(config(self.corpus, {"type": "patch", "K": 4, "lambda": 2 / 3}, steps=60))
        p, t = r["phases"]
        self.assertEqual((p["name"], p["K"], t["name"], t["K"]), ("patch", 4, "token", 1))
        # patch loss starts near ln V (one log-softmax scored against K tokens) and falls
        self.assertAlmostEqual(p["first_train_loss"], math.log(256), delta=0.15)
        patch_losses = [x["loss"] for x in r["train_loss"] if x["phase"] == "patch"]
        self.assertLess(patch_losses[-1], patch_losses[0] - 0.5)
        self.assertLess(r["curve"][-1]["val_loss"], r["curve"][0]["val_loss"] - 1.0)
        # cost lambda/K + 1 - lambda of dense token-level training on the same tokens
        self.assertAlmostEqual(r["final"]["flops_vs_dense_token_level"], 2 / 3 / 4 + 1 / 3, delta=0.02)

    def test_sparse_and_sparse_to_dense(self):
        r = xc.run(config(self.corpus, {"type": "sparse", "sparsity": 0.75, "block": 8}))
        self.assertAlmostEqual(r["final"]["final_density"], 0.25, places=6)  # pruned weights stayed exactly zero
        self.assertLess(r["curve"][-1]["val_loss"], r["curve"][0]["val_loss"] - 1.0)
        r2 = xc.run(config(self.corpus, {"type": "sparse", "sparsity": 0.875, "block": 8, "mask": "magnitude", "dense_frac": 0.2}))
        self.assertEqual([p["name"] for p in r2["phases"]], ["sparse", "dense"])
        self.assertEqual(r2["phases"][1]["steps"], 6)
        self.assertIsNone(r2["final"]["final_density"])
        self.assertLess(r2["curve"][-1]["val_loss"], r2["curve"][0]["val_loss"] - 1.0)

    def test_masks_exact_block_count(self):
        import torch

        w = torch.randn(64, 32)
        m = xc.block_mask(w, 8, 0.875, "random", torch.Generator().manual_seed(0))
        blocks = m.reshape(8, 8, 4, 8).amax(dim=(1, 3))
        self.assertEqual(int(blocks.sum()), 4)  # round(0.125 * 32)
        self.assertTrue(bool(((m.reshape(8, 8, 4, 8).sum(dim=(1, 3)) % 64) == 0).all()))  # whole blocks
        mm = xc.block_mask(w, 8, 0.75, "magnitude", None)
        norms = w.reshape(8, 8, 4, 8).pow(2).sum(dim=(1, 3)).reshape(-1)
        kept = mm.reshape(8, 8, 4, 8).amax(dim=(1, 3)).reshape(-1).bool()
        self.assertGreaterEqual(float(norms[kept].min()), float(norms[~kept].max()))

    def test_bpe_encoder_hand_worked(self):
        # merges "a t", "h e", "t he" (the example in packages/trainer/test/bpe-train.test.ts)
        b2u = xc.bytes_to_unicode()
        vocab = {b2u[b]: b for b in range(256)}
        vocab.update({"at": 256, "he": 257, "the": 258})
        spec = {"version": "1.0", "added_tokens": [{"id": 259, "content": "<|endoftext|>"}], "normalizer": None,
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
                "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": vocab, "merges": ["a t", "h e", "t he"]}}
        p = os.path.join(self.tmp, "tok.json")
        with open(p, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        t = xc.BpeTokenizer(p)
        self.assertEqual(t.vocab_size, 260)
        self.assertEqual(t.encode("the cat"), [258, 32, 99, 256])
        self.assertEqual(t.encode("the<|endoftext|>hat"), [258, 259, 104, 256])
        self.assertEqual(t.encode("é"), [0xC3, 0xA9])

    def test_bad_config(self):
        with self.assertRaises(xc.ConfigError):
            xc.resolve_config({"corpus": "x", "mode": {"type": "patch", "K": 0}})
        with self.assertRaises(xc.ConfigError):
            xc.resolve_config({"corpus": "x", "mode": {"type": "sparse", "block": 7}})
        with self.assertRaises(xc.ConfigError):
            xc.resolve_config({"corpus": "x", "train": {"lrr": 1}})


if __name__ == "__main__":
    unittest.main(verbosity=2)
