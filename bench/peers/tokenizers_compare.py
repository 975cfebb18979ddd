#!/usr/bin/env python3
"""Tessera's byte-level BPE tokenizer against Hugging Face `tokenizers`: same ids, and speed.

  bench/peers/setup_tokenizers.sh                  # once: bench/peers/.venv-tok
  bench/peers/.venv-tok/bin/python bench/peers/tokenizers_compare.py \
      --tessera build-cpu/tessera [--write-test-data]

(a) trains a byte-level BPE (GPT-2 pre-tokenization, vocabulary --vocab-size, special token
    <|endoftext|>, all 256 bytes in the alphabet) with `tokenizers` on the KJV; with
    --write-test-data it writes that tokenizer.json and its ids for the torture text and a KJV
    excerpt to tests/data/, which tests/test_tokenizer.cpp checks without Python; the same for
    a small Llama 3-style tokenizer (its regex as a Split, ignore_merges) trained on those two;
(b) compares `tessera tokenizer encode` ids with `tokenizers`' on the whole KJV and the torture
    text, for that tokenizer and for one Tessera's trainer wrote (loaded by `tokenizers`), and
    whether both trainers learned the same merges;
(c) times encoding (MB/s) on one core and on all cores, for both: Tessera encodes the file as
    one text (cut for threads internally), `tokenizers` the same text as ~4 KiB pieces with
    encode_batch (RAYON_NUM_THREADS threads); bench/peers/wait_quiet.sh first on a shared box.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def hf_train(corpus, vocab_size, out_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The whole file as one text: `train([path])` would feed it line by line, so no word could
    # hold a newline followed by other whitespace ("\n  "), as Tessera's trainer allows.
    with open(corpus, encoding="utf-8", newline="") as f:
        tok.train_from_iterator([f.read()], trainer)
    tok.save(out_path)


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def hf_train_llama3_style(texts, vocab_size, out_path):
    """Llama 3's layout: Split(its regex) then ByteLevel without regex, ignore_merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(out_path)


def hf_ids(tokenizer_json, text):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer_json).encode(text, add_special_tokens=False).ids


def tessera_ids(tessera, tokenizer_json, path):
    out = subprocess.run(
        [tessera, "tokenizer", "encode", "--tokenizer", tokenizer_json, path],
        check=True, capture_output=True, text=True,
    ).stdout
    return [int(x) for x in out.split()]


def report_agreement(what, ours, theirs):
    if ours == theirs:
        print(f"  {what}: ids identical: {len(ours)} tokens")
        return True
    i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"  {what}: DIFFERENT at token {i}: tessera {ours[i:i + 8]} vs tokenizers {theirs[i:i + 8]}"
          f" ({len(ours)} vs {len(theirs)} tokens)")
    return False


def merges_of(path):
    merges = json.load(open(path, encoding="utf-8"))["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def hf_speed(tokenizer_json, path, threads):
    """MB/s of `tokenizers` in a fresh process limited to `threads` (RAYON_NUM_THREADS)."""
    code = f"""
import time
from tokenizers import Tokenizer
tok = Tokenizer.from_file({tokenizer_json!r})
text = open({path!r}, encoding='utf-8').read()
lines = text.splitlines(keepends=True)
# Pieces of ~4 KiB, as encode_batch parallelises over batch items only; of the sizes tried
# (lines, 4 KiB, 64 KiB, the whole text with encode()) this was the fastest for tokenizers.
docs, cur = [], ''
for line in lines:
    cur += line
    if len(cur) > 4096:
        docs.append(cur); cur = ''
docs.append(cur)
best = 1e9
for _ in range(3):
    t = time.perf_counter()
    n = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
    best = min(best, time.perf_counter() - t)
print(len(text.encode('utf-8')) / best / 1e6)
"""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env=env).stdout
    return float(out.strip())


def tessera_speed(tessera, tokenizer_json, path, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    best = 0.0
    for _ in range(3):
        err = subprocess.run(
            [tessera, "tokenizer", "encode", "--count", "--tokenizer", tokenizer_json, path],
            check=True, capture_output=True, text=True, env=env,
        ).stderr
        # "... in 0.123 s (34.5 MB/s, 2 threads)"
        best = max(best, float(err.split("(")[-1].split(" MB/s")[0]))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build-cpu", "tessera"))
    ap.add_argument("--kjv", default=os.path.join(ROOT, "data", "kjv.txt"))
    ap.add_argument("--torture", default=os.path.join(ROOT, "tests", "data", "tokenizer_torture.txt"))
    ap.add_argument("--excerpt", default=os.path.join(ROOT, "tests", "data", "kjv_excerpt.txt"))
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--write-test-data", action="store_true")
    args = ap.parse_args()
    import tokenizers

    work = tempfile.mkdtemp(prefix="tessera-tok-")
    hf_json = os.path.join(work, "hf.json")
    t = time.perf_counter()
    hf_train(args.kjv, args.vocab_size, hf_json)
    hf_train_s = time.perf_counter() - t
    print(f"tokenizers {tokenizers.__version__}: trained a {args.vocab_size}-token byte-level BPE on {args.kjv}")

    texts = {name: open(p, encoding="utf-8", newline="").read()
             for name, p in [("kjv", args.kjv), ("torture", args.torture), ("excerpt", args.excerpt)]}
    llama_json = os.path.join(work, "llama3_style.json")
    hf_train_llama3_style([texts["excerpt"], texts["torture"]], 700, llama_json)
    if args.write_test_data:
        data = os.path.join(ROOT, "tests", "data")
        with open(llama_json, encoding="utf-8") as f, open(os.path.join(data, "hf_bpe_llama3_style.json"), "w", encoding="utf-8") as g:
            g.write(f.read())
        ids = {"tokenizer_torture.txt": hf_ids(llama_json, texts["torture"]),
               "kjv_excerpt.txt": hf_ids(llama_json, texts["excerpt"])}
        with open(os.path.join(data, "hf_bpe_llama3_style_ids.json"), "w") as f:
            f.write("{\n" + ",\n".join(f'"{k}": {json.dumps(v)}' for k, v in ids.items()) + "\n}\n")
        with open(hf_json, encoding="utf-8") as f, open(os.path.join(data, "hf_bpe_kjv.json"), "w", encoding="utf-8") as g:
            g.write(f.read())
        ids = {"tokenizer_torture.txt": hf_ids(hf_json, texts["torture"]),
               "kjv_excerpt.txt": hf_ids(hf_json, texts["excerpt"])}
        with open(os.path.join(data, "hf_bpe_kjv_ids.json"), "w") as f:
            f.write("{\n" + ",\n".join(f'"{k}": {json.dumps(v)}' for k, v in ids.items()) + "\n}\n")
        print(f"  wrote tests/data/hf_bpe_kjv.json and hf_bpe_kjv_ids.json")

    ok = True
    print("(b) ids, Hugging Face's trained tokenizer:")
    for name, path in [("KJV", args.kjv), ("torture text", args.torture)]:
        text = texts["kjv" if name == "KJV" else "torture"]
        ok &= report_agreement(name, tessera_ids(args.tessera, hf_json, path), hf_ids(hf_json, text))

    print("    ids, a Llama 3-style tokenizer (Split regex, ByteLevel, ignore_merges) by tokenizers:")
    for name, path in [("KJV", args.kjv), ("torture text", args.torture)]:
        text = texts["kjv" if name == "KJV" else "torture"]
        ok &= report_agreement(name, tessera_ids(args.tessera, llama_json, path), hf_ids(llama_json, text))

    ours_json = os.path.join(work, "ours.json")
    t = time.perf_counter()
    subprocess.run([args.tessera, "tokenizer", "train", "--vocab-size", str(args.vocab_size),
                    "--special", "<|endoftext|>", "--out", ours_json, args.kjv],
                   check=True, capture_output=True)
    ours_train_s = time.perf_counter() - t
    print("    ids, Tessera's trained tokenizer, loaded by tokenizers:")
    for name, path in [("KJV", args.kjv), ("torture text", args.torture)]:
        text = texts["kjv" if name == "KJV" else "torture"]
        ok &= report_agreement(name, tessera_ids(args.tessera, ours_json, path), hf_ids(ours_json, text))
    ours_m, hf_m = merges_of(ours_json), merges_of(hf_json)
    if ours_m == hf_m:
        print(f"  trainers: identical merges ({len(ours_m)})")
    else:
        i = next((k for k, (a, b) in enumerate(zip(ours_m, hf_m)) if a != b), min(len(ours_m), len(hf_m)))
        print(f"  trainers: merges differ from #{i}: tessera {ours_m[i:i + 3]} vs tokenizers {hf_m[i:i + 3]}")

    print(f"(c) training a {args.vocab_size}-token vocabulary on the KJV: tessera {ours_train_s:.2f} s"
          f" (whole process), tokenizers {hf_train_s:.2f} s")
    cores = os.cpu_count()
    mb = len(texts["kjv"].encode("utf-8")) / 1e6
    print(f"    encoding speed on the KJV ({mb:.1f} MB), MB/s (best of 3):")
    for threads in sorted({1, cores}):
        print(f"  {threads} thread(s): tessera {tessera_speed(args.tessera, hf_json, args.kjv, threads):6.1f}"
              f"   tokenizers {hf_speed(hf_json, args.kjv, threads):6.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
