// How many of this machine's cores a process may count on, for the decisions that depend on
// whether a core is left over beyond the computation's threads (the MPI backend progressing
// collectives while the ranks compute, and the planner's model of it); and how much memory.
#pragma once

namespace tessera {

// The cores a rank may use: those it is bound to (its CPU affinity), or its share of the
// node's online cores when `ranks_on_node` ranks are not bound apart; at least 1.
int cores_per_rank(int ranks_on_node);

// Whether such a rank has a core to spare beyond `compute_threads` (its OpenMP threads): where
// it does not, a thread that progresses communication takes the computation's cycles.
bool has_spare_core(int ranks_on_node, int compute_threads);

// The cores this process may run on: its CPU affinity's, at most the online ones; at least 1.
int usable_cores();

// The memory this process's processes may use, in bytes: the physical memory, or the cgroup
// (v2) limit of this process's group where one is set and lower (a container's limit).
double host_memory_bytes();

}  // namespace tessera
