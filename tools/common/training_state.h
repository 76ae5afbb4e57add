// bert_train's training state (the JSON a checkpoint carries beside its weights and optimizer
// state), validated field by field before --resume uses it. Its own file so that the fuzzer
// (fuzz/fuzz_training_state.cc) and the tests reach it without running bert_train.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bert/status.h"

namespace cli {

// Where a checkpoint's run stands, and the run these arguments make.
struct TrainingState {
  int epoch = 0;          // the epoch to continue (== epochs: the run had finished)
  size_t next_batch = 0;  // the first batch of that epoch still to train
};
struct RunShape {
  int epochs;
  size_t batches_per_epoch;
  int accumulate;
  int64_t total_steps;
};

// The bert_train state a checkpoint carries ({"epoch", "next_batch", "total_steps"}): every field
// must be an integer in range and agree with this run's shape and with the optimizer steps the
// checkpoint holds, so a corrupt or hostile state can neither loop "forever" (epoch -1e9), skip an
// epoch silently (next_batch -1 read as 2^64-1) nor abort on a JSON type error.
bert::Result<TrainingState> parse_training_state(const std::string& text, const std::string& path,
                                                 const RunShape& run, int64_t trainer_steps);

}  // namespace cli
