// Fuzz target: bert_train's checkpoint state (tools/common/training_state.h). The first 4 bytes
// pick the run's shape and the steps the checkpoint holds; the rest is the state JSON.
#include "tools/common/training_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  cli::RunShape run;
  run.epochs = 1 + data[0] % 8;
  run.batches_per_epoch = 1 + data[1] % 16;
  run.accumulate = 1 + data[2] % 4;
  run.total_steps = static_cast<int64_t>((run.batches_per_epoch + run.accumulate - 1) / run.accumulate) * run.epochs;
  const int64_t steps = data[3] % 64;
  auto st = cli::parse_training_state(std::string(reinterpret_cast<const char*>(data + 4), size - 4), "ckpt.bert",
                                      run, steps);
  if (st.ok() && (st->epoch < 0 || st->epoch > run.epochs || st->next_batch > run.batches_per_epoch))
    __builtin_trap();
  return 0;
}
