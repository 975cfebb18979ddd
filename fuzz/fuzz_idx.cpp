// Fuzzes the IDX reader (src/data/idx.cpp), plain and gzip (src/data/file_io.cpp inflates any
// input starting with 1f 8b), and the dataset loader that joins an images and a labels file.
//
// Input layout: byte 0 picks the mode.
//   even: bytes 1.. are one IDX file, read as images (magic 0x803) and as labels (0x801);
//   odd:  bytes 1-2 are a little-endian split point k, bytes 3..3+k the images file and the
//         rest the labels file, loaded with load_idx_dataset and (byte 0 >> 1) % 16 + 1
//         classes.
#include <algorithm>

#include "data/idx.h"
#include "fuzz_common.h"

using namespace tessera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile images("idx_images"), labels("idx_labels");
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  if (mode % 2 == 0) {
    images.write(data + 1, size - 1);
    for (uint32_t magic : {data::kIdxImagesMagic, data::kIdxLabelsMagic}) {
      fuzz::expect_success_or_error([&] {
        const data::IdxArray a = data::read_idx(images.path(), magic);
        uint64_t n = 1;
        for (int64_t d : a.dims) n *= uint64_t(d);
        if (a.magic != magic || a.dims.size() != (magic & 0xff) || n != a.data.size())
          fuzz::property_failed("read_idx returned dims that do not match its data");
      });
    }
    return 0;
  }
  if (size < 3) return 0;
  const size_t split = std::min<size_t>(data[1] | size_t(data[2]) << 8, size - 3);
  images.write(data + 3, split);
  labels.write(data + 3 + split, size - 3 - split);
  const int classes = (mode >> 1) % 16 + 1;
  fuzz::expect_success_or_error([&] {
    const data::ImageDataset ds = data::load_idx_dataset(
        images.path(), labels.path(), classes, data::kFashionMnistMean, data::kFashionMnistStd);
    const int32_t* lab = ds.labels.data<int32_t>();
    for (int64_t i = 0; i < ds.size(); ++i)
      if (lab[i] < 0 || lab[i] >= classes) fuzz::property_failed("label out of range");
    if (ds.images.dim(0) != ds.size()) fuzz::property_failed("image and label counts differ");
  });
  return 0;
}
