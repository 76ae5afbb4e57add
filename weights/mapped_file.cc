// Read-only memory mapping of a checkpoint file (POSIX mmap).
#include "weights/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace bert {

namespace {
std::string errno_text(int err) { return std::strerror(err); }
}  // namespace

Status check_regular_file(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot stat: " + errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) return invalid_argument(path + ": is a directory; expected a " + what);
  if (!S_ISREG(st.st_mode))
    return invalid_argument(path + ": not a regular file (a FIFO, device or socket); expected a " + what);
  return Status::Ok();
}

Result<std::shared_ptr<const MappedFile>> MappedFile::Open(const std::string& path) {
  // stat first: opening a FIFO for reading blocks until a writer comes; O_NONBLOCK covers the race
  // of a path replaced between the two calls (fstat below refuses it then).
  BERT_RETURN_IF_ERROR(check_regular_file(path, "file"));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + errno_text(err));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> file(new (std::nothrow) MappedFile());
  if (!file) {
    ::close(fd);
    return internal_error(path + ": out of memory");
  }
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      file->size_ = 0;
      return io_error(path + ": cannot mmap " + std::to_string(st.st_size) + " bytes: " +
                      errno_text(err));
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return std::shared_ptr<const MappedFile>(std::move(file));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr && size_ > 0) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace bert
