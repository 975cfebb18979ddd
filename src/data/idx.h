// IDX files (the MNIST / Fashion-MNIST container) and the image classification dataset built
// from a pair of them.
//
// IDX layout: a big-endian u32 magic 0x0000TTNN (TT = element type, 0x08 for u8; NN = number of
// dims), then NN big-endian u32 dim sizes, then the elements in row-major order. Files may be
// gzip-compressed; that is detected from the contents.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera::data {

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // u8 [n, rows, cols]
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // u8 [n]

// The decoded contents of one u8 IDX file.
struct IdxArray {
  uint32_t magic = 0;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // product(dims) elements
};

// Reads an IDX file (plain or gzip) and checks that its magic is `expected_magic`, that the
// header is complete and that the payload holds exactly product(dims) bytes. Every Error names
// the file, the field, what the header promised and what was found.
IdxArray read_idx(const std::string& path, uint32_t expected_magic);

// Writes a u8 IDX file (for tests and tooling). dims.size() must match the magic's dim count.
void write_idx(const std::string& path, uint32_t magic, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data, bool gzip);

// Images with integer class labels, ready for a classifier.
struct ImageDataset {
  Tensor images;  // f32 [n, 1, rows, cols], normalised as (x / 255 - mean) / std
  Tensor labels;  // i32 [n], each in [0, num_classes)
  int num_classes = 0;
  int64_t size() const { return labels.defined() ? labels.dim(0) : 0; }
};

// Per-pixel statistics of the Fashion-MNIST training images (x / 255).
constexpr float kFashionMnistMean = 0.2860f;
constexpr float kFashionMnistStd = 0.3530f;
constexpr int kFashionMnistClasses = 10;

// Loads an images file and a labels file into a dataset, checking that the counts agree and
// every label is below num_classes.
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes, float mean, float std);

// Loads Fashion-MNIST's "train" (60000) or "test" (10000) split from a directory holding
// {train,t10k}-{images-idx3,labels-idx1}-ubyte, each optionally with a .gz suffix.
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split);

// The Debian dataset-fashion-mnist package's install location.
constexpr const char* kFashionMnistSystemDir = "/usr/share/datasets/fashion-mnist";

}  // namespace tessera::data
