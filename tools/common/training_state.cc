// parse_training_state (training_state.h).
#include "tools/common/training_state.h"

#include <nlohmann/json.hpp>

namespace cli {

using bert::Result;
using bert::Status;
using json = nlohmann::json;

Result<TrainingState> parse_training_state(const std::string& text, const std::string& path, const RunShape& run,
                                           int64_t trainer_steps) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return bert::format_error(path + ": no bert_train state in the checkpoint (not a JSON object)");
  auto field = [&](const char* key, int64_t lo, int64_t hi, int64_t* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return bert::format_error(path + ": training state has no '" + key + "'");
    if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)))
      return bert::format_error(path + ": training state '" + key + "' must be an integer, not " + it->dump());
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
      return bert::out_of_range(path + ": training state '" + key + "' is " + std::to_string(v) + "; this run allows " +
                                std::to_string(lo) + ".." + std::to_string(hi));
    *out = v;
    return Status();
  };
  int64_t total = 0, epoch = 0, next_batch = 0;
  BERT_RETURN_IF_ERROR(field("total_steps", 0, INT64_MAX, &total));
  if (total != run.total_steps)
    return bert::invalid_argument(path + ": the checkpoint's run had " + std::to_string(total) +
                                  " total steps; these arguments make " + std::to_string(run.total_steps) +
                                  " (same data, batch, epochs?)");
  BERT_RETURN_IF_ERROR(field("epoch", 0, run.epochs, &epoch));
  BERT_RETURN_IF_ERROR(field("next_batch", 0, static_cast<int64_t>(run.batches_per_epoch), &next_batch));
  if (epoch == run.epochs && next_batch != 0)
    return bert::out_of_range(path + ": training state has next_batch " + std::to_string(next_batch) +
                              " after the last epoch");
  // The optimizer steps the checkpoint holds must be where (epoch, next_batch) puts them.
  const int64_t acc = run.accumulate, bpe = static_cast<int64_t>(run.batches_per_epoch);
  const int64_t per_epoch = (bpe + acc - 1) / acc;
  const int64_t within = next_batch / acc + (next_batch == bpe && bpe % acc != 0 ? 1 : 0);
  const int64_t expected = epoch * per_epoch + within;
  if (trainer_steps != expected)
    return bert::invalid_argument(path + ": the checkpoint holds " + std::to_string(trainer_steps) +
                                  " optimizer steps, but its state (epoch " + std::to_string(epoch) + ", next_batch " +
                                  std::to_string(next_batch) + ") means " + std::to_string(expected));
  return TrainingState{static_cast<int>(epoch), static_cast<size_t>(next_batch)};
}

}  // namespace cli
