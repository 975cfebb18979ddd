#!/usr/bin/env python3
"""torch.distributed (gloo, CPU tensors) collective bandwidth, the peer of bench_collectives.

Launched by mpirun like Tessera's benchmark (the rank and world size come from Open MPI's
environment; rank 0 hosts gloo's TCP store on 127.0.0.1):

    mpirun -n 2 bench/peers/.venv/bin/python bench/peers/torch_collectives.py \
        --min-bytes 4096 --max-bytes 268435456 --seconds 0.5

Times all_reduce, reduce_scatter_tensor and all_gather_into_tensor on f32 tensors exactly as
bench_collectives does (barrier, one call, wait; one warm-up; the median over about --seconds)
and prints the same RESULT lines with impl=torch-gloo.
"""
import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--min-bytes", type=int, default=4096)
    p.add_argument("--max-bytes", type=int, default=256 << 20)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--port", type=int, default=29517)
    a = p.parse_args()
    rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
    n = int(os.environ["OMPI_COMM_WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=rank,
                            world_size=n)
    if rank == 0:
        print(f"# torch {torch.__version__}, gloo, {n} ranks")
    bytes_ = a.min_bytes
    while bytes_ <= a.max_bytes:
        elems = max(n, bytes_ // 4 // n * n)
        whole = torch.zeros(elems)
        part = torch.zeros(elems // n)
        calls = {
            "all_reduce": lambda: dist.all_reduce(whole),
            "reduce_scatter": lambda: dist.reduce_scatter_tensor(part, whole),
            "all_gather": lambda: dist.all_gather_into_tensor(whole, part),
        }
        for op, call in calls.items():
            def once():
                dist.barrier()
                t0 = time.perf_counter()
                call()
                return time.perf_counter() - t0
            once()
            times, total = [], 0.0
            while True:
                t = once()
                times.append(t)
                total += t
                go = torch.tensor([1.0 if total < a.seconds and len(times) < 1000 else 0.0])
                dist.broadcast(go, 0)
                if go.item() == 0:
                    break
            median = statistics.median_low(times)
            factor = (2 if op == "all_reduce" else 1) * (n - 1) / n
            busbw = elems * 4 * factor / median / 1e9
            if rank == 0:
                print(f"RESULT impl=torch-gloo op={op} ranks={n} bytes={elems * 4} "
                      f"seconds={median:.6g} busbw_gbps={busbw:.4g} busy=0", flush=True)
        bytes_ *= 4
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
