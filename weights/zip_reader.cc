// ZIP parsing for torch.save checkpoints: EOCD / ZIP64 EOCD, central directory, local headers.
// Every offset and size read from the file is checked against the buffer before use.
#include "weights/zip_reader.h"

#include <algorithm>
#include <new>

namespace bert {

namespace {

constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) {
  return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32);
}

std::string q(const std::string& s) { return "'" + s + "'"; }

// Applies a ZIP64 extended-information extra field (id 0x0001) to the fields that overflowed.
Status apply_zip64_extra(const uint8_t* extra, size_t len, bool need_usize, bool need_csize,
                         bool need_offset, ZipEntry* e, const std::string& where) {
  size_t pos = 0;
  while (pos + 4 <= len) {
    uint16_t id = rd16(extra + pos);
    uint16_t sz = rd16(extra + pos + 2);
    pos += 4;
    if (sz > len - pos) return format_error(where + ": extra field runs past its end");
    if (id == 0x0001) {
      size_t k = 0;
      auto take = [&](uint64_t* out) -> bool {
        if (k + 8 > sz) return false;
        *out = rd64(extra + pos + k);
        k += 8;
        return true;
      };
      if (need_usize && !take(&e->uncompressed_size))
        return format_error(where + ": ZIP64 extra field lacks the uncompressed size");
      if (need_csize && !take(&e->compressed_size))
        return format_error(where + ": ZIP64 extra field lacks the compressed size");
      if (need_offset && !take(&e->local_header_offset))
        return format_error(where + ": ZIP64 extra field lacks the local header offset");
      return Status::Ok();
    }
    pos += sz;
  }
  if (need_usize || need_csize || need_offset)
    return format_error(where + ": sizes are marked ZIP64 but there is no ZIP64 extra field");
  return Status::Ok();
}

}  // namespace

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

Result<ZipArchive::Bytes> ZipArchive::stored_bytes(const ZipEntry& e) const {
  if (e.flags & 0x1)
    return unsupported(path_ + ": zip entry " + q(e.name) + " is encrypted");
  if (e.method != 0)
    return unsupported(path_ + ": zip entry " + q(e.name) + " is compressed (method " +
                       std::to_string(e.method) +
                       "); only stored (uncompressed) entries are supported, as torch.save "
                       "writes them");
  return Bytes{data_ + e.data_offset, static_cast<size_t>(e.compressed_size)};
}

Result<ZipArchive> ZipArchive::Parse(const uint8_t* data, size_t size, const std::string& path) {
  try {
    if (size < kEocdSize)
      return format_error(path + ": " + std::to_string(size) +
                          " bytes is too short to be a zip archive");
    // The EOCD sits at the end, followed only by a comment of at most 65535 bytes.
    size_t eocd = SIZE_MAX;
    const size_t lowest = size - kEocdSize > 65535 ? size - kEocdSize - 65535 : 0;
    for (size_t pos = size - kEocdSize + 1; pos-- > lowest;) {
      if (rd32(data + pos) == kEocdSig && pos + kEocdSize + rd16(data + pos + 20) <= size) {
        eocd = pos;
        break;
      }
    }
    if (eocd == SIZE_MAX)
      return format_error(path + ": no zip end-of-central-directory record (the file is "
                                 "truncated or not a zip archive)");
    const uint8_t* r = data + eocd;
    uint64_t disk = rd16(r + 4), cd_disk = rd16(r + 6);
    uint64_t n_disk_entries = rd16(r + 8), n_entries = rd16(r + 10);
    uint64_t cd_size = rd32(r + 12), cd_offset = rd32(r + 16);

    // ZIP64: a locator right before the EOCD points at the ZIP64 EOCD record.
    bool need64 = n_entries == 0xFFFF || n_disk_entries == 0xFFFF || cd_size == 0xFFFFFFFF ||
                  cd_offset == 0xFFFFFFFF || disk == 0xFFFF || cd_disk == 0xFFFF;
    uint64_t cd_limit = eocd;  // the central directory ends before the (ZIP64) EOCD records
    if (eocd >= kZip64LocatorSize && rd32(data + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
      const uint8_t* loc = data + eocd - kZip64LocatorSize;
      uint64_t off64 = rd64(loc + 8);
      uint32_t total_disks = rd32(loc + 16);
      if (total_disks > 1)
        return unsupported(path + ": multi-disk (spanned) zip archives are not supported");
      if (off64 > eocd - kZip64LocatorSize ||
          eocd - kZip64LocatorSize - off64 < kZip64EocdSize)
        return format_error(path + ": ZIP64 end-of-central-directory offset " +
                            std::to_string(off64) + " is out of range");
      const uint8_t* z = data + off64;
      if (rd32(z) != kZip64EocdSig)
        return format_error(path + ": no ZIP64 end-of-central-directory record at offset " +
                            std::to_string(off64));
      disk = rd32(z + 16);
      cd_disk = rd32(z + 20);
      n_disk_entries = rd64(z + 24);
      n_entries = rd64(z + 32);
      cd_size = rd64(z + 40);
      cd_offset = rd64(z + 48);
      cd_limit = off64;
    } else if (need64) {
      return format_error(path + ": the end-of-central-directory record needs ZIP64 but the "
                                 "ZIP64 locator is missing (truncated archive?)");
    }
    if (disk != 0 || cd_disk != 0 || n_disk_entries != n_entries)
      return unsupported(path + ": multi-disk (spanned) zip archives are not supported");
    if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
      return format_error(path + ": central directory [offset " + std::to_string(cd_offset) +
                          ", size " + std::to_string(cd_size) +
                          "] lies outside the file (truncated archive?)");
    if (n_entries > cd_size / kCentralSize)
      return format_error(path + ": central directory of " + std::to_string(cd_size) +
                          " bytes cannot hold " + std::to_string(n_entries) + " entries");

    ZipArchive z;
    z.path_ = path;
    z.data_ = data;
    z.size_ = size;
    z.entries_.reserve(static_cast<size_t>(n_entries));
    uint64_t pos = cd_offset;
    const uint64_t cd_end = cd_offset + cd_size;
    for (uint64_t i = 0; i < n_entries; ++i) {
      const std::string where_i = path + ": central directory entry " + std::to_string(i);
      if (cd_end - pos < kCentralSize) return format_error(where_i + " runs past the directory");
      const uint8_t* c = data + pos;
      if (rd32(c) != kCentralSig) return format_error(where_i + " has a bad signature");
      ZipEntry e;
      e.flags = rd16(c + 8);
      e.method = rd16(c + 10);
      uint32_t csize = rd32(c + 20), usize = rd32(c + 24);
      uint16_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
      uint32_t lho = rd32(c + 42);
      uint64_t var_len = static_cast<uint64_t>(name_len) + extra_len + comment_len;
      if (cd_end - pos - kCentralSize < var_len)
        return format_error(where_i + ": name/extra/comment run past the directory");
      e.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
      const std::string where = path + ": zip entry " + q(e.name);
      e.compressed_size = csize;
      e.uncompressed_size = usize;
      e.local_header_offset = lho;
      BERT_RETURN_IF_ERROR(apply_zip64_extra(c + kCentralSize + name_len, extra_len,
                                             usize == 0xFFFFFFFF, csize == 0xFFFFFFFF,
                                             lho == 0xFFFFFFFF, &e, where));
      pos += kCentralSize + var_len;

      // The local header: its name and extra field lengths decide where the data starts.
      if (e.local_header_offset > cd_offset || cd_offset - e.local_header_offset < kLocalSize)
        return format_error(where + ": local header offset " +
                            std::to_string(e.local_header_offset) + " is out of range");
      const uint8_t* l = data + e.local_header_offset;
      if (rd32(l) != kLocalSig)
        return format_error(where + ": bad local header signature at offset " +
                            std::to_string(e.local_header_offset));
      uint64_t lname = rd16(l + 26), lextra = rd16(l + 28);
      uint64_t data_off = e.local_header_offset + kLocalSize + lname + lextra;
      if (data_off > cd_offset)
        return format_error(where + ": local header runs past the central directory");
      if (lname != name_len ||
          !std::equal(e.name.begin(), e.name.end(),
                      reinterpret_cast<const char*>(l + kLocalSize)))
        return format_error(where + ": local header names a different file");
      e.data_offset = data_off;
      if (e.compressed_size > cd_offset - data_off)
        return format_error(where + ": data [offset " + std::to_string(data_off) + ", " +
                            std::to_string(e.compressed_size) +
                            " bytes] runs past the end of the entries (truncated archive?)");
      if (e.method == 0 && e.compressed_size != e.uncompressed_size)
        return format_error(where + ": stored entry has compressed size " +
                            std::to_string(e.compressed_size) + " != uncompressed size " +
                            std::to_string(e.uncompressed_size));
      if (!z.by_name_.emplace(e.name, z.entries_.size()).second)
        return format_error(where + ": duplicate entry name");
      z.entries_.push_back(std::move(e));
    }
    return z;
  } catch (const std::bad_alloc&) {
    return internal_error(path + ": out of memory while reading the zip directory");
  }
}

}  // namespace bert
