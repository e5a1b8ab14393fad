"""
PyTorch anchors for `patchflow bench gpu`: training tokens/s of the same GPT shapes (byte vocabulary,
pre-LN blocks, GELU tanh, learned positions, tied head, AdamW) in PyTorch eager mode on the same GPU,
in fp32, tf32 and bf16 autocast, measured in the same device call as patchflow's run.

Usage (on the device): python3 torch_gpu_anchor.py --out torch.json [--steps 30]
"""
import argparse, json, time
import torch
import torch.nn.functional as F

SHAPES = [
    ("4L d256 T128 B16", 4, 256, 4, 128, 16),
    ("6L d512 T256 B16", 6, 512, 8, 256, 16),
    ("12L d768 T512 B8", 12, 768, 12, 512, 8),
]


# the same GPT as the H100 reference step times (pytorch_gpt_step.py, beside this file)
from pytorch_gpt_step import GPT


def tokens_per_second(layers, d, heads, seq, batch, mode, steps):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    model = GPT(layers, d, heads, 256, seq).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    x = torch.randint(0, 256, (batch, seq + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, 256), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return batch * seq / dt, dt * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    rows = []
    for label, layers, d, heads, seq, batch in SHAPES:
        row = {"shape": label}
        for mode, key in (("fp32", "torchFp32TokensPerSecond"), ("tf32", "torchTf32TokensPerSecond"), ("bf16", "torchBf16TokensPerSecond")):
            tps, ms = tokens_per_second(layers, d, heads, seq, batch, mode, a.steps)
            row[key] = tps
            row[key.replace("TokensPerSecond", "MsPerStep")] = ms
            print(f"{label} {mode}: {tps:,.0f} tokens/s ({ms:.2f} ms/step)", flush=True)
        rows.append(row)
    # fp32 and tf32 matmul at 4096^3 for reference
    a4 = torch.randn(4096, 4096, device="cuda")
    mm = {}
    for mode in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        for _ in range(3):
            a4 @ a4
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            a4 @ a4
        torch.cuda.synchronize()
        mm[f"torch{mode.capitalize()}Tflops4096"] = 2 * 4096**3 / ((time.perf_counter() - t0) / 20) / 1e12
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda, "rows": rows, "matmul": mm}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(mm), flush=True)


if __name__ == "__main__":
    main()
