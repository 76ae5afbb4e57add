// A whole file mapped read-only into memory, shared by every tensor the checkpoint readers hand out
// (Tensor.owner aliases the shared_ptr, so the mapping lives as long as any tensor that points into it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "bert/status.h"

namespace bert {

// OK when `path` is a regular file. Otherwise NotFound (missing), or InvalidArgument naming what it
// is: a directory, or a FIFO / device / socket (which would block or never end if opened and read).
// `what` names the expected file in the message ("config file", "vocab file").
Status check_regular_file(const std::string& path, const std::string& what);

class MappedFile {
 public:
  // Maps `path` read-only (an empty file gives size() == 0 and data() == nullptr).
  static Result<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bert
