// Fuzz target: the zip reader (end of central directory, zip64, central and local headers).
#include "weights/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto zip = bert::ZipArchive::Parse(data, size, "fuzz.zip");
  if (!zip.ok()) return 0;
  size_t sum = 0;
  for (const bert::ZipEntry& e : zip->entries()) {
    auto bytes = zip->stored_bytes(e);
    if (!bytes.ok()) continue;
    for (size_t i = 0; i < bytes->size; ++i) sum += bytes->data[i];  // must lie inside the buffer
    (void)zip->find(e.name);
  }
  return static_cast<int>(sum & 0);
}
