// Fuzz target: a torch.save checkpoint (zip + data.pkl + storages, byteorder, strided views).
#include "fuzz/fuzz_util.h"
#include "weights/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("pytorch_model.bin", data, size);
  auto t = bert::load_torch_checkpoint(path);
  if (!t.ok()) return 0;
  size_t sum = 0;
  for (const auto& [name, tensor] : *t) {
    const uint8_t* p = static_cast<const uint8_t*>(tensor.data);
    for (size_t i = 0; i < tensor.nbytes(); ++i) sum += p[i];
  }
  return static_cast<int>(sum & 0);
}
