// COCO run-length encoding on CPU, one mask at a time.
//
// Encoding reads the row-major mask once, sequentially: each row is compared with the row
// above (skipped when their bytes are equal), eight pixels per 64-bit word, and in the words
// that differ the XOR of the 0 / 1 flags (uint8 masks may hold any nonzero value) gives the
// columns that change at that row. The changes, found in row order, are sorted by column with
// a counting sort, which keeps each column's rows in order: that is the column-major order of
// the runs, without transposing the mask or reading it in strides.
//
// Decoding is the same in reverse: the runs give row 0 and the pixels that differ from the
// pixel above; those are sorted by row, and each row is the row above with them flipped, so the
// mask is written once, sequentially.
#include "rle.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

namespace sam2_fast {
namespace {

static_assert(std::endian::native == std::endian::little,
              "rle_encode_mask_cpu reads byte c of a 64-bit word as pixel c");

constexpr int kWordPixels = 8;  // pixels per 64-bit word
constexpr uint64_t kLowBits = 0x0101010101010101ULL;

// Bit 0 of every byte: 1 when that byte is nonzero; all other bits 0. Each shift folds the high
// half of every byte's remaining bits onto its low half without reading a neighbouring byte.
inline uint64_t nonzero_bytes(uint64_t word) {
  word |= word >> 4;
  word |= word >> 2;
  word |= word >> 1;
  return word & kLowBits;
}

// `count` (0..8) consecutive pixels as they are stored, pixel c in byte c.
inline uint64_t load_word(const uint8_t* pixels, int64_t count) {
  uint64_t word = 0;
  if (count == kWordPixels) {
    std::memcpy(&word, pixels, kWordPixels);
  } else {
    std::memcpy(&word, pixels, static_cast<size_t>(count));
  }
  return word;
}

constexpr int kChunkWords = 8;  // words compared at once: 64 pixels, one cache line

// Stable counting sort of `values` by `keys` (in [0, num_keys)): sorted[first[k] : first[k + 1]]
// are the values of key k, in their original order.
void sort_by_key(const std::vector<int64_t>& keys, const std::vector<int64_t>& values,
                 int64_t num_keys, std::vector<int64_t>& first, std::vector<int64_t>& sorted) {
  first.assign(static_cast<size_t>(num_keys) + 1, 0);
  for (const int64_t key : keys) {
    ++first[key + 1];
  }
  for (int64_t k = 0; k < num_keys; ++k) {
    first[k + 1] += first[k];
  }
  sorted.resize(values.size());
  std::vector<int64_t> next(first.begin(), first.end() - 1);
  for (size_t i = 0; i < values.size(); ++i) {
    sorted[next[keys[i]]++] = values[i];
  }
}

}  // namespace

void rle_encode_mask_cpu(const uint8_t* mask, int64_t height, int64_t width,
                         std::vector<int64_t>& runs) {
  const int64_t num_pixels = height * width;
  int64_t run_start = 0;  // column-major index of the current run's first pixel
  if (num_pixels > 0) {
    // (column, row) of every pixel below row 0 that differs from the pixel above, row by row
    std::vector<int64_t> change_columns;
    std::vector<int64_t> change_rows;
    for (int64_t y = 1; y < height; ++y) {
      const uint8_t* row = mask + y * width;
      const uint8_t* above = row - width;
      const auto find_changes = [&](int64_t x0, int64_t count) {
        const uint64_t pixels = load_word(row + x0, count);
        const uint64_t pixels_above = load_word(above + x0, count);
        if (pixels == pixels_above) {
          return;
        }
        for (uint64_t changed = nonzero_bytes(pixels) ^ nonzero_bytes(pixels_above);
             changed != 0; changed &= changed - 1) {
          change_columns.push_back(x0 + std::countr_zero(changed) / 8);
          change_rows.push_back(y);
        }
      };
      int64_t x0 = 0;
      for (; x0 + kChunkWords * kWordPixels <= width; x0 += kChunkWords * kWordPixels) {
        uint64_t differ = 0;  // the chunk's words are compared in one go (vectorised)
        for (int w = 0; w < kChunkWords; ++w) {
          differ |= load_word(row + x0 + w * kWordPixels, kWordPixels) ^
                    load_word(above + x0 + w * kWordPixels, kWordPixels);
        }
        if (differ != 0) {
          for (int w = 0; w < kChunkWords; ++w) {
            find_changes(x0 + w * kWordPixels, kWordPixels);
          }
        }
      }
      for (; x0 < width; x0 += kWordPixels) {
        find_changes(x0, std::min<int64_t>(kWordPixels, width - x0));
      }
    }
    // column x's change rows, in order: rows_by_column[first[x] : first[x + 1]]
    std::vector<int64_t> first;
    std::vector<int64_t> rows_by_column;
    sort_by_key(change_columns, change_rows, width, first, rows_by_column);

    const uint8_t* last_row = mask + (height - 1) * width;
    for (int64_t x = 0; x < width; ++x) {
      const int64_t column_start = x * height;
      // a boundary at index k closes the run [run_start, k); the pixel before the first is 0
      const bool before = x > 0 && last_row[x - 1] != 0;
      if ((mask[x] != 0) != before) {
        runs.push_back(column_start - run_start);
        run_start = column_start;
      }
      for (int64_t i = first[x]; i < first[x + 1]; ++i) {
        runs.push_back(column_start + rows_by_column[i] - run_start);
        run_start = column_start + rows_by_column[i];
      }
    }
  }
  runs.push_back(num_pixels - run_start);
}

void rle_compress_cpu(const int64_t* runs, int64_t num_runs, std::vector<uint8_t>& chars) {
  for (int64_t i = 0; i < num_runs; ++i) {
    int64_t x = runs[i];
    if (i > 2) {
      x -= runs[i - 2];
    }
    bool more = true;
    while (more) {
      int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic: a negative number ends in a run of 1 bits
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) {
        c |= 0x20;
      }
      chars.push_back(static_cast<uint8_t>(c + 48));
    }
  }
}

void rle_decode_mask_cpu(const int64_t* runs, int64_t num_runs, int64_t height, int64_t width,
                         uint8_t* mask) {
  const int64_t num_pixels = height * width;
  if (num_pixels == 0) {
    return;
  }
  // row 0, and (row, column) of the pixels below it that differ from the pixel above: a run
  // boundary inside a column flips the pixel (two boundaries at one pixel, around an empty
  // run, flip it back)
  std::vector<int64_t> flip_rows;
  std::vector<int64_t> flip_columns;
  int64_t start = 0;
  for (int64_t r = 0; r < num_runs; ++r) {
    const int64_t end = start + runs[r];
    for (int64_t x = (start + height - 1) / height; x * height < end; ++x) {
      mask[x] = static_cast<uint8_t>(r % 2);  // column x starts inside run r
    }
    if (r > 0 && start < num_pixels && start % height != 0) {
      flip_rows.push_back(start % height);
      flip_columns.push_back(start / height);
    }
    start = end;
  }
  std::vector<int64_t> first;
  std::vector<int64_t> columns_by_row;
  sort_by_key(flip_rows, flip_columns, height, first, columns_by_row);
  for (int64_t y = 1; y < height; ++y) {
    uint8_t* row = mask + y * width;
    std::memcpy(row, row - width, static_cast<size_t>(width));
    for (int64_t i = first[y]; i < first[y + 1]; ++i) {
      row[columns_by_row[i]] ^= 1;
    }
  }
}

}  // namespace sam2_fast
