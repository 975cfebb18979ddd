"""A small Llama written in plain PyTorch: the reference Tessera's Llama is checked against.

Written from the architecture as Hugging Face transformers' LlamaForCausalLM computes it (RMSNorm,
rotary embeddings in the rotate-half convention with Llama 3 frequency scaling, grouped-query
attention, SwiGLU, optional tied head), reading and writing Hugging Face's file layout
(config.json, model.safetensors with HF tensor names), so the two implementations share nothing
but the files.

    python torch_llama.py fixture OUT_DIR   # writes the test fixture tests/data/llama_tiny uses
    python torch_llama.py check DIR         # recomputes DIR's logits and losses, compares

A fixture holds: config.json, model.safetensors (random init, seed 0), batches.safetensors
(ids [steps+1, B, T+1] int32: the forward input is row 0, training step s uses row s), and
expected.safetensors (logits of row 0 in f32, and the losses of `steps` AdamW steps).
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

# Training settings the C++ test repeats (tests/test_llama.cpp).
STEPS, BATCH, SEQ = 20, 2, 16
LR, BETAS, EPS, WEIGHT_DECAY = 3e-3, (0.9, 0.95), 1e-8, 0.1

TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 64, "vocab_size": 256, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float32",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
}


def inv_frequencies(cfg):
    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type") == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        orig = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (orig / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > orig / low, inv / factor, inv)
        mid = (wavelen <= orig / low) & (wavelen >= orig / high)
        scaled = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
        inv = scaled
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(params, cfg, ids):
    """logits [B, T, V] of ids [B, T] (positions 0..T-1)."""
    B, T = ids.shape
    C, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hs, eps = C // H, cfg["rms_norm_eps"]
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_frequencies(cfg)[None, :]
    cos = torch.cat((angles.cos(), angles.cos()), -1).float()  # [T, hs]
    sin = torch.cat((angles.sin(), angles.sin()), -1).float()
    x = params["model.embed_tokens.weight"][ids]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = lambda n: params[f"model.layers.{i}.{n}"]
        h = rms_norm(x, p("input_layernorm.weight"), eps)
        q = (h @ p("self_attn.q_proj.weight").T).view(B, T, H, hs).transpose(1, 2)
        k = (h @ p("self_attn.k_proj.weight").T).view(B, T, Hkv, hs).transpose(1, 2)
        v = (h @ p("self_attn.v_proj.weight").T).view(B, T, Hkv, hs).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hs) + mask, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + ctx @ p("self_attn.o_proj.weight").T
        h = rms_norm(x, p("post_attention_layernorm.weight"), eps)
        gate, up = h @ p("mlp.gate_proj.weight").T, h @ p("mlp.up_proj.weight").T
        x = x + (F.silu(gate) * up) @ p("mlp.down_proj.weight").T
    x = rms_norm(x, params["model.norm.weight"], eps)
    head = params["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else params["lm_head.weight"]
    return x @ head.T


def init_params(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    C, V, F_ = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hs = C // H
    randn = lambda *shape: torch.randn(*shape, generator=g) * 0.02
    params = {"model.embed_tokens.weight": randn(V, C)}
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        params[pre + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        params[pre + "self_attn.q_proj.weight"] = randn(H * hs, C)
        params[pre + "self_attn.k_proj.weight"] = randn(Hkv * hs, C)
        params[pre + "self_attn.v_proj.weight"] = randn(Hkv * hs, C)
        params[pre + "self_attn.o_proj.weight"] = randn(C, C)
        params[pre + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        params[pre + "mlp.gate_proj.weight"] = randn(F_, C)
        params[pre + "mlp.up_proj.weight"] = randn(F_, C)
        params[pre + "mlp.down_proj.weight"] = randn(C, F_)
    params["model.norm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    if not cfg["tie_word_embeddings"]:
        params["lm_head.weight"] = randn(V, C)
    return params


def train_losses(params, cfg, batches):
    """Losses of STEPS AdamW steps (decay on matrices only, as Tessera's default filter)."""
    params = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    decay = [t for t in params.values() if t.dim() >= 2]
    no_decay = [t for t in params.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    losses = []
    for s in range(1, STEPS + 1):
        row = batches[s].long()
        logits = forward(params, cfg, row[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), row[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float32)


def make_fixture(out):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    cfg = TINY
    params = init_params(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    batches = torch.randint(0, cfg["vocab_size"], (STEPS + 1, BATCH, SEQ + 1), generator=g,
                            dtype=torch.int32)
    with torch.no_grad():
        logits = forward(params, cfg, batches[0][:, :-1].long())
    losses = train_losses(params, cfg, batches)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({n: t.contiguous() for n, t in params.items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    save_file({"ids": batches}, os.path.join(out, "batches.safetensors"))
    save_file({"logits": logits.contiguous(), "losses": losses},
              os.path.join(out, "expected.safetensors"))
    print(f"fixture in {out}: logits {tuple(logits.shape)}, losses {losses[0]:.4f} -> "
          f"{losses[-1]:.4f} over {STEPS} steps")


def check(folder):
    from safetensors.torch import load_file
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    params = load_file(os.path.join(folder, "model.safetensors"))
    batches = load_file(os.path.join(folder, "batches.safetensors"))["ids"]
    expected = load_file(os.path.join(folder, "expected.safetensors"))
    with torch.no_grad():
        logits = forward(params, cfg, batches[0][:, :-1].long())
    rel = ((logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
    print(f"logits: max relative difference {rel:.2e}")
    losses = train_losses(params, cfg, batches)
    print(f"losses: max abs difference {(losses - expected['losses']).abs().max().item():.2e}")


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)
    if len(sys.argv) != 3 or sys.argv[1] not in ("fixture", "check"):
        sys.exit(__doc__)
    (make_fixture if sys.argv[1] == "fixture" else check)(sys.argv[2])
