// Emulated CUDA device (src/emu): make_uint3 & co. are in emu/runtime.h.
#pragma once
#include "emu/runtime.h"
