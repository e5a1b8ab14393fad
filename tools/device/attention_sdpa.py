# Micro-benchmark: causal scaled_dot_product_attention kernel time per precision at a reference shape
# (T 2048, d_model 5120 as in GPT-3 13B: 40 heads x 128 and 80 heads x 64; batch 4): GPU time of the kernels of the forward call and of
# the backward call (the attention kernels only; helper kernels reported apart), from the profiler, median of 10; FLOPs 4*B*H*T^2*D*(T+1)/(2T) fwd, 2.5x bwd.
import os, json, statistics, torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity, record_function
res = {}
for (B, H, T, D) in [(4, 40, 2048, 128), (4, 80, 2048, 64)]:
    fwd_flops = 4 * B * H * T * T * D * (T + 1) / (2 * T)
    for name, dt, tf in [('fp32', torch.float32, False), ('tf32', torch.float32, True), ('bf16', torch.bfloat16, False)]:
        torch.backends.cuda.matmul.allow_tf32 = tf; torch.backends.cudnn.allow_tf32 = tf
        q, k, v = (torch.randn(B, T, H, D, device='cuda', dtype=dt).transpose(1, 2).requires_grad_() for _ in range(3))
        do = torch.randn(B, H, T, D, device='cuda', dtype=dt)
        def rep():
            for t in (q, k, v): t.grad = None
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch.cuda.synchronize()
            with record_function('BWD'):
                o.backward(do); torch.cuda.synchronize()
        for _ in range(5): rep()
        fw, bw, hp = [], [], []
        for _ in range(10):
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
                rep()
            ev = [e for e in pr.events() if e.device_type == torch.autograd.DeviceType.CUDA and e.name != 'BWD']
            b0 = [e for e in pr.events() if e.name == 'BWD'][0].time_range.start
            main = lambda e: 'fmha' in e.name or 'sdpa' in e.name
            fw.append(sum(e.device_time for e in ev if e.time_range.start < b0 and main(e)))
            bw.append(sum(e.device_time for e in ev if e.time_range.start >= b0 and main(e)))
            hp.append(sum(e.device_time for e in ev if not main(e)))
        f_us, b_us = statistics.median(fw), statistics.median(bw)
        key = f'B{B}_H{H}_T{T}_D{D}_{name}'
        res[key] = dict(fwd_us=f_us, bwd_us=b_us, helpers_us=statistics.median(hp), fwd_tflops=fwd_flops / f_us / 1e6, bwd_tflops=2.5 * fwd_flops / b_us / 1e6,
                        kernels=sorted({e.name[:60] for e in ev}))
        print(key, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res[key].items()}, flush=True)
        del q, k, v, do
with open(os.environ.get('OUT', '/tmp') + '/attn.json', 'w') as fh: json.dump(res, fh, indent=1)
