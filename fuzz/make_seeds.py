#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (fuzz/corpus/<target>/) and the config dictionary.

Small valid files, a few hundred bytes each, in the layouts the parsers read (see the comments
in fuzz/fuzz_*.cpp for the targets that add a mode byte). Run from anywhere:
    python3 fuzz/make_seeds.py
The output is committed; rerun only when a format or the config key table changes.
"""
import gzip
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def gzip_bytes(data):
    return gzip.compress(data, mtime=0)  # mtime 0: the same bytes on every run


# ---- safetensors: u64 header length, JSON header, data section ----
def safetensors(tensors, metadata=None):
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "I32": 4, "I64": 8, "U16": 2}
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = sizes[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 37 + 11) % 256 for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


write("safetensors", "all_dtypes", safetensors(
    [("w", "F32", [2, 3]), ("b", "BF16", [4]), ("h", "F16", [1, 2]), ("i", "I32", [3]),
     ("l", "I64", [1]), ("t", "U16", [2, 1, 2]), ("e", "F32", [0, 3])],
    {"format": "pt", "step": "7"}))
write("safetensors", "five_dims", safetensors([("x", "F32", [1, 2, 1, 2, 1])]))
write("safetensors", "metadata_only", safetensors([], {"a": "b"}))
write("safetensors", "empty", safetensors([]))

# ---- llm.c token shards: 256 x int32 header {20240520, 1, count}, then uint16 tokens ----
def shard(tokens):
    header = struct.pack("<3i", 20240520, 1, len(tokens)) + b"\0" * (256 * 4 - 12)
    return header + struct.pack(f"<{len(tokens)}H", *tokens)


write("shard", "tokens16", shard([50256, 1, 2, 3, 65535, 0, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]))
write("shard", "empty", shard([]))
# llm.c's Llama 3 layout: magic 20240801, version 7, uint32 tokens.
write("shard", "tokens32", struct.pack("<3i", 20240801, 7, 6) + b"\0" * (256 * 4 - 12) +
      struct.pack("<6I", 128000, 0, 65536, 70000, 2**31 - 1, 5))

# ---- IDX (fuzz_idx: mode byte, see fuzz/fuzz_idx.cpp) ----
def idx(magic, dims):
    n = 1
    for d in dims:
        n *= d
    return (struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) +
            bytes((i * 7) % 256 for i in range(n)))


def labels(n, classes):
    return struct.pack(">II", 0x801, n) + bytes(i % classes for i in range(n))


images = idx(0x803, [3, 4, 5])
write("idx", "images", b"\0" + images)
write("idx", "labels", b"\0" + labels(6, 10))
write("idx", "images_gz", b"\0" + gzip_bytes(images))
for name, img, lab in [("dataset", images, labels(3, 4)),
                       ("dataset_gz", gzip_bytes(images), gzip_bytes(labels(3, 4)))]:
    # Odd mode byte: (mode >> 1) % 16 + 1 = 4 classes; then the split point.
    write("idx", name, bytes([2 * 3 + 1]) + struct.pack("<H", len(img)) + img + lab)

# ---- llm.c GPT-2 checkpoints: 256 x int32 header, then the parameters ----
def llmc(version, maxT, V, L, NH, C, Vp):
    n = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C
    header = struct.pack("<8i", 20240326, version, maxT, V, L, NH, C, Vp) + b"\0" * (248 * 4)
    if version == 3:
        body = struct.pack(f"<{n}f", *[((i % 17) - 8) / 64 for i in range(n)])
    else:  # bf16: the top half of an f32
        body = b"".join(struct.pack("<f", ((i % 17) - 8) / 64)[2:] for i in range(n))
    return header + body


write("llmc", "f32_tiny", llmc(3, 4, 8, 1, 2, 4, 16))
write("llmc", "bf16_tiny", llmc(5, 2, 3, 2, 1, 2, 4))

# ---- checkpoint JSON (fuzz_ckpt: mode byte 0 manifest.json, 1 trainer_state.json) ----
manifest = {"format": "tessera-checkpoint", "version": 1, "step": 4, "world_size": 2,
            "files": {"config.toml": {"bytes": 812, "crc32": "0a1b2c3d"},
                      "model.safetensors": {"bytes": 90112, "crc32": "deadbeef"}}}
state = {"format": "tessera-checkpoint", "version": 1, "step": 4, "world_size": 2,
         "zero_stage": 1, "data": {"seed": 1338, "offset": 32},
         "rngs": {"dropout": {"seed": 77, "offset": 4096}, "sample": {"seed": 1339, "offset": 0}},
         "loss_scale": {"scale": 1.0, "clean_steps": 0, "skipped_steps": 0}, "bad_steps": {"total": 0, "in_a_row": 0},
         "last_lr": 0.001,
         "optimizer": {"name": "adamw", "steps": 4, "flat_numel": 64,
                       "shards": [{"file": "optimizer_rank0.safetensors", "begin": 0, "end": 32},
                                  {"file": "optimizer_rank1.safetensors", "begin": 32, "end": 64}]}}
write("ckpt", "manifest", b"\0" + json.dumps(manifest, separators=(",", ":")).encode())
write("ckpt", "trainer_state", b"\1" + json.dumps(state, separators=(",", ":")).encode())
ckpt_words = set()
for doc in (manifest, state):
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            ckpt_words.update(f'"\\"{k}\\""' for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            ckpt_words.add(f'"\\"{v}\\""')
ckpt_words.update(['"{"', '"}"', '"["', '"]"', '":"', '","', '"1e308"', '"-0.0"', '"null"',
                   '"18446744073709551615"', '"9223372036854775807"', '"-1"', '"true"'])
(ROOT / "fuzz" / "ckpt.dict").write_text(
    "# checkpoint JSON field names and values (written by fuzz/make_seeds.py)\n" +
    "".join(f"{w}\n" for w in sorted(ckpt_words)))

# ---- tokenizer (fuzz_tokenizer: mode byte 0 = tokenizer.json, 1 / 2 = text to encode) ----
def byte_level_chars():
    """GPT-2's bytes_to_unicode(): the character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 256
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(extra)
            extra += 1
    return chars


def tokenizer_json(pre_tokenizer, merges_as_pairs):
    chars = byte_level_chars()
    vocab = {chars[b]: b for b in range(256)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    return json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": len(vocab), "content": "<|endoftext|>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "ignore_merges": not merges_as_pairs, "vocab": vocab,
                  "merges": [list(m) if merges_as_pairs else " ".join(m) for m in merges]},
    }, ensure_ascii=False).encode()


llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
write("tokenizer", "gpt2_json", b"\0" + tokenizer_json({"type": "ByteLevel"}, True))
write("tokenizer", "llama3_json", b"\0" + tokenizer_json(
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "use_regex": False}]}, False))
sample = "It's 2024: naïve café, 1234567 € — 😀👍🏽 <|endoftext|>\r\n\n\tend's  ".encode()
write("tokenizer", "text_gpt2", b"\1" + sample)
write("tokenizer", "text_llama3", b"\2" + sample)

# ---- config TOML (fuzz_config: optional "%%" line, then overrides) ----
for src in sorted((ROOT / "configs").glob("*.toml")):
    write("config", src.stem, src.read_bytes())
write("config", "overrides", b'[model]\nkind = "gpt"\n\n[data]\nkind = "text"\npath = "x"\n'
      b"%%\ntrain.steps=10\noptim.lr=3e-4\nmodel.preset=gpt2-124m\ntrain.seq_len=64\n")
write("config", "empty", b"")

# ---- TESSERA_FAULT_FS values (fuzz_fault_fs) ----
for name, value in [("enospc", b"enospc"), ("bytes", b"enospc:4096"), ("bytes_seconds", b"enospc:123:5"),
                    ("largest", b"enospc:999999999999999999:999999999999999999"), ("empty", b"")]:
    write("fault_fs", name, value)
(ROOT / "fuzz" / "fault_fs.dict").write_text(
    "# TESSERA_FAULT_FS tokens (written by fuzz/make_seeds.py)\n" +
    "".join(f"{w}\n" for w in ['"enospc"', '":"', '"999999999999999999"', '"0"']))

# ---- Hugging Face Llama: config.json and a sharded checkpoint's index (fuzz_llama) ----
llama_config = {"model_type": "llama", "hidden_act": "silu", "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "max_position_embeddings": 16, "vocab_size": 32,
                "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8}}
write("llama", "config", json.dumps(llama_config).encode())
write("llama", "config_no_scaling", json.dumps({**llama_config, "rope_scaling": None}).encode())
write("llama", "index", json.dumps({"metadata": {"total_size": 64}, "weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"}}).encode())

# The config dictionary: every key, its section and field names, and every string choice, from
# the generated reference docs/CONFIG.md.
words = set(['"["', '"]"', '"="', '"\\""', '"%%\\x0a"', '"[["', '"inf"', '"nan"', '"1e-3"',
             '"true"', '"\'\'\'"', '"\\"\\"\\""', '"0x"', '"1979-05-27T07:32:00Z"'])
for line in (ROOT / "docs" / "CONFIG.md").read_text().splitlines():
    m = re.match(r"\| `(\w+)\.(\w+)` \| \w+ \| `[^`]*` \| ([^|]*) \|", line)
    if not m:
        continue
    section, field, valid = m.groups()
    words.update([f'"{section}.{field}"', f'"[{section}]"', f'"{field} = "'])
    words.update(f'"\\"{c}\\""' for c in re.findall(r'"([^"]*)"', valid))
(ROOT / "fuzz" / "config.dict").write_text(
    "# TOML tokens and Tessera's config keys (written by fuzz/make_seeds.py)\n" +
    "".join(f"{w}\n" for w in sorted(words)))

# The tokenizer.json dictionary: field names, types and values the reader looks at.
tok_words = ['"model"', '"type"', '"BPE"', '"vocab"', '"merges"', '"ignore_merges"', '"dropout"',
             '"byte_fallback"', '"continuing_subword_prefix"', '"pre_tokenizer"', '"ByteLevel"',
             '"Sequence"', '"pretokenizers"', '"Split"', '"pattern"', '"Regex"', '"String"',
             '"behavior"', '"Isolated"', '"invert"', '"use_regex"', '"add_prefix_space"',
             '"added_tokens"', '"content"', '"special"', '"lstrip"', '"decoder"', '"normalizer"',
             '"post_processor"', '"TemplateProcessing"', '"id"', '"true"', '"false"', '"null"',
             '"\\\\p{L}+"', '"(?i:"', '"\\\\s+(?!\\\\S)"', '"\\\\u0120"',
             '"<|endoftext|>"']
(ROOT / "fuzz" / "tokenizer.dict").write_text(
    "# tokenizer.json tokens (written by fuzz/make_seeds.py)\n" +
    "".join(f"{w}\n" for w in tok_words))

# The safetensors dictionary: the header's field names and dtypes, JSON punctuation.
st_words = ['"__metadata__"', '"dtype"', '"shape"', '"data_offsets"', '"F32"', '"BF16"', '"F16"',
            '"I32"', '"I64"', '"U16"', '"F64"', '"{"', '"}"', '"["', '"]"', '":"', '","',
            '"18446744073709551615"', '"9223372036854775807"', '"-1"', '"1e3"', '"null"',
            '"\\\\u0000"']
(ROOT / "fuzz" / "safetensors.dict").write_text(
    "# safetensors header tokens (written by fuzz/make_seeds.py)\n" +
    "".join(f"{w}\n" for w in st_words))
