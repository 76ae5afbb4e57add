// Fuzz target: the restricted unpickler of torch state dicts (opcodes, memo, globals, REDUCE).
#include "weights/pickle_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)bert::unpickle_torch_state_dict(data, size, "fuzz.pkl");
  return 0;
}
