// Whole-file byte I/O for the dataset readers and writers: plain or gzip, with errors that name
// the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tessera::data {

// Reads a whole file as bytes. `what` says what the file is for ("IDX file", "text corpus")
// and prefixes every error message.
std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what);

// Reads a whole file, inflating it when it is gzip-compressed (detected from its contents, so a
// plain file named *.gz or a compressed one without the suffix both work). A corrupt or
// truncated gzip stream is an Error, never silently short data.
//
// max_size, when given, bounds the inflated size from what has been inflated so far (a format's
// header says how long the file must be): it returns the largest total size the prefix allows,
// or SIZE_MAX while it cannot tell yet. Inflating past it stops with an Error at once, so a
// small hostile file ("gzip bomb") cannot grow into gigabytes of memory before being refused.
using SizeFromPrefix = std::function<size_t(const std::vector<uint8_t>& prefix)>;
std::vector<uint8_t> read_file_bytes_maybe_gzip(const std::string& path, const std::string& what,
                                                const SizeFromPrefix& max_size = {});

// Writes bytes (gzip-compressed when `gzip`) through AtomicFileWriter (core/file_io.h), so a
// reader never sees a half-written file under the final name.
void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes,
                      bool gzip = false);

// True when the bytes start with the gzip magic 1f 8b.
bool looks_gzipped(const std::vector<uint8_t>& bytes);

}  // namespace tessera::data
