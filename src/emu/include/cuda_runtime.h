// Emulated CUDA device (src/emu): stands in for the toolkit's header of the same name. Like the
// real one, it also gives device code CUDA's keywords and built-ins.
#pragma once
#include "emu/kernel.h"
#include "emu/runtime.h"
