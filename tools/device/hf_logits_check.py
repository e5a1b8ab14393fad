"""
Checks `patchflow export --format hf` directories in PyTorch: the logits of the exported model
must equal the logits patchflow computed (max |difference| <= --tol, default 1e-4), and the
tokenizer.json must give patchflow's ids.

  check:    python3 tools/device/hf_logits_check.py DIR [DIR...]   [--tol 1e-4] [--loader auto|both|transformers|independent]
            DIR: a directory written by `node tools/device/hf_export_fixture.mjs OUTDIR` (an export
            plus fixture.json: input ids, patchflow's logits, a text and patchflow's ids for it), or
            the OUTDIR holding several. Exit 0 only when every check passes.
  make-hf:  python3 tools/device/hf_logits_check.py make-hf OUTDIR [--tiny]
            (needs transformers) writes tiny GPT-2 / GPT-NeoX models with transformers' own
            save_pretrained (F32, F16, BF16; tied and untied) plus patchflow_reference.json (ids and
            the logits transformers computed), for `node tools/device/hf_export_fixture.mjs
            --check-import OUTDIR` (patchflow's import of checkpoints it did not write).

Loaders (--loader auto, the default, runs transformers when it is installed and the independent
loader always):
- transformers: AutoModelForCausalLM.from_pretrained(DIR, attn_implementation="eager", float32),
  eval mode; the loading report must list no missing or unexpected weights.
- independent: written here from the formats' documentation, not from patchflow's code or
  transformers': the safetensors layout (8-byte little-endian header length, JSON header of dtype,
  shape, data_offsets, then the bytes) read with struct + numpy, and the forward of GPT-2
  (Conv1D y = x W + b with W [in, out]; learned positions; pre-LN blocks; GELU tanh; tied head =
  wte) and of GPT-NeoX (nn.Linear y = x Wᵀ + b; fused qkv viewed [heads, 3, head_dim]; rotary
  rotate-half on the first rotary_pct of each head with inv_freq = base^(-2i/rot_dim); sequential
  or parallel residual) in float64.
Tokenizer: the `tokenizers` library (Tokenizer.from_file) and, with transformers,
AutoTokenizer.from_pretrained(DIR) must encode the fixture's text to the fixture's ids and decode
them back; each is reported as skipped when its package is missing.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

try:
    import transformers  # noqa: F401
    from transformers.utils import is_torch_available

    HAVE_TRANSFORMERS = True
    # transformers disables its models when torch is too old (e.g. Debian's 1.13): config and tokenizers still work
    HAVE_TF_MODELS = is_torch_available()
    transformers.logging.set_verbosity_error()  # no progress bars or max-length notes in the report
    transformers.logging.disable_progress_bar()
except Exception:  # noqa: BLE001 - any import failure means "not usable here"
    HAVE_TRANSFORMERS = False
    HAVE_TF_MODELS = False
try:
    import tokenizers  # noqa: F401

    HAVE_TOKENIZERS = True
except Exception:  # noqa: BLE001
    HAVE_TOKENIZERS = False


# ---------------------------------------------------------------------------------------------
# independent loader

_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """name -> float64 torch tensor (float dtypes), following the safetensors format description."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[base + a:base + b]
        if e["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] in ("F64", "F32", "F16"):
            arr = np.frombuffer(raw, dtype=np.dtype(_NP[e["dtype"]]).newbyteorder("<"))
        else:
            continue  # mask buffers and the like: no weights
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(e["shape"]))
    return out


def read_weights(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(os.path.join(d, shard)))
    return out


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def causal_softmax_attention(q, k, v):
    # q, k, v: [B, H, T, hd]
    t = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


def independent_logits(d, ids):
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = read_weights(d)
    ids = torch.tensor(ids, dtype=torch.long)
    bsz, t = ids.shape
    act = cfg.get("activation_function", cfg.get("hidden_act"))
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise ValueError(f"independent loader: activation {act!r} not implemented")

    if cfg["model_type"] == "gpt2":
        pre = "transformer." if "transformer.wte.weight" in w else ""
        g = lambda k: w[pre + k]  # noqa: E731
        dm, nh = cfg["n_embd"], cfg["n_head"]
        hd = dm // nh
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        x = g("wte.weight")[ids] + g("wpe.weight")[:t]
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            a = layer_norm(x, g(p + "ln_1.weight"), g(p + "ln_1.bias"), eps)
            qkv = a @ g(p + "attn.c_attn.weight") + g(p + "attn.c_attn.bias")
            q, k, v = qkv.split(dm, dim=-1)
            heads = lambda z: z.view(bsz, t, nh, hd).transpose(1, 2)  # noqa: E731
            o = causal_softmax_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(bsz, t, dm)
            x = x + o @ g(p + "attn.c_proj.weight") + g(p + "attn.c_proj.bias")
            m = layer_norm(x, g(p + "ln_2.weight"), g(p + "ln_2.bias"), eps)
            x = x + gelu_tanh(m @ g(p + "mlp.c_fc.weight") + g(p + "mlp.c_fc.bias")) @ g(p + "mlp.c_proj.weight") + g(p + "mlp.c_proj.bias")
        f = layer_norm(x, g("ln_f.weight"), g("ln_f.bias"), eps)
        head = g("wte.weight") if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
        return (f @ head.T).numpy()

    if cfg["model_type"] == "gpt_neox":
        pre = "gpt_neox." if "gpt_neox.embed_in.weight" in w else ""
        g = lambda k: w[pre + k]  # noqa: E731
        gb = lambda k: w.get(pre + k)  # noqa: E731  (biases absent when attention_bias is false)
        dm, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        hd = dm // nh
        eps = cfg.get("layer_norm_eps", 1e-5)
        rope = cfg.get("rope_parameters") or {}
        base = rope.get("rope_theta", cfg.get("rotary_emb_base", 10000))
        pct = rope.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25))
        rot = int(hd * pct)
        inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
        ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1)
        sin = torch.cat([ang.sin(), ang.sin()], -1)

        def rotary(z):  # [B, H, T, hd]
            zr, zp = z[..., :rot], z[..., rot:]
            half = rot // 2
            rotated = torch.cat([-zr[..., half:], zr[..., :half]], -1)
            return torch.cat([zr * cos + rotated * sin, zp], -1)

        def linear(x, wname, bname):
            y = x @ g(wname).T
            b = gb(bname)
            return y if b is None else y + b

        x = g("embed_in.weight")[ids]
        for i in range(cfg["num_hidden_layers"]):
            p = f"layers.{i}."
            a = layer_norm(x, g(p + "input_layernorm.weight"), g(p + "input_layernorm.bias"), eps)
            qkv = linear(a, p + "attention.query_key_value.weight", p + "attention.query_key_value.bias")
            qkv = qkv.view(bsz, t, nh, 3 * hd).transpose(1, 2)
            q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
            o = causal_softmax_attention(rotary(q), rotary(k), v).transpose(1, 2).reshape(bsz, t, dm)
            attn = linear(o, p + "attention.dense.weight", p + "attention.dense.bias")
            mlp = lambda z: linear(gelu_tanh(linear(z, p + "mlp.dense_h_to_4h.weight", p + "mlp.dense_h_to_4h.bias")), p + "mlp.dense_4h_to_h.weight", p + "mlp.dense_4h_to_h.bias")  # noqa: E731
            if cfg.get("use_parallel_residual", True):
                x = x + attn + mlp(layer_norm(x, g(p + "post_attention_layernorm.weight"), g(p + "post_attention_layernorm.bias"), eps))
            else:
                x = x + attn
                x = x + mlp(layer_norm(x, g(p + "post_attention_layernorm.weight"), g(p + "post_attention_layernorm.bias"), eps))
        f = layer_norm(x, g("final_layer_norm.weight"), g("final_layer_norm.bias"), eps)
        head = g("embed_in.weight") if cfg.get("tie_word_embeddings", False) else w["embed_out.weight"]
        return (f @ head.T).numpy()

    raise ValueError(f"independent loader: model_type {cfg['model_type']!r} not implemented")


# ---------------------------------------------------------------------------------------------
# transformers

def transformers_model(d):
    from transformers import AutoModelForCausalLM

    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
    model, info = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", output_loading_info=True, **kw)
    model.eval()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    head_names = ("lm_head.weight", "embed_out.weight")
    problems = {}
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        v = [x for x in (info.get(k) or []) if not (k == "missing_keys" and tied and x in head_names)]
        if v:
            problems[k] = sorted(map(str, v))
    if tied and not torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight):
        problems["tied_head"] = "output embeddings differ from the input embeddings"
    return model, problems


def transformers_config_check(d, fx):
    """AutoConfig reads config.json into the settings the export means (works without torch)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(d)
    m = fx["model"]
    if fx["architecture"] == "gpt2":
        got = dict(cls=type(c).__name__, act=c.activation_function, eps=c.layer_norm_epsilon, n_inner=c.n_inner, n_positions=c.n_positions, tied=c.tie_word_embeddings,
                   drop=(c.resid_pdrop, c.embd_pdrop, c.attn_pdrop), scale=c.scale_attn_weights, inv_layer=c.scale_attn_by_inverse_layer_idx)
        want = dict(cls="GPT2Config", act="gelu_new", eps=1e-5, n_inner=m["dFF"], n_positions=m["seqLen"], tied=m["tiedEmbeddings"], drop=(0.0, 0.0, 0.0), scale=True, inv_layer=False)
    else:
        rope = getattr(c, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(c, "rope_theta", getattr(c, "rotary_emb_base", None)))
        pct = rope.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", getattr(c, "rotary_pct", None)))
        got = dict(cls=type(c).__name__, act=c.hidden_act, eps=c.layer_norm_eps, ff=c.intermediate_size, parallel=c.use_parallel_residual, theta=float(theta), pct=float(pct), tied=c.tie_word_embeddings,
                   bias=getattr(c, "attention_bias", True), drop=(c.attention_dropout, c.hidden_dropout))
        want = dict(cls="GPTNeoXConfig", act="gelu_new", eps=1e-5, ff=m["dFF"], parallel=False, theta=10000.0, pct=1.0, tied=m["tiedEmbeddings"], bias=True, drop=(0.0, 0.0))
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    return got["cls"], bad


def transformers_logits(d, ids):
    model, problems = transformers_model(d)
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long)).logits.double().numpy()
    return out, type(model).__name__, problems


# ---------------------------------------------------------------------------------------------
# tokenizer

def tokenizer_checks(d, text, want):
    res = []
    if HAVE_TOKENIZERS:
        from tokenizers import Tokenizer

        t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        ids = t.encode(text).ids
        ok = ids == want and t.decode(ids, skip_special_tokens=False) == text
        res.append(("tokenizers " + tokenizers.__version__, ok, "" if ok else first_diff(ids, want)))
    else:
        res.append(("tokenizers", None, "not installed"))
    if HAVE_TRANSFORMERS:
        from transformers import AutoTokenizer

        try:
            t = AutoTokenizer.from_pretrained(d)
            ids = t(text, add_special_tokens=False)["input_ids"]
            back = t.decode(ids, skip_special_tokens=False)
            ok = ids == want and back == text
            res.append((f"AutoTokenizer ({type(t).__name__})", ok, "" if ok else (first_diff(ids, want) if ids != want else f"decode gives {back[:40]!r}…")))
        except Exception as e:  # noqa: BLE001
            res.append(("AutoTokenizer", False, f"{type(e).__name__}: {e}"))
    else:
        res.append(("AutoTokenizer", None, "transformers not installed"))
    return res


def first_diff(a, b):
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{len(a)} vs {len(b)} ids; first difference at {i}: {a[max(0, i - 2):i + 4]} vs {b[max(0, i - 2):i + 4]}"


# ---------------------------------------------------------------------------------------------

def check_dir(d, tol, loader):
    fx = json.load(open(os.path.join(d, "fixture.json")))
    ids = fx["ids"]
    ours = np.array(fx["logits"], dtype=np.float64)
    scale = float(np.abs(ours).max())
    lines = []
    ok = True
    use_tf = loader in ("transformers", "both") or (loader == "auto" and HAVE_TF_MODELS)
    use_ind = loader in ("independent", "both", "auto")
    if HAVE_TRANSFORMERS:
        try:
            cls, bad = transformers_config_check(d, fx)
            lines.append(f"transformers {transformers.__version__} AutoConfig: {cls}, " + ("settings as exported ok" if not bad else f"settings differ (got, want): {bad} FAIL"))
            ok &= not bad
        except Exception as e:  # noqa: BLE001
            lines.append(f"transformers AutoConfig: {type(e).__name__}: {e} FAIL")
            ok = False
    if use_tf and not HAVE_TF_MODELS:
        lines.append("transformers models: " + ("not installed" if not HAVE_TRANSFORMERS else f"unavailable with torch {torch.__version__}") + " FAIL")
        ok = False
    elif not use_tf:
        lines.append("transformers models: skipped (" + ("not installed" if not HAVE_TRANSFORMERS else f"unavailable with torch {torch.__version__}" if not HAVE_TF_MODELS else "--loader independent") + ")")
    if use_tf and HAVE_TF_MODELS:
        try:
            got, cls, problems = transformers_logits(d, ids)
            diff = float(np.abs(got - ours).max())
            good = diff <= tol and not problems and cls == fx["model_class"]
            extra = "" if not problems else f"; loading report: {problems}"
            if cls != fx["model_class"]:
                extra += f"; loaded {cls}, config names {fx['model_class']}"
            lines.append(f"transformers {transformers.__version__} {cls}: max|Δlogits| {diff:.2e}{extra} {'ok' if good else 'FAIL'}")
            ok &= good
        except Exception as e:  # noqa: BLE001
            lines.append(f"transformers: {type(e).__name__}: {e} FAIL")
            ok = False
    if use_ind:
        try:
            got = independent_logits(d, ids)
            diff = float(np.abs(got - ours).max())
            lines.append(f"independent loader (torch {torch.__version__}, float64): max|Δlogits| {diff:.2e} {'ok' if diff <= tol else 'FAIL'}")
            ok &= diff <= tol
        except Exception as e:  # noqa: BLE001
            lines.append(f"independent loader: {type(e).__name__}: {e} FAIL")
            ok = False
    for name, good, why in tokenizer_checks(d, fx["text"], fx["text_ids"]):
        if good is None:
            lines.append(f"{name}: skipped ({why})")
        else:
            lines.append(f"{name}: {len(fx['text_ids'])} ids {'same, decodes back' if good else 'DIFFER: ' + why}")
            ok &= good
    print(f"{fx['variant']} ({fx['model_class']}, {fx['model']['vocabSize']} vocab, logits up to {scale:.2f}): {'PASS' if ok else 'FAIL'}")
    for line in lines:
        print("    " + line)
    return ok


def fixture_dirs(paths):
    out = []
    for p in paths:
        if os.path.exists(os.path.join(p, "fixture.json")):
            out.append(p)
        elif os.path.isdir(p):
            out += sorted(os.path.join(p, x) for x in os.listdir(p) if os.path.exists(os.path.join(p, x, "fixture.json")))
    return out


def make_hf(out_dir, tiny=False):
    """Tiny models written by transformers itself, for patchflow's import check (--tiny: two of a
    few KB each, the fixtures committed in packages/trainer/test/fixtures/hf-written/)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    os.makedirs(out_dir, exist_ok=True)
    major = int(transformers.__version__.split(".")[0])
    # transformers 5 reads rotary settings from rope_parameters; 4.x from the legacy keys (5 still converts those)
    rope = dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}) if major >= 5 else dict(rotary_pct=1.0, rotary_emb_base=10000)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (1, 8) if tiny else (2, 20), generator=gen)
    common = dict(vocab_size=256, bos_token_id=None, eos_token_id=None)
    tiny_specs = [
        ("gpt2-bf16-tied", GPT2LMHeadModel, GPT2Config(n_positions=8, n_embd=8, n_layer=1, n_head=2, n_inner=12, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common), torch.bfloat16),
        ("neox-f16-untied", GPTNeoXForCausalLM, GPTNeoXConfig(max_position_embeddings=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12, hidden_act="gelu_new", use_parallel_residual=False, tie_word_embeddings=False, **rope, **common), torch.float16),
    ]
    specs = tiny_specs if tiny else [
        ("gpt2-f32-tied", GPT2LMHeadModel, GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common), torch.float32),
        ("gpt2-f16-untied", GPT2LMHeadModel, GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=48, tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common), torch.float16),
        ("gpt2-bf16-tied", GPT2LMHeadModel, GPT2Config(n_positions=32, n_embd=32, n_layer=1, n_head=2, activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common), torch.bfloat16),
        ("neox-f32-untied", GPTNeoXForCausalLM, GPTNeoXConfig(max_position_embeddings=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, hidden_act="gelu_new", use_parallel_residual=False, tie_word_embeddings=False, **rope, **common), torch.float32),
        ("neox-f16-tied", GPTNeoXForCausalLM, GPTNeoXConfig(max_position_embeddings=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=80, hidden_act="gelu_new", use_parallel_residual=False, tie_word_embeddings=True, **rope, **common), torch.float16),
    ]
    for name, cls, cfg, dtype in specs:
        torch.manual_seed(len(name))
        model = cls(cfg)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "layernorm" in pname or "ln_" in pname or "layer_norm" in pname:
                    p.copy_(torch.randn_like(p) * 0.2 + (1.0 if pname.endswith("weight") else 0.0))
                else:
                    p.copy_(torch.randn_like(p) * 0.25)
        model = model.to(dtype)
        d = os.path.join(out_dir, name)
        model.save_pretrained(d)
        # the logits of the saved directory, loaded afresh in float32 (not the in-memory model: casting
        # it to float16 and back also rounds NeoX's rotary inv_freq buffer, which a load recomputes)
        model, problems = transformers_model(d)
        if problems:
            raise RuntimeError(f"{d}: transformers' own load reports {problems}")
        with torch.no_grad():
            logits = model(ids).logits
        json.dump({"ids": ids.tolist(), "logits": [[[float(f"{x:.7g}") for x in row] for row in b] for b in logits.tolist()], "writer": f"transformers {transformers.__version__}, torch {torch.__version__}, {str(dtype).replace('torch.', '')}"}, open(os.path.join(d, "patchflow_reference.json"), "w"))
        print(f"wrote {d} ({cls.__name__}, {str(dtype).replace('torch.', '')}, files: {', '.join(sorted(os.listdir(d)))})")
    return 0


def main(argv):
    if argv and argv[0] == "make-hf":
        rest = [a for a in argv[1:] if a != "--tiny"]
        if len(rest) != 1:
            sys.exit("usage: hf_logits_check.py make-hf OUTDIR [--tiny]")
        if not HAVE_TF_MODELS:
            sys.exit("make-hf needs transformers with a torch it supports")
        return make_hf(rest[0], tiny="--tiny" in argv)
    ap = argparse.ArgumentParser(description="check patchflow HF exports against PyTorch (see the module docstring)")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--loader", choices=["auto", "both", "transformers", "independent"], default="auto")
    a = ap.parse_args(argv)
    dirs = fixture_dirs(a.dirs)
    if not dirs:
        sys.exit(f"no directory with fixture.json in {a.dirs} (write them with: node tools/device/hf_export_fixture.mjs OUTDIR)")
    print(f"torch {torch.__version__}; transformers {transformers.__version__ if HAVE_TRANSFORMERS else 'not installed'}; tokenizers {tokenizers.__version__ if HAVE_TOKENIZERS else 'not installed'}; tolerance {a.tol:g}")
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    results = [check_dir(d, a.tol, a.loader) for d in dirs]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
