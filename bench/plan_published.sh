#!/usr/bin/env bash
# tessera plan against published training runs, and projections (docs/PLAN.md, "Against published
# runs" and "Projections"). Prints three markdown tables:
#   1. each config under configs/published/ (its header cites the source and the reported
#      figure) planned on the cluster it ran on: reported and predicted throughput per GPU,
#      their ratio, predicted peak memory per GPU and whether it fits;
#   2. GPT-2 124M / 1.5B and Llama 3.1 8B / 70B planned on 8, 64, 512 and 4096 H100s with a
#      hand-chosen layout and a fixed per-GPU (per-replica) micro-batch (weak scaling);
#   3. Llama 3.1 8B on the same GPU counts at a fixed global batch (strong scaling).
# Nothing is computed: each plan runs the trainer on the meta device (about a second each).
#   bench/plan_published.sh            (TESSERA=path/to/tessera to use another build than
#                                       build/tessera or build-cpu/tessera; needs jq)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
T=${TESSERA:-}
if [[ -z $T ]]; then
  for t in build/tessera build-cpu/tessera; do [[ -x $t ]] && T=./$t && break; done
fi
[[ -n $T && -x $T ]] || { echo "no tessera binary (build it, or set TESSERA)" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is needed (scripts/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# plan OUT CONFIG CLUSTER [KEY=VALUE...]: the plan's JSON into OUT; 0 if a plan came out (it
# may not fit: tessera plan exits 1 then), else 1 with the error in OUT.err.
plan() {
  local out=$1 cfg=$2 cluster=$3
  shift 3
  "$T" plan "$cfg" "$@" --cluster "$cluster" --json >"$out" 2>"$out.err"
  jq -e '.step_seconds' "$out" >/dev/null 2>&1
}

# Figures of a plan, one per line: world, tokens/s per GPU, TFLOP/s per GPU (model FLOPs),
# MFU %, model FLOPs per token, largest memory per GPU (GiB: peak of live blocks + runtime, what
# a run needs; the allocator gives its cache back before failing), "fits" or "DOES NOT FIT", the
# layout without the rank count and precision (the tables name the cluster).
figures() {
  jq -r '
    (.model_flops_per_step / (.tokens_per_s * .step_seconds)) as $fpt
    | .world,
      (.tokens_per_s / .world),
      (.mfu * .peak_flops / 1e12),
      (.mfu * 100),
      $fpt,
      ([.memory[].required] | max / 1073741824),
      (if .fits then "fits" else "DOES NOT FIT" end),
      (.layout | sub("^[^=]*= "; "") | sub(", bf16$"; ""))' "$1"
}

fmt_int() { LC_NUMERIC=C printf "%'.0f" "$1"; }
fmt_1() { LC_NUMERIC=C printf "%.1f" "$1"; }

# ---------------------------------------------------------------------------------------------
# 1. Against published runs.
# name | config | cluster | reported tokens/s per GPU | reported TFLOP/s per GPU | reported MFU % |
# notes (deviations). "-" where the source gives no figure; the missing one of tokens/s and
# TFLOP/s is derived through Tessera's model FLOPs per token (marked ~).
runs=(
  "llm.c GPT-2 124M|llmc_gpt2_124m_a100x8|a100x8|~231481|-|~60|throughput derived: 10B tokens in ~90 min on 8 GPUs; llm.c's MFU; llm.c recomputes GeLU (-r 1), Tessera recomputes nothing"
  "Megatron-LM GPT 1.7B|megatron_gpt_1.7b_h100x48|h100x48|-|408.8|41|micro-batch size unknown (1); distributed optimizer as ZeRO-1; no DP overlap"
  "Megatron-LM GPT 7.1B|megatron_gpt_7.1b_h100x96|h100x96|-|465.9|47|micro-batch unknown (1); ZeRO-1; SP assumed; no TP/DP overlap"
  "Megatron-LM GPT 70B|megatron_gpt_70b_h100x768|h100x768|-|419.7|42|micro-batch and schedule unknown (1, 1F1B); tied head + PP forces ZeRO-0; no overlap"
  "Megatron-LM GPT 177B|megatron_gpt_177b_h100x2304|h100x2304|-|432.8|44|micro-batch and schedule unknown (1, 1F1B); ZeRO-0 (tied head + PP); no overlap"
  "torchtitan Llama 3.1 8B, FSDP|torchtitan_llama3.1_8b_h100x8|h100x8|5762|-|-|real GPUs: H100 96GB HBM2e at 500 W; selective AC run as full (blocks); eager (6,667 with torch.compile)"
  "torchtitan Llama 3.1 8B, FSDP|torchtitan_llama3.1_8b_h100x128|h100x128|5605|-|-|as 8 GPUs (6,514 with torch.compile)"
  "torchtitan Llama 3 8B, FSDP|torchtitan_llama3_8b_a100x64|a100x64|2904|-|56.8|selective-layer AC run as full (blocks); its MFU counts the embedding in 6N (~5% above Tessera's count)"
  "torchtitan Llama 3 70B, FSDP|torchtitan_llama3_70b_a100x64|a100x64|331|-|51.7|full AC = blocks; layout exact; MFU counts the embedding as for 8B"
  "Llama 3 405B (Meta)|llama3_405b_h100x8192|h100x8192|-|430|43|Meta's tuned PP schedule as interleaved 1F1B, v = 2, 32 micro-batches; ZeRO-1"
  "Llama 3 405B (Meta)|llama3_405b_h100x16384|h100x16384|-|400|41|as 8,192 GPUs, 16 micro-batches"
)

echo "### Against published runs (bf16 only; Tessera has no fp8)"
echo
echo "| run | cluster | layout (Tessera) | reported tokens/s per GPU | reported TFLOP/s per GPU (MFU) | predicted tokens/s per GPU | predicted TFLOP/s per GPU (MFU) | predicted / reported | predicted peak memory per GPU | notes |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"
for row in "${runs[@]}"; do
  IFS='|' read -r name cfg cluster rep_tps rep_tflops rep_mfu notes <<<"$row"
  out=$tmp/$cfg.json
  if ! plan "$out" "configs/published/$cfg.toml" "$cluster"; then
    echo "| $name | $cluster | - | - | - | PLAN FAILED | - | - | - | $(tail -1 "$out.err" | tr '|' '/') |"
    continue
  fi
  mapfile -t f < <(figures "$out")
  tps=${f[1]} tflops=${f[2]} mfu=${f[3]} fpt=${f[4]} mem=${f[5]} fit=${f[6]} lay=${f[7]}
  # The reported figure not given, derived through the model FLOPs per token.
  if [[ $rep_tps == - ]]; then
    rep_tps_v=$(jq -n "$rep_tflops * 1e12 / $fpt")
    rep_tps_s="~$(fmt_int "$rep_tps_v")"
  else
    # A leading ~ marks a figure the source does not print but implies (the notes say how).
    rep_tps_v=${rep_tps#\~}
    rep_tps_s=${rep_tps%%[0-9]*}$(fmt_int "$rep_tps_v")
  fi
  if [[ $rep_tflops == - ]]; then
    rep_tflops_s="~$(fmt_1 "$(jq -n "$rep_tps_v * $fpt / 1e12")")"
  else
    rep_tflops_s=$rep_tflops
  fi
  [[ $rep_mfu != - ]] && rep_tflops_s+=" ($rep_mfu%)"
  ratio=$(jq -n "$tps / $rep_tps_v * 100 | round / 100")
  echo "| $name | $cluster | $lay | $rep_tps_s | $rep_tflops_s | $(fmt_int "$tps") | $(fmt_1 "$tflops") ($(fmt_1 "$mfu")%) | $ratio | $(fmt_1 "$mem") GiB, $fit | $notes |"
done
echo

# ---------------------------------------------------------------------------------------------
# 2. Projections on H100s, weak scaling: a fixed batch per data-parallel replica.
# name | kind | preset | sequences per data-parallel replica | seq_len | overrides (the layout);
# configs/llama3_8b.toml (random tokens) with these overrides.
proj=(
  "GPT-2 124M|gpt|gpt2-124m|16|1024|parallel.zero_stage=1 train.micro_batches=1 model.recompute=\"none\""
  "GPT-2 1.5B|gpt|gpt2-1.5b|8|1024|parallel.zero_stage=1 train.micro_batches=1 model.recompute=\"none\""
  "Llama 3.1 8B|llama|llama3.1-8b|2|8192|parallel.zero_stage=3 train.micro_batches=1 model.recompute=\"blocks\""
  "Llama 3.1 70B|llama|llama3.1-70b|16|8192|parallel.tp=8 parallel.sequence_parallel=1 parallel.pp=PP parallel.zero_stage=1 train.micro_batches=16 model.recompute=\"blocks\""
)
gpus=(8 64 512 4096)

echo "### Projections: H100 (80 GiB SXM5), bf16, weak scaling"
echo
echo "| model | H100s | layout | global batch (sequences x length) | predicted tokens/s | per GPU | MFU | predicted peak memory per GPU |"
echo "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"
for row in "${proj[@]}"; do
  IFS='|' read -r name kind preset per_rep seq ovr <<<"$row"
  for n in "${gpus[@]}"; do
    # 70B: TP 8 in a node; PP 4 from 64 GPUs on (PP 1 on one node, which cannot hold it).
    pp=1
    [[ $preset == llama3.1-70b && $n -ge 64 ]] && pp=4
    o=${ovr//PP/$pp}
    tp=1
    [[ $o =~ parallel.tp=([0-9]+) ]] && tp=${BASH_REMATCH[1]}
    dp=$((n / (tp * pp)))
    batch=$((per_rep * dp))
    cluster=h100x$n
    out=$tmp/proj_${preset}_$n.json
    # shellcheck disable=SC2086  # the overrides are words
    if ! plan "$out" configs/llama3_8b.toml "$cluster" model.kind=\"$kind\" \
      model.preset=\"$preset\" train.batch_size=$batch train.seq_len=$seq $o; then
      echo "| $name | $n | - | $batch x $seq | PLAN FAILED | - | - | $(tail -1 "$out.err" | tr '|' '/') |"
      continue
    fi
    mapfile -t f < <(figures "$out")
    tps=${f[1]} mfu=${f[3]} mem=${f[5]} fit=${f[6]} lay=${f[7]}
    total=$(jq -n "$tps * $n")
    echo "| $name | $n | $lay | $batch x $seq | $(fmt_int "$total") | $(fmt_int "$tps") | $(fmt_1 "$mfu")% | $(fmt_1 "$mem") GiB, $fit |"
  done
done
echo

# ---------------------------------------------------------------------------------------------
# 3. Projections on H100s, strong scaling: Llama 3.1 8B at a fixed global batch of 1024
# sequences of 8192 tokens (8M tokens), ZeRO-3 and block recompute as above; micro-batches of 2
# sequences while a rank has more than 2; on 4096 GPUs TP 4 in a node, so that every replica
# still has a whole sequence.
echo "### Projections: H100, bf16, strong scaling (Llama 3.1 8B, global batch 1024 x 8192)"
echo
echo "| H100s | layout | sequences per replica | predicted tokens/s | per GPU | MFU | step | predicted peak memory per GPU |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"
for n in "${gpus[@]}"; do
  tp=1
  ((n == 4096)) && tp=4
  dp=$((n / tp))
  per_rep=$((1024 / dp))
  mb=$((per_rep > 2 ? per_rep / 2 : 1))
  out=$tmp/strong_$n.json
  if ! plan "$out" configs/llama3_8b.toml "h100x$n" train.batch_size=1024 train.seq_len=8192 \
    train.micro_batches=$mb parallel.tp=$tp parallel.sequence_parallel=$((tp > 1 ? 1 : 0)); then
    echo "| $n | - | $per_rep | PLAN FAILED | - | - | - | $(tail -1 "$out.err" | tr '|' '/') |"
    continue
  fi
  mapfile -t f < <(figures "$out")
  tps=${f[1]} mfu=${f[3]} mem=${f[5]} fit=${f[6]} lay=${f[7]}
  step=$(jq -r '.step_seconds' "$out")
  echo "| $n | $lay | $per_rep | $(fmt_int "$(jq -n "$tps * $n")") | $(fmt_int "$tps") | $(fmt_1 "$mfu")% | $(LC_NUMERIC=C printf "%.3g" "$step") s | $(fmt_1 "$mem") GiB, $fit |"
done
