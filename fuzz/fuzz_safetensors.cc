// Fuzz target: a safetensors file (header length, JSON header, dtypes, shapes, data offsets).
#include "fuzz/fuzz_util.h"
#include "weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("f.safetensors", data, size);
  auto f = bert::SafetensorsFile::Open(path);
  if (!f.ok()) return 0;
  size_t sum = 0;  // every tensor the reader accepts must be readable in full
  for (const auto& [name, t] : f->tensors()) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
  }
  return static_cast<int>(sum & 0);
}
