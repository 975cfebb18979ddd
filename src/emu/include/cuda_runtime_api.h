// Emulated CUDA device (src/emu): stands in for the toolkit's header of the same name.
#pragma once
#include "emu/runtime.h"
