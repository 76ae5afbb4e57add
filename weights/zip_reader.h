// A read-only view of a ZIP archive held in memory (e.g. a mapped torch.save checkpoint): parses the
// end-of-central-directory record (ZIP64 too), the central directory and the local headers, and
// bounds-checks every offset and size against the buffer. Only STORED entries can be read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "bert/status.h"

namespace bert {

struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0 = stored, 8 = deflate, ...
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the entry's data (after the local header)
};

class ZipArchive {
 public:
  // Parses the archive in data[0, size). `path` names the file in error messages.
  // The buffer must outlive the archive object.
  static Result<ZipArchive> Parse(const uint8_t* data, size_t size, const std::string& path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when there is no entry of that exact name.
  const ZipEntry* find(const std::string& name) const;

  struct Bytes {
    const uint8_t* data;
    size_t size;
  };
  // The bytes of a STORED, unencrypted entry; an Unsupported error for compressed or encrypted ones.
  Result<Bytes> stored_bytes(const ZipEntry& e) const;

 private:
  ZipArchive() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace bert
