"""
Independent PyTorch cross-check for the patchflow scaling study (issue 14).

Trains a small GPT from a JSON config in one of three modes and records the token-level validation
loss against training tokens and FLOPs. Written from the papers' descriptions and the rules below,
not from patchflow's TypeScript:

  token   next-token training.
  patch   patch-level training (Shao, Meng, Zhou, ICLR 2025): for the first lambda of the token
          budget, each row holds K*T tokens; the K token embeddings of each group are averaged into
          one patch embedding (the position embedding of patch i is added after averaging), the
          transformer sees T patches, and the output at patch i predicts all K tokens of patch i+1:
          loss = mean over the K cross-entropies against ONE log-softmax. The same parameters then
          train token-level on the remaining 1-lambda. As in the authors' code (github
          shaochenze/PatchTrain: the token phase is a second run started from the patch
          checkpoint), the token phase starts with a fresh AdamW state and its own warmup + cosine
          schedule ("optimizer": "reset", the default); "continue" keeps both.
  sparse  block-sparse training from scratch (Srinivasan et al., SambaNova 2023): b x b block masks
          on every attention (qkv, proj) and MLP (fc, proj) weight, fixed from step 0; each matrix
          keeps exactly round((1-s) * blocks) blocks, chosen uniformly at random with the run's seed
          ("mask": "random", default: magnitude-free) or the blocks of largest init L2 norm
          ("mask": "magnitude"). Pruned weights are zeroed at init, their gradients are zeroed
          before every update and weights and AdamW moments are re-masked after it, so they stay
          exactly zero. "dense_frac" > 0 gives sparse-to-dense: masks are dropped for the last
          dense_frac of the steps (pruned weights restart from zero, one LR schedule throughout).

Model: GPT-2 style pre-LN transformer: token + learned position embeddings, blocks of
x + proj(attn(LN(x))) and x + fc2(gelu_tanh(fc1(LN(x)))), final LN, head tied to the token
embedding or untied (no bias). Init N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), biases 0.
AdamW (decay on 2-D weights only), linear warmup then cosine to min_lr_ratio*lr, global-norm clip.

Data: a UTF-8 text (a .txt file, a directory of .txt files joined with blank lines in path order,
or .jsonl with a "text" field) encoded as bytes (vocab 256) or with a byte-level BPE tokenizer.json
(GPT-2 pre-tokenizer regex and byte map, merges by rank; an own encoder, no `tokenizers` needed).
Split "tail" (default): the last val_fraction of the tokens is validation; "blocks": every
round(1/val_fraction)-th block of 4096 tokens (patchflow's rule). Training rows are random windows
of the training split (torch generator seeded with seed + 1). Evaluation: fixed windows of T+1
tokens at stride T from the start of the validation split (at most eval.max_windows), mean
token-level cross-entropy over all predicted tokens; patch-mode models are evaluated token-level.

FLOPs: training FLOPs = 3 x forward; forward per position = 2 * N_matmul + 4 * L * T * d
(N_matmul: weights of the qkv, proj, fc, fc2 and head matmuls; the attention term counts QK^T and
AV at full T). A patch position costs the same as a token position and covers K tokens; in a
sparse step the masked matrices count at their density.

Usage:
  python3 scaling_crosscheck.py CONFIG.json|'{"json": ...}' [--out result.json] [--set a.b=v ...]
Config keys and defaults: DEFAULTS below; output schema: tools/device/README.md.
Runs on torch 1.13 (CPU) and 2.x (CUDA) unchanged.
"""
import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import time
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMA = "patchflow-crosscheck/1"

DEFAULTS = {
    "name": "run",
    "corpus": None,  # path (required)
    "tokenizer": "bytes",  # "bytes" or a tokenizer.json path
    "max_corpus_bytes": 0,  # 0 = whole corpus; else only the first N bytes of text
    "model": {"n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 0, "seq_len": 64, "tied": True},
    "train": {
        "batch": 16,
        "tokens": 0,  # token budget; 0 = steps * batch * seq_len
        "steps": 200,
        "lr": 2e-3,
        "min_lr_ratio": 0.1,
        "warmup_steps": 50,  # per schedule (per phase when the patch optimizer is reset); capped at steps-1
        "weight_decay": 0.1,
        "beta1": 0.9,
        "beta2": 0.99,
        "eps": 1e-8,
        "grad_clip": 1.0,
        "seed": 0,
    },
    "eval": {"every_steps": 50, "every_tokens": 0, "max_windows": 128, "batch": 32, "val_fraction": 0.1, "split": "tail"},
    "mode": {"type": "token"},
    "device": "auto",  # auto | cpu | cuda
    "dtype": "float32",  # float32 | bf16 (autocast on cuda)
    "compile": False,  # torch.compile when available
    "threads": 0,  # torch CPU threads; 0 = leave as is
    "log_every": 10,
}

MODE_DEFAULTS = {
    "token": {},
    "patch": {"K": 4, "lambda": 2.0 / 3.0, "optimizer": "reset", "rows": "same_rows"},
    "sparse": {"sparsity": 0.75, "block": 16, "mask": "random", "dense_frac": 0.0},
}


class ConfigError(Exception):
    pass


def merge(base, over, where=""):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise ConfigError(f"unknown config key {where}{k} (known: {', '.join(sorted(base))})")
        if isinstance(base[k], dict) and k != "mode":
            if not isinstance(v, dict):
                raise ConfigError(f"config key {where}{k} must be an object")
            out[k] = merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def resolve_config(raw):
    cfg = merge(DEFAULTS, raw)
    mode = dict(cfg["mode"])
    t = mode.get("type", "token")
    if t not in MODE_DEFAULTS:
        raise ConfigError(f"mode.type must be one of {', '.join(MODE_DEFAULTS)}, got {t!r}")
    m = dict(MODE_DEFAULTS[t])
    for k, v in mode.items():
        if k == "type":
            continue
        if k not in m:
            raise ConfigError(f"unknown key mode.{k} for mode {t} (known: {', '.join(sorted(m)) or 'none'})")
        m[k] = v
    m["type"] = t
    cfg["mode"] = m
    mc = cfg["model"]
    if not mc["d_ff"]:
        mc["d_ff"] = 4 * mc["d_model"]
    if mc["d_model"] % mc["n_head"]:
        raise ConfigError("model.d_model must be a multiple of model.n_head")
    if not cfg["corpus"]:
        raise ConfigError("corpus (a .txt file, a directory of .txt files, or .jsonl) is required")
    if t == "patch":
        if not (isinstance(m["K"], int) and m["K"] >= 1):
            raise ConfigError("mode.K must be an integer >= 1")
        if not (0 <= m["lambda"] < 1):
            raise ConfigError("mode.lambda must be in [0, 1)")
        if m["optimizer"] not in ("reset", "continue"):
            raise ConfigError("mode.optimizer must be reset or continue")
        if m["rows"] not in ("same_rows", "same_tokens"):
            raise ConfigError("mode.rows must be same_rows (batch rows of K*T tokens) or same_tokens (batch/K rows)")
        if m["rows"] == "same_tokens" and cfg["train"]["batch"] % m["K"]:
            raise ConfigError("mode.rows same_tokens needs train.batch divisible by K")
    if t == "sparse":
        b = m["block"]
        if not (0 <= m["sparsity"] < 1):
            raise ConfigError("mode.sparsity must be in [0, 1)")
        if mc["d_model"] % b or mc["d_ff"] % b:
            raise ConfigError("mode.block must divide model.d_model and model.d_ff")
        if m["mask"] not in ("random", "magnitude"):
            raise ConfigError("mode.mask must be random or magnitude")
        if not (0 <= m["dense_frac"] < 1):
            raise ConfigError("mode.dense_frac must be in [0, 1)")
    if cfg["eval"]["split"] not in ("tail", "blocks"):
        raise ConfigError("eval.split must be tail or blocks")
    return cfg


# ----------------------------------------------------------------------------------------------
# corpus and tokenizers


def read_corpus(path):
    def strip_bom(s):
        return s[1:] if s.startswith("\ufeff") else s

    if os.path.isdir(path):
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for n in names:
                if n.lower().endswith(".txt") and not n.startswith("."):
                    files.append(os.path.relpath(os.path.join(root, n), path).replace(os.sep, "/"))
        files.sort()
        if not files:
            raise ConfigError(f"no .txt files in {path}")
        return "\n\n".join(strip_bom(open(os.path.join(path, f), encoding="utf-8").read()) for f in files)
    if path.lower().endswith((".jsonl", ".ndjson")):
        docs = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    docs.append(json.loads(line)["text"])
        return "\n\n".join(docs)
    with open(path, encoding="utf-8") as fh:
        return strip_bom(fh.read())


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {}
    n = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def _char_class(pred):
    """A regex character class body of all code points for which pred(category) holds."""
    ranges = []
    start = None
    for cp in range(0x110000):
        ok = pred(unicodedata.category(chr(cp)))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    esc = lambda c: "\\U%08x" % c
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


def gpt2_regex():
    """The GPT-2 pre-tokenizer regex with \\p{L}, \\p{N} and JavaScript's \\s spelled out for `re`."""
    import re

    L = _char_class(lambda c: c.startswith("L"))
    N = _char_class(lambda c: c.startswith("N"))
    WS = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
    pat = (
        f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{WS}{L}{N}]+|[{WS}]+(?![^{WS}])|[{WS}]+"
    )
    return re.compile(pat)


class BpeTokenizer:
    """Byte-level BPE from a Hugging Face tokenizer.json (BPE model, ByteLevel pre-tokenizer)."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        spec = json.loads(text)
        model = spec["model"]
        if model.get("type", "BPE") != "BPE":
            raise ConfigError(f"{path}: only BPE tokenizer.json files are supported")
        pre = spec.get("pre_tokenizer") or {}
        if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
            raise ConfigError(f"{path}: need a ByteLevel pre_tokenizer without add_prefix_space")
        if spec.get("normalizer"):
            raise ConfigError(f"{path}: normalizers are not supported here")
        self.vocab = model["vocab"]
        self.ranks = {}
        for r, m in enumerate(model["merges"]):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            self.ranks.setdefault((a, b), r)
        self.added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        ids = list(self.vocab.values()) + list(self.added.values())
        self.vocab_size = max(ids) + 1
        self.byte_char = bytes_to_unicode()
        self.regex = gpt2_regex()
        self.cache = {}

    def _bpe(self, word):
        syms = list(word)
        while len(syms) > 1:
            best, best_rank = -1, None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best < 0:
                break
            a, b = syms[best], syms[best + 1]
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        return [self.vocab[s] for s in syms]

    def encode(self, text):
        out = []
        pieces = [text]
        if self.added:
            import re

            alt = "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True))
            pieces = re.split(f"({alt})", text)
        for piece in pieces:
            if piece in self.added:
                out.append(self.added[piece])
                continue
            for m in self.regex.finditer(piece):
                w = m.group(0)
                ids = self.cache.get(w)
                if ids is None:
                    ids = self._bpe("".join(self.byte_char[b] for b in w.encode("utf-8")))
                    if len(self.cache) < 500_000:
                        self.cache[w] = ids
                out.extend(ids)
        return out


def encode_corpus(cfg):
    text = read_corpus(cfg["corpus"])
    raw = text.encode("utf-8")
    if cfg["max_corpus_bytes"]:
        raw = raw[: cfg["max_corpus_bytes"]]
        text = raw.decode("utf-8", errors="ignore")
    if cfg["tokenizer"] == "bytes":
        ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
        info = {"kind": "bytes", "vocab_size": 256}
    else:
        tok = BpeTokenizer(cfg["tokenizer"])
        ids = torch.tensor(tok.encode(text), dtype=torch.int64)
        info = {"kind": "bpe", "vocab_size": tok.vocab_size, "path": cfg["tokenizer"], "sha256": tok.sha256}
    return ids, info, len(raw)


def split_tokens(ids, frac, rule):
    n = ids.numel()
    if rule == "tail":
        nv = int(round(n * frac))
        return ids[: n - nv], ids[n - nv :]
    bs = 4096
    nb = (n + bs - 1) // bs
    is_val = [math.floor((i + 1) * frac + 1e-9) > math.floor(i * frac + 1e-9) for i in range(nb)]
    if not any(is_val):
        return split_tokens(ids, frac, "tail")
    tr = [ids[i * bs : (i + 1) * bs] for i in range(nb) if not is_val[i]]
    va = [ids[i * bs : (i + 1) * bs] for i in range(nb) if is_val[i]]
    return torch.cat(tr), torch.cat(va)


# ----------------------------------------------------------------------------------------------
# model


class Block(nn.Module):
    def __init__(self, d, h, dff):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, dff)
        self.fc2 = nn.Linear(dff, d)

    def attend(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch 1.x
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.h)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
            a = att @ v
        return self.proj(a.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attend(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, mc):
        super().__init__()
        d, L = mc["d_model"], mc["n_layer"]
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(mc["seq_len"], d)
        self.blocks = nn.ModuleList([Block(d, mc["n_head"], mc["d_ff"]) for _ in range(L)])
        self.lnf = nn.LayerNorm(d)
        self.head = None if mc["tied"] else nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("lnf"):
                nn.init.ones_(p)
            elif name.endswith("proj.weight") or name.endswith("fc2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def logits(self, x):
        x = self.lnf(x)
        return x @ self.tok.weight.t() if self.head is None else self.head(x)

    def forward(self, idx, K=1):
        """idx [B, K*T] -> logits [B, T, V]; with K > 1 the K embeddings of each patch are averaged."""
        b, n = idx.shape
        e = self.tok(idx)
        if K > 1:
            e = e.view(b, n // K, K, -1).mean(2)
        t = e.shape[1]
        x = e + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.logits(x)


def sparse_targets(model):
    """The masked matrices: attention qkv/proj and MLP fc/fc2 weights of every block."""
    out = []
    for i, blk in enumerate(model.blocks):
        for n in ("qkv", "proj", "fc", "fc2"):
            out.append((f"blocks.{i}.{n}.weight", getattr(blk, n).weight))
    return out


def block_mask(w, b, sparsity, how, gen):
    rows, cols = w.shape[0] // b, w.shape[1] // b
    nblocks = rows * cols
    keep = max(1, int(round((1 - sparsity) * nblocks)))
    if how == "random":
        order = torch.randperm(nblocks, generator=gen)
    else:
        norms = w.detach().float().cpu().reshape(rows, b, cols, b).pow(2).sum(dim=(1, 3)).reshape(-1)
        order = torch.argsort(norms, descending=True)
    m = torch.zeros(nblocks)
    m[order[:keep]] = 1.0
    return m.reshape(rows, 1, cols, 1).expand(rows, b, cols, b).reshape(w.shape).contiguous()


def matmul_params(mc, vocab):
    d, f, L = mc["d_model"], mc["d_ff"], mc["n_layer"]
    per_layer = {"qkv": 3 * d * d, "proj": d * d, "fc": d * f, "fc2": f * d}
    return per_layer, L * sum(per_layer.values()) + d * vocab


def train_flops_per_position(mc, vocab, density=1.0):
    """3 x forward FLOPs of one position: 2 * matmul weights (sparse ones at `density`) + 4 * L * T * d."""
    per_layer, _ = matmul_params(mc, vocab)
    d, L, T = mc["d_model"], mc["n_layer"], mc["seq_len"]
    fwd = 2 * (L * sum(per_layer.values()) * density + d * vocab) + 4 * L * T * d
    return 3 * fwd


# ----------------------------------------------------------------------------------------------
# training


def lr_at(step, steps, tc):
    """Linear warmup then cosine from lr to min_lr_ratio * lr over `steps` (step counts from 0)."""
    warm = min(tc["warmup_steps"], max(0, steps - 1))
    if step < warm:
        return tc["lr"] * (step + 1) / warm
    prog = (step - warm) / max(1, steps - warm)
    lo = tc["lr"] * tc["min_lr_ratio"]
    return lo + 0.5 * (tc["lr"] - lo) * (1 + math.cos(math.pi * min(1.0, prog)))


def make_optimizer(model, tc):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": tc["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc["lr"], betas=(tc["beta1"], tc["beta2"]), eps=tc["eps"])


def plan_phases(cfg, vocab):
    """Phases: name, steps, rows, K, tokens per step, FLOPs per step, schedule id."""
    tc, mc, mode = cfg["train"], cfg["model"], cfg["mode"]
    T, B = mc["seq_len"], tc["batch"]
    budget = tc["tokens"] or tc["steps"] * B * T
    dense_pos = train_flops_per_position(mc, vocab)
    if mode["type"] == "patch" and mode["lambda"] > 0:
        K = mode["K"]
        rows = B if mode["rows"] == "same_rows" else B // K
        s1 = max(1, round(mode["lambda"] * budget / (rows * K * T)))
        s2 = max(1, round((1 - mode["lambda"]) * budget / (B * T)))
        sched2 = 1 if mode["optimizer"] == "reset" else 0
        return budget, [
            {"name": "patch", "steps": s1, "rows": rows, "K": K, "tokens_per_step": rows * K * T, "flops_per_step": rows * T * dense_pos, "schedule": 0},
            {"name": "token", "steps": s2, "rows": B, "K": 1, "tokens_per_step": B * T, "flops_per_step": B * T * dense_pos, "schedule": sched2},
        ]
    steps = max(1, round(budget / (B * T)))
    if mode["type"] == "sparse":
        n_dense = int(round(mode["dense_frac"] * steps))
        sp = train_flops_per_position(mc, vocab, 1 - mode["sparsity"])
        phases = [{"name": "sparse", "steps": steps - n_dense, "rows": B, "K": 1, "tokens_per_step": B * T, "flops_per_step": B * T * sp, "schedule": 0}]
        if n_dense:
            phases.append({"name": "dense", "steps": n_dense, "rows": B, "K": 1, "tokens_per_step": B * T, "flops_per_step": B * T * dense_pos, "schedule": 0})
        return budget, phases
    return budget, [{"name": "token", "steps": steps, "rows": B, "K": 1, "tokens_per_step": B * T, "flops_per_step": B * T * dense_pos, "schedule": 0}]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run(cfg):
    t_start = time.time()
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    dev = cfg["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = cfg["dtype"] == "bf16" and device.type == "cuda"
    tc, mc, ec, mode = cfg["train"], cfg["model"], cfg["eval"], cfg["mode"]
    T = mc["seq_len"]

    ids, tok_info, corpus_bytes = encode_corpus(cfg)
    V = tok_info["vocab_size"]
    train_ids, val_ids = split_tokens(ids, ec["val_fraction"], ec["split"])
    log(f"[{cfg['name']}] corpus {cfg['corpus']}: {corpus_bytes:,} bytes, {ids.numel():,} tokens (vocab {V}); train {train_ids.numel():,}, val {val_ids.numel():,}")

    torch.manual_seed(tc["seed"])
    model = GPT(V, mc).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    _, n_matmul = matmul_params(mc, V)

    # fixed evaluation windows
    n_win = min(ec["max_windows"], (val_ids.numel() - 1) // T)
    if n_win < 1:
        raise ConfigError(f"validation split has {val_ids.numel()} tokens, fewer than one window of {T + 1}")
    starts = torch.arange(n_win) * T
    eval_windows = val_ids[starts[:, None] + torch.arange(T + 1)[None, :]]

    # sparse masks
    masks = {}
    if mode["type"] == "sparse":
        gen = torch.Generator().manual_seed(tc["seed"] + 2)
        for name, w in sparse_targets(model):
            m = block_mask(w, mode["block"], mode["sparsity"], mode["mask"], gen).to(device)
            with torch.no_grad():
                w.mul_(m)
            masks[name] = (w, m)

    fwd_model = model
    if cfg["compile"] and hasattr(torch, "compile"):
        fwd_model = torch.compile(model)

    def amp():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def loss_fn(inp, tgt, K):
        with amp():
            logits = fwd_model(inp, K)
        logp = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
        if K == 1:
            return F.nll_loss(logp.reshape(-1, V), tgt.reshape(-1))
        # tgt [B, T, K]: the K tokens of the next patch, all scored against the one distribution
        return -logp.gather(-1, tgt).mean()

    @torch.no_grad()
    def evaluate():
        model.eval()
        tot, n = 0.0, 0
        for i in range(0, n_win, ec["batch"]):
            w = eval_windows[i : i + ec["batch"]].to(device)
            with amp():
                logits = fwd_model(w[:, :-1], 1)
            l = F.cross_entropy(logits.float().reshape(-1, V), w[:, 1:].reshape(-1), reduction="sum")
            tot += l.item()
            n += w[:, 1:].numel()
        model.train()
        return tot / n

    budget, phases = plan_phases(cfg, V)
    total_steps = sum(p["steps"] for p in phases)
    data_gen = torch.Generator().manual_seed(tc["seed"] + 1)
    n_train = train_ids.numel()

    def batch(rows, K):
        L = K * (T + 1)
        if L > n_train:
            raise ConfigError(f"training split has {n_train} tokens, fewer than one window of {L}")
        s = torch.randint(0, n_train - L + 1, (rows,), generator=data_gen)
        w = train_ids[s[:, None] + torch.arange(L)[None, :]].to(device)
        if K == 1:
            return w[:, :-1], w[:, 1:]
        return w[:, : K * T], w[:, K:].reshape(rows, T, K)

    every_steps = ec["every_steps"]
    every_tokens = ec["every_tokens"]
    curve, train_log = [], []
    tokens, flops, step = 0, 0.0, 0
    next_eval_tokens = every_tokens
    v0 = evaluate()
    curve.append({"step": 0, "phase": phases[0]["name"], "tokens": 0, "flops": 0.0, "val_loss": v0})
    log(f"[{cfg['name']}] {mode['type']}: {n_params:,} params ({n_matmul:,} in matmuls), budget {budget:,} tokens, "
        + "; ".join(f"{p['name']} {p['steps']} steps x {p['tokens_per_step']} tok" for p in phases)
        + f"; device {device}; val loss at init {v0:.4f} (ln V = {math.log(V):.4f})")

    opt = make_optimizer(model, tc)
    # schedule length per schedule id
    sched_steps = {}
    for p in phases:
        sched_steps[p["schedule"]] = sched_steps.get(p["schedule"], 0) + p["steps"]
    sched_pos = {k: 0 for k in sched_steps}
    recent = []
    phase_summ = []
    for pi, ph in enumerate(phases):
        if pi > 0 and ph["schedule"] != phases[pi - 1]["schedule"]:
            opt = make_optimizer(model, tc)  # fresh AdamW moments for a new schedule
        if ph["name"] == "dense" and masks:
            masks = {}  # sparse-to-dense: pruned weights train from here on
        first_loss = None
        for _ in range(ph["steps"]):
            sid = ph["schedule"]
            lr = lr_at(sched_pos[sid], sched_steps[sid], tc)
            sched_pos[sid] += 1
            for g in opt.param_groups:
                g["lr"] = lr
            inp, tgt = batch(ph["rows"], ph["K"])
            loss = loss_fn(inp, tgt, ph["K"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for w, m in masks.values():
                w.grad.mul_(m)
            if tc["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
            opt.step()
            if masks:
                with torch.no_grad():
                    for w, m in masks.values():
                        w.mul_(m)
                        st = opt.state.get(w, {})
                        for key in ("exp_avg", "exp_avg_sq"):
                            if key in st:
                                st[key].mul_(m)
            step += 1
            tokens += ph["tokens_per_step"]
            flops += ph["flops_per_step"]
            lv = loss.item()
            if first_loss is None:
                first_loss = lv
            recent.append(lv)
            if step % cfg["log_every"] == 0 or step == total_steps:
                mean = sum(recent) / len(recent)
                recent = []
                train_log.append({"step": step, "phase": ph["name"], "tokens": tokens, "flops": flops, "loss": mean, "lr": lr})
                log(f"[{cfg['name']}] step {step}/{total_steps} {ph['name']} loss {mean:.4f} lr {lr:.2e} tokens {tokens:,}")
            due = (every_steps and step % every_steps == 0) or (every_tokens and tokens >= next_eval_tokens)
            if due or step == total_steps:
                while every_tokens and next_eval_tokens <= tokens:
                    next_eval_tokens += every_tokens
                v = evaluate()
                curve.append({"step": step, "phase": ph["name"], "tokens": tokens, "flops": flops, "val_loss": v})
                log(f"[{cfg['name']}] eval step {step}: val loss {v:.4f}")
        phase_summ.append({"name": ph["name"], "steps": ph["steps"], "K": ph["K"], "rows": ph["rows"], "tokens": ph["steps"] * ph["tokens_per_step"],
                           "flops": ph["steps"] * ph["flops_per_step"], "first_train_loss": first_loss})

    if masks:
        nz = sum(int((w != 0).sum().item()) for w, _ in masks.values())
        tot = sum(w.numel() for w, _ in masks.values())
        density = nz / tot
    else:
        density = None
    dense_flops_same_tokens = tokens * train_flops_per_position(mc, V)
    return {
        "schema": SCHEMA,
        "name": cfg["name"],
        "config": cfg,
        "torch": torch.__version__,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "tokenizer": tok_info,
        "corpus": {"path": cfg["corpus"], "bytes": corpus_bytes, "tokens": ids.numel(), "train_tokens": n_train, "val_tokens": val_ids.numel(),
                   "split": ec["split"], "eval_windows": n_win, "eval_tokens": n_win * T, "epochs": tokens / n_train},
        "model": {"params": n_params, "params_matmul": n_matmul, "train_flops_per_token": train_flops_per_position(mc, V)},
        "phases": phase_summ,
        "curve": curve,
        "train_loss": train_log,
        "final": {"val_loss": curve[-1]["val_loss"], "tokens": tokens, "flops": flops, "steps": step,
                  "flops_vs_dense_token_level": flops / dense_flops_same_tokens, "final_density": density,
                  "wall_s": time.time() - t_start},
    }


def parse_set(cfg, items):
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--set expects key.path=value, got {it!r}")
        key, val = it.split("=", 1)
        try:
            val = json.loads(val)
        except ValueError:
            pass
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = val
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description="Independent PyTorch cross-check: token, patch and block-sparse GPT training.")
    ap.add_argument("config", help="JSON config file, or an inline JSON object")
    ap.add_argument("--out", default="", help="result JSON path (default: <name>.result.json)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. --set mode.K=2 (repeatable)")
    a = ap.parse_args(argv)
    try:
        if a.config.lstrip().startswith("{"):
            raw = json.loads(a.config)
        else:
            with open(a.config, encoding="utf-8") as fh:
                raw = json.load(fh)
        cfg = resolve_config(parse_set(raw, a.set))
        result = run(cfg)
    except (ConfigError, OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"scaling_crosscheck: {type(e).__name__}: {e}\n")
        return 2
    out = a.out or f"{cfg['name']}.result.json"
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    f = result["final"]
    log(f"[{cfg['name']}] done: val loss {f['val_loss']:.4f} after {f['tokens']:,} tokens, {f['flops']:.3e} FLOPs "
        f"({f['flops_vs_dense_token_level']:.3f}x dense token-level), {f['wall_s']:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
