// Fuzz target: vocab.txt (line endings, UTF-8 validity, duplicates) and the in-memory split.
#include "fuzz/fuzz_util.h"
#include "weights/vocab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("vocab.txt", data, size);
  auto v = bert::read_vocab_file(path);
  if (v.ok()) {
    auto again = bert::split_vocab(bert::join_vocab(*v));  // what a model file stores must read back
    if (!again.ok() || *again != *v) __builtin_trap();
  }
  (void)bert::split_vocab(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
