// Fuzz target: an engine model file (safetensors + embedded config, vocab and tensor checks).
#include "fuzz/fuzz_util.h"
#include "weights/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("model.bert", data, size);
  (void)bert::read_engine_file(path);
  return 0;
}
