// BERT's dynamic masked-LM masking: 15% of the eligible tokens are predicted; of those 80% become
// [MASK], 10% a random token, 10% stay. Seeded per (seed, epoch, example), so it is reproducible.
#include <random>
#include <string>
#include <vector>

#include "bert/data.h"

namespace bert::data {

Result<std::vector<int32_t>> MaskTokens(Batch& b, std::span<const int64_t> order, size_t begin, const Tokenizer& tok,
                                        const MaskingOptions& o) {
  auto fraction_ok = [](double x) { return x >= 0 && x <= 1; };  // false for NaN too
  if (!fraction_ok(o.probability) || !fraction_ok(o.mask_fraction) || !fraction_ok(o.random_fraction) ||
      !(o.mask_fraction + o.random_fraction <= 1))
    return invalid_argument("masking: probability " + std::to_string(o.probability) + ", mask_fraction " +
                            std::to_string(o.mask_fraction) + " and random_fraction " +
                            std::to_string(o.random_fraction) +
                            " must lie in [0, 1] with mask_fraction + random_fraction <= 1");
  if (o.vocab_size < 1 || o.vocab_size > INT32_MAX)
    return invalid_argument("masking: vocab_size " + std::to_string(o.vocab_size) + " is not in 1..2^31-1");
  if (tok.mask_id() < 0) return invalid_argument("masking: the tokenizer's vocab has no [MASK] token");
  if (b.batch < 0 || b.seq < 0 || b.enc.input_ids.size() != size_t(b.batch) * size_t(b.seq) ||
      b.enc.attention_mask.size() != b.enc.input_ids.size())
    return invalid_argument("masking: the batch's ids and mask do not hold batch x seq = " + std::to_string(b.batch) +
                            " x " + std::to_string(b.seq) + " values");
  if (begin > order.size() || order.size() - begin < size_t(b.batch))
    return invalid_argument("masking: order holds " + std::to_string(order.size()) + " indices; rows " +
                            std::to_string(begin) + ".." + std::to_string(begin + b.batch) + " were asked for");

  const double keep_or_random = o.mask_fraction + o.random_fraction;
  std::vector<int32_t> labels(b.enc.input_ids.size(), kIgnoreIndex);
  for (int r = 0; r < b.batch; ++r) {
    std::mt19937_64 rng(o.seed * 1000003ull + uint64_t(o.epoch) * 7919ull + uint64_t(order[begin + r]));
    std::uniform_real_distribution<double> u(0, 1);
    std::uniform_int_distribution<int32_t> random_token(0, static_cast<int32_t>(o.vocab_size - 1));
    for (int s = 0; s < b.seq; ++s) {
      const size_t i = size_t(r) * b.seq + s;
      const int32_t id = b.enc.input_ids[i];
      if (!b.enc.attention_mask[i] || id == tok.cls_id() || id == tok.sep_id() || id == tok.pad_id()) continue;
      if (u(rng) >= o.probability) continue;
      labels[i] = id;
      const double action = u(rng);
      if (action < o.mask_fraction) b.enc.input_ids[i] = tok.mask_id();
      else if (action < keep_or_random) b.enc.input_ids[i] = random_token(rng);
    }
  }
  return labels;
}

}  // namespace bert::data
