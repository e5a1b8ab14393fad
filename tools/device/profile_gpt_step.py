# Diagnostic: which CUDA kernels PyTorch eager runs in one training step of tools/device/pytorch_gpt_step.py's GPT,
# their durations, GPU busy time vs wall time; plus SDPA and launch micro-benchmarks.
import sys, os, json, time, statistics, gzip
sys.path.insert(0, 'tools/device')
import torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
import pytorch_gpt_step as P
OUT = os.environ.get('OUT', '/tmp')
res = {'torch': torch.__version__, 'configs': [], 'micro': {}}
sizes = [(12, 768, 12, 8), (24, 1024, 16, 8), (24, 2048, 16, 4)]
V = 50304
for layers, d, heads, batch in sizes:
    for prec in ['fp32', 'tf32', 'bf16']:
        torch.backends.cuda.matmul.allow_tf32 = prec == 'tf32'
        torch.backends.cudnn.allow_tf32 = prec == 'tf32'
        torch.manual_seed(0)
        model = P.GPT(layers, d, heads, V, 1024).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        idx = torch.randint(0, V, (batch, 1024), device='cuda'); tgt = torch.randint(0, V, (batch, 1024), device='cuda')
        def step():
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=prec == 'bf16'):
                logits = model(idx)
                loss = F.cross_entropy(logits.float().view(-1, V), tgt.view(-1))
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        wall = P.time_fn(step, 5)
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
            step(); torch.cuda.synchronize()
        ev = [e for e in pr.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        by = {}
        for e in ev:
            k = e.name[:160]
            c = by.setdefault(k, [0, 0.0]); c[0] += 1; c[1] += e.device_time
        busy = sum(e.device_time for e in ev)
        t0 = min(e.time_range.start for e in ev); t1 = max(e.time_range.end for e in ev)
        name = f'{layers}x{d}_{prec}'
        res['configs'].append({'name': name, 'wall_ms': wall * 1e3, 'gpu_busy_ms': busy / 1e3, 'gpu_span_ms': (t1 - t0) / 1e3, 'kernels': len(ev),
                               'by_name': sorted([[k, v[0], v[1]] for k, v in by.items()], key=lambda x: -x[2])})
        if d == 768 and prec != 'fp32':
            seq = [[e.name[:100], e.time_range.start - t0, e.device_time] for e in sorted(ev, key=lambda e: e.time_range.start)]
            with gzip.open(f'{OUT}/seq_{name}.json.gz', 'wt') as f: json.dump(seq, f)
        print(name, 'wall', round(wall * 1e3, 2), 'busy', round(busy / 1e3, 2), 'span', round((t1 - t0) / 1e3, 2), 'kernels', len(ev), flush=True)
        del model, opt; torch.cuda.empty_cache()
# launch micro-benchmarks
x = torch.zeros(1024, device='cuda')
for n in [1, 2]:
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(5000): x.add_(1.0)
    torch.cuda.synchronize(); res['micro']['eager_tiny_add_us'] = (time.perf_counter() - t) / 5000 * 1e6
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    for _ in range(1000): x.add_(1.0)
for n in [1, 2]:
    torch.cuda.synchronize(); t = time.perf_counter(); g.replay(); torch.cuda.synchronize()
    res['micro']['graph_tiny_add_us'] = (time.perf_counter() - t) / 1000 * 1e6
print(res['micro'])
with open(f'{OUT}/prof.json', 'w') as f: json.dump(res, f)
