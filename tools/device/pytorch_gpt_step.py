"""
Reference training-step times of GPT models in PyTorch on the device GPU, for checking
patchflow's GPU hardware descriptions (issue 5, validation 2) against reality.

For each model size and precision: median time of a full training step (forward, backward,
AdamW update) over `--steps` steps after warm-up, tokens/s, achieved model TFLOP/s (6N + attention
convention) and peak memory. Also micro-benchmarks that calibrate a hardware description: dense
matmul TFLOP/s per precision and device-memory bandwidth (large copy).

Usage (on the device machine): python3 pytorch_gpt_step.py --out result.json
"""
import argparse, json, math, time, statistics
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate='tanh'))


class GPT(nn.Module):
    def __init__(self, layers, d, heads, vocab, seq):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.lnf = nn.LayerNorm(d)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.lnf(x) @ self.tok.weight.t()


def sync():
    torch.cuda.synchronize()


def time_fn(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def micro():
    out = {}
    n = 8192
    for name, dtype, tf32 in [('fp32', torch.float32, False), ('tf32', torch.float32, True), ('bf16', torch.bfloat16, False)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device='cuda', dtype=dtype)
        b = torch.randn(n, n, device='cuda', dtype=dtype)
        s = time_fn(lambda: a @ b, 10)
        out[f'matmul_{name}_tflops'] = 2 * n**3 / s / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(1 << 30, device='cuda', dtype=torch.float32)  # 4 GiB
    y = torch.empty_like(x)
    s = time_fn(lambda: y.copy_(x), 10)
    out['copy_GBps'] = 2 * x.numel() * 4 / s / 1e9  # read + write
    del x, y
    torch.cuda.empty_cache()
    return out


def step_bench(layers, d, heads, seq, batch, precision, vocab, steps):
    torch.backends.cuda.matmul.allow_tf32 = precision == 'tf32'
    torch.backends.cudnn.allow_tf32 = precision == 'tf32'
    torch.manual_seed(0)
    model = GPT(layers, d, heads, vocab, seq).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    idx = torch.randint(0, vocab, (batch, seq), device='cuda')
    tgt = torch.randint(0, vocab, (batch, seq), device='cuda')
    n_params = sum(p.numel() for p in model.parameters())

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=precision == 'bf16'):
            logits = model(idx)
            loss = F.cross_entropy(logits.float().view(-1, vocab), tgt.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    s = time_fn(step, steps)
    tokens = batch * seq
    flops = 6 * n_params * tokens + 12 * layers * seq * d * tokens  # 6N + attention (non-causal count)
    r = dict(layers=layers, d=d, heads=heads, seq=seq, batch=batch, precision=precision, vocab=vocab,
             params=n_params, step_seconds=s, tokens_per_second=tokens / s, model_tflops=flops / s / 1e12,
             peak_mem_GiB=torch.cuda.max_memory_allocated() / 2**30)
    del model, opt
    torch.cuda.empty_cache()
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='pytorch_gpt_step.json')
    ap.add_argument('--steps', type=int, default=10)
    args = ap.parse_args()
    res = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda,
               date=time.strftime('%Y-%m-%d'), micro=micro(), steps=[])
    print(json.dumps(res['micro']), flush=True)
    sizes = [(12, 768, 12, 8), (24, 1024, 16, 8), (24, 2048, 16, 4)]
    for layers, d, heads, batch in sizes:
        for precision in ['fp32', 'tf32', 'bf16']:
            r = step_bench(layers, d, heads, 1024, batch, precision, 50304, args.steps)
            print(json.dumps(r), flush=True)
            res['steps'].append(r)
    with open(args.out, 'w') as f:
        json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
