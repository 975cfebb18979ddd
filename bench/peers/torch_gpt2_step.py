#!/usr/bin/env python3
"""PyTorch's GPT-2 training step, the peer of Tessera's build-*/bench_train_step.

The same model as Tessera's nn::GPT (src/nn/gpt.h): the gpt2-124m preset (12 layers, 12 heads,
768 channels, context 1024, vocabulary 50257), learned position embeddings, pre-LayerNorm
blocks, GELU (tanh approximation), causal attention, output head tied to the token embedding,
no dropout, GPT-2 initialisation. The same step: a batch of random token windows, forward,
cross-entropy, backward, AdamW (lr 3e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on
matrices only), f32 or bf16 autocast on the CPU (parameters stay f32), on the same thread count,
with the same warm-up and timed steps. Eager mode, PyTorch's own fastest kernels: fused
scaled_dot_product_attention, fused AdamW.

    bench/peers/.venv/bin/python bench/peers/torch_gpt2_step.py --batch 4 --seq 64 --precision bf16

The last line is machine-readable for compare.sh:
    RESULT impl=torch precision=bf16 batch=4 seq=64 tokens_per_s=... ms_per_step=...
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, n_head, n_layer):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        for lin in (self.c_attn, self.c_fc):
            nn.init.normal_(lin.weight, 0.0, 0.02)
            nn.init.zeros_(lin.bias)
        for lin in (self.attn_proj, self.mlp_proj):  # residual projections: GPT-2's scaling
            nn.init.normal_(lin.weight, 0.0, 0.02 / math.sqrt(2 * n_layer))
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        hs = C // self.n_head
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer=12, n_head=12, C=768, context=1024, vocab=50257):
        super().__init__()
        self.wte = nn.Embedding(vocab, C)
        self.wpe = nn.Embedding(context, C)
        nn.init.normal_(self.wte.weight, 0.0, 0.02)
        nn.init.normal_(self.wpe.weight, 0.0, 0.02)
        self.h = nn.ModuleList(Block(C, n_head, n_layer) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        T = idx.shape[1]
        pos = torch.arange(T, dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


PRESETS = {"gpt2-124m": (12, 12, 768)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--adamw", default="fused", choices=["fused", "foreach", "loop"],
                    help="AdamW implementation (default: fused, PyTorch's fastest on the CPU)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    n_layer, n_head, C = PRESETS[a.model]
    model = GPT(n_layer, n_head, C)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    kind = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8, **kind[a.adamw])
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(5)
    corpus = torch.randint(0, 50257, (1 << 20,), generator=gen)
    tokens = a.batch * a.seq

    print(f"torch {torch.__version__} train step: {a.model} ({n_params} parameters), batch "
          f"{a.batch} x {a.seq}, {a.precision}, {torch.get_num_threads()} threads, "
          f"{a.warmup} warm-up + {a.steps} timed steps, AdamW {a.adamw}", flush=True)
    timed = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        starts = torch.randint(0, corpus.numel() - a.seq - 1, (a.batch,), generator=gen)
        rows = torch.stack([corpus[s:s + a.seq + 1] for s in starts.tolist()])
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = model(x, y)
        loss.backward()
        opt.step()
        sec = time.perf_counter() - t0
        measured = step >= a.warmup
        if measured:
            timed.append(sec)
        print(f"step {step + 1:2d}: loss {loss.item():.4f}  {sec * 1e3:8.1f} ms  "
              f"{tokens / sec:8.0f} tok/s{'' if measured else '  (warm-up)'}", flush=True)
    mean = sum(timed) / len(timed)
    print(f"\ntimed: mean {mean * 1e3:.1f} ms/step, {tokens / mean:.0f} tokens/s")
    print(f"RESULT impl=torch precision={a.precision} batch={a.batch} seq={a.seq} "
          f"threads={a.threads} tokens_per_s={tokens / mean:.1f} ms_per_step={mean * 1e3:.2f}")


if __name__ == "__main__":
    main()
