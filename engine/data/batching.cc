// Seeded epoch shuffling and padded batches of examples.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "bert/data.h"

namespace bert::data {

std::vector<int64_t> ShuffledOrder(size_t n, uint64_t seed, int epoch) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed * 31ull + uint64_t(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

Result<Batch> MakeBatch(const std::vector<Example>& examples, std::span<const int64_t> order, size_t begin, size_t end,
                        int32_t pad_id) {
  if (begin >= end || end > order.size())
    return invalid_argument("batch rows " + std::to_string(begin) + ".." + std::to_string(end) +
                            " are empty or reach beyond the " + std::to_string(order.size()) + " indices of the order");
  std::vector<Encoding> encs;
  encs.reserve(end - begin);
  Batch b;
  for (size_t i = begin; i < end; ++i) {
    const int64_t k = order[i];
    if (k < 0 || static_cast<size_t>(k) >= examples.size())
      return invalid_argument("batch row " + std::to_string(i - begin) + ": example index " + std::to_string(k) +
                              " is outside the " + std::to_string(examples.size()) + " examples");
    encs.push_back(examples[k].enc);
    b.labels.push_back(examples[k].label);
    b.targets.push_back(examples[k].target);
  }
  b.enc = pad_batch(encs, pad_id);
  b.batch = static_cast<int>(encs.size());
  b.seq = static_cast<int>(b.enc.input_ids.size() / encs.size());
  return b;
}

}  // namespace bert::data
