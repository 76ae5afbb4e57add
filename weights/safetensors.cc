// safetensors reader (mmap, full header validation, zero-copy tensors), atomic writer, and the
// loader for sharded checkpoints described by model.safetensors.index.json.
#include "weights/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "weights/json_keys.h"
#include "weights/mapped_file.h"

namespace bert {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB, as the reference implementation

// Names the reference format knows but this engine does not store.
bool is_known_unsupported_dtype(std::string_view name) {
  static constexpr std::string_view kNames[] = {"U16",     "U32",     "U64",      "F8_E4M3",
                                                "F8_E5M2", "F8_E8M0", "F4",       "F6_E2M3",
                                                "F6_E3M2", "C64",     "F8_E4M3FN"};
  for (auto n : kNames)
    if (n == name) return true;
  return false;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string offsets_string(uint64_t b, uint64_t e) {
  std::string s = "[";
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  s += "]";
  return s;
}

// numel * elem_size with overflow detection; nullopt when it does not fit in 63 bits.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(elem_size), &n)) return false;
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = n;
  return true;
}

// Reads an integer JSON value as uint64 (false if it is not a non-negative integer).
bool json_to_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

std::string json_brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

struct ParsedEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Status parse_entry(const std::string& path, const std::string& name, const json& v,
                   uint64_t data_size, ParsedEntry* out) {
  const std::string where = path + ": tensor " + quoted(name);
  if (!v.is_object()) return format_error(where + ": header entry is not a JSON object");
  auto dt = v.find("dtype");
  if (dt == v.end()) return format_error(where + ": missing field 'dtype'");
  if (!dt->is_string()) return format_error(where + ": field 'dtype' is not a string");
  const std::string& dname = dt->get_ref<const std::string&>();
  auto dtype = dtype_from_name(dname);
  if (!dtype) {
    if (is_known_unsupported_dtype(dname))
      return unsupported(where + ": dtype " + quoted(dname) + " is not supported by this engine");
    return format_error(where + ": unknown dtype " + quoted(dname));
  }
  auto sh = v.find("shape");
  if (sh == v.end()) return format_error(where + ": missing field 'shape'");
  if (!sh->is_array()) return format_error(where + ": field 'shape' is not an array");
  std::vector<int64_t> shape;
  shape.reserve(sh->size());
  for (size_t i = 0; i < sh->size(); ++i) {
    const json& d = (*sh)[i];
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      return format_error(where + ": shape dim " + std::to_string(i) + " is negative (" +
                          std::to_string(d.get<int64_t>()) + ")");
    uint64_t u = 0;
    if (!json_to_u64(d, &u))
      return format_error(where + ": shape dim " + std::to_string(i) +
                          " is not a non-negative integer (" + json_brief(d) + ")");
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return format_error(where + ": shape dim " + std::to_string(i) + " is too large");
    shape.push_back(static_cast<int64_t>(u));
  }
  auto off = v.find("data_offsets");
  if (off == v.end()) return format_error(where + ": missing field 'data_offsets'");
  if (!off->is_array() || off->size() != 2)
    return format_error(where + ": field 'data_offsets' is not an array [begin, end]");
  uint64_t begin = 0, end = 0;
  if (!json_to_u64((*off)[0], &begin) || !json_to_u64((*off)[1], &end))
    return format_error(where + ": data_offsets " + json_brief(*off) +
                        " are not non-negative integers");
  if (begin > end)
    return format_error(where + ": data_offsets " + offsets_string(begin, end) +
                        " have begin > end");
  if (end > data_size)
    return format_error(where + ": data_offsets " + offsets_string(begin, end) +
                        " reach beyond the data section (" + std::to_string(data_size) +
                        " bytes)");
  uint64_t need = 0;
  if (!checked_nbytes(shape, dtype_size(*dtype), &need))
    return format_error(where + ": shape " + shape_string(shape) + " of " + dname +
                        " is too large (byte size overflows)");
  if (end - begin != need)
    return format_error(where + ": data_offsets " + offsets_string(begin, end) + " hold " +
                        std::to_string(end - begin) + " bytes but shape " + shape_string(shape) +
                        " of " + dname + " needs " + std::to_string(need));
  out->name = name;
  out->dtype = *dtype;
  out->shape = std::move(shape);
  out->begin = begin;
  out->end = end;
  return Status::Ok();
}

// ---- writing -----------------------------------------------------------------------------------

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

void append_json_string(std::string* out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') {
      *out += "\\\"";
    } else if (c == '\\') {
      *out += "\\\\";
    } else if (c < 0x20) {
      *out += "\\u00";
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);
    }
  }
  out->push_back('"');
}

Status write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    size_t chunk = std::min<size_t>(n, 1u << 30);
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return io_error(tmp + ": write failed: " + std::strerror(errno));
    }
    if (w == 0) return io_error(tmp + ": write made no progress");
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Result<std::string> read_small_file(const std::string& path, size_t limit) {
  BERT_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  if (file->size() > limit)
    return format_error(path + ": file is " + std::to_string(file->size()) +
                        " bytes, more than the " + std::to_string(limit) + " allowed");
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

}  // namespace

// ---- SafetensorsFile -----------------------------------------------------------------------------

const Tensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  try {
    BERT_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::Open(path));
    const uint64_t size = file->size();
    if (size < 8)
      return format_error(path + ": file is " + std::to_string(size) +
                          " bytes, too short for the 8-byte safetensors header length");
    const uint8_t* base = file->data();
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
    if (header_len > size - 8)
      return format_error(path + ": header length " + std::to_string(header_len) +
                          " reaches beyond the end of the file (" + std::to_string(size) +
                          " bytes); the file is truncated or not safetensors");
    if (header_len > kMaxHeaderBytes)
      return format_error(path + ": header length " + std::to_string(header_len) +
                          " exceeds the 100 MiB limit");
    std::string_view header(reinterpret_cast<const char*>(base + 8), header_len);
    size_t first = header.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos || header[first] != '{')
      return format_error(path + ": header is not a JSON object");
    json j = json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return format_error(path + ": header is not valid JSON (" + std::to_string(header_len) +
                          " bytes)");
    if (!j.is_object()) return format_error(path + ": header is not a JSON object");
    BERT_RETURN_IF_ERROR(check_unique_keys(header, path + ": header"));

    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = size - data_start;

    SafetensorsFile out;
    out.path_ = path;
    std::vector<ParsedEntry> entries;
    entries.reserve(j.size());
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      if (key == "__metadata__") {
        if (!it.value().is_object())
          return format_error(path + ": __metadata__ is not a JSON object");
        for (auto m = it.value().begin(); m != it.value().end(); ++m) {
          if (!m.value().is_string())
            return format_error(path + ": __metadata__ entry " + quoted(m.key()) +
                                " is not a string (" + json_brief(m.value()) + ")");
          out.metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      ParsedEntry e;
      BERT_RETURN_IF_ERROR(parse_entry(path, key, it.value(), data_size, &e));
      entries.push_back(std::move(e));
    }

    // No two tensors may share bytes (empty tensors occupy none).
    std::vector<const ParsedEntry*> order;
    for (const auto& e : entries)
      if (e.end > e.begin) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const ParsedEntry* a, const ParsedEntry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    for (size_t i = 1; i < order.size(); ++i) {
      const ParsedEntry* a = order[i - 1];
      const ParsedEntry* b = order[i];
      if (b->begin < a->end)
        return format_error(path + ": tensors " + quoted(a->name) + " (data_offsets " +
                            offsets_string(a->begin, a->end) + ") and " + quoted(b->name) +
                            " (data_offsets " + offsets_string(b->begin, b->end) + ") overlap");
    }

    // Everything is valid: hand out tensors pointing into the mapping.
    std::shared_ptr<const void> owner(file, static_cast<const void*>(file.get()));
    const uint8_t* data_base = base + data_start;
    for (auto& e : entries) {
      Tensor t;
      t.dtype = e.dtype;
      t.shape = std::move(e.shape);
      const uint8_t* p = data_base + e.begin;
      size_t n = static_cast<size_t>(e.end - e.begin);
      size_t align = dtype_size(t.dtype);
      if (n == 0 || reinterpret_cast<uintptr_t>(p) % align == 0) {
        t.data = n == 0 ? static_cast<const void*>(data_base) : static_cast<const void*>(p);
        t.owner = owner;
      } else {
        // Misaligned for its element type: hand out an aligned copy instead.
        Tensor c = make_owned_tensor(t.dtype, t.shape);
        std::memcpy(mutable_data(c), p, n);
        t = std::move(c);
      }
      out.tensors_[e.name] = std::move(t);
    }
    out.file_ = std::move(file);
    return out;
  } catch (const std::bad_alloc&) {
    return internal_error(path + ": out of memory while reading the safetensors header");
  } catch (const std::exception& e) {
    return internal_error(path + ": unexpected error reading safetensors: " + e.what());
  }
}

// ---- writer ------------------------------------------------------------------------------------

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  try {
    std::string header = "{";
    bool first = true;
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool mfirst = true;
      for (const auto& [k, v] : metadata) {
        if (!valid_utf8(k))
          return invalid_argument(path + ": metadata key " + quoted(k) + " is not valid UTF-8");
        if (!valid_utf8(v))
          return invalid_argument(path + ": metadata value for " + quoted(k) +
                                  " is not valid UTF-8");
        if (!mfirst) header += ",";
        mfirst = false;
        append_json_string(&header, k);
        header += ":";
        append_json_string(&header, v);
      }
      header += "}";
      first = false;
    }
    std::set<std::string> seen;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      const std::string where = path + ": tensor " + quoted(name);
      if (name == "__metadata__")
        return invalid_argument(where + ": the name is reserved for the metadata");
      if (!valid_utf8(name)) return invalid_argument(where + ": the name is not valid UTF-8");
      if (!seen.insert(name).second) return invalid_argument(where + ": duplicate tensor name");
      if (dtype_size(t.dtype) == 0) return invalid_argument(where + ": invalid dtype");
      uint64_t n = 0;
      for (int64_t d : t.shape)
        if (d < 0)
          return invalid_argument(where + ": shape " + shape_string(t.shape) +
                                  " has a negative dim");
      if (!checked_nbytes(t.shape, dtype_size(t.dtype), &n))
        return invalid_argument(where + ": shape " + shape_string(t.shape) + " is too large");
      if (n > 0 && t.data == nullptr) return invalid_argument(where + ": tensor has no data");
      if (!first) header += ",";
      first = false;
      append_json_string(&header, name);
      header += ":{\"dtype\":\"";
      header += dtype_name(t.dtype);
      header += "\",\"shape\":[";
      for (size_t i = 0; i < t.shape.size(); ++i) {
        if (i) header += ",";
        header += std::to_string(t.shape[i]);
      }
      header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
                std::to_string(offset + n) + "]}";
      offset += n;
    }
    header += "}";
    while (header.size() % 8 != 0) header.push_back(' ');
    if (header.size() > kMaxHeaderBytes)
      return invalid_argument(path + ": header would be " + std::to_string(header.size()) +
                              " bytes, more than the 100 MiB readers accept");

    uint8_t len_bytes[8];
    uint64_t hl = header.size();
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(hl >> (8 * i));

    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      return io_error(path + ": cannot create temporary file " + tmp + ": " +
                      std::strerror(errno));
    auto fail = [&](Status st) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return st.with_context("writing " + path);
    };
    Status st = write_all(fd, len_bytes, 8, tmp);
    if (!st.ok()) return fail(st);
    st = write_all(fd, header.data(), header.size(), tmp);
    if (!st.ok()) return fail(st);
    for (const auto& [name, t] : tensors) {
      size_t n = t.nbytes();
      if (n == 0) continue;
      st = write_all(fd, t.data, n, tmp);
      if (!st.ok()) return fail(st);
    }
    if (::fsync(fd) != 0) return fail(io_error(tmp + ": fsync failed: " + std::strerror(errno)));
    if (::close(fd) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return io_error(path + ": closing " + tmp + " failed: " + std::strerror(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return io_error(path + ": cannot rename " + tmp + " into place: " + std::strerror(err));
    }
    // Make the rename itself durable (best effort).
    std::string dir = std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return internal_error(path + ": out of memory while writing safetensors");
  } catch (const std::exception& e) {
    return internal_error(path + ": unexpected error writing safetensors: " + e.what());
  }
}

// ---- sharded checkpoints -------------------------------------------------------------------------

Result<TensorMap> load_safetensors_index(const std::string& index_json_path) {
  const std::string& ip = index_json_path;
  try {
    BERT_ASSIGN_OR_RETURN(std::string text, read_small_file(ip, kMaxHeaderBytes));
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return format_error(ip + ": not valid JSON");
    if (!j.is_object()) return format_error(ip + ": not a JSON object");
    BERT_RETURN_IF_ERROR(check_unique_keys(text, ip));
    auto wm = j.find("weight_map");
    if (wm == j.end()) return format_error(ip + ": missing field 'weight_map'");
    if (!wm->is_object()) return format_error(ip + ": field 'weight_map' is not an object");
    if (wm->empty()) return format_error(ip + ": 'weight_map' lists no tensors");

    const std::filesystem::path dir = std::filesystem::path(ip).parent_path();
    std::map<std::string, SafetensorsFile> shards;
    TensorMap out;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string& name = it.key();
      if (!it.value().is_string())
        return format_error(ip + ": weight_map entry for tensor " + quoted(name) +
                            " is not a shard file name (" + json_brief(it.value()) + ")");
      const std::string& shard = it.value().get_ref<const std::string&>();
      std::filesystem::path rel(shard);
      if (shard.empty() || rel.is_absolute())
        return format_error(ip + ": weight_map entry for tensor " + quoted(name) +
                            " names shard " + quoted(shard) +
                            ", which is not a path relative to the index's directory");
      for (const auto& part : rel)
        if (part == "..")
          return format_error(ip + ": weight_map entry for tensor " + quoted(name) +
                              " names shard " + quoted(shard) +
                              ", which leaves the index's directory");
      auto sit = shards.find(shard);
      if (sit == shards.end()) {
        const std::string shard_path = (dir / rel).string();
        auto opened = SafetensorsFile::Open(shard_path);
        if (!opened.ok())
          return opened.status().with_context(ip + ": shard " + quoted(shard) +
                                              " (for tensor " + quoted(name) + ")");
        sit = shards.emplace(shard, std::move(opened).value()).first;
      }
      const Tensor* t = sit->second.find(name);
      if (t == nullptr)
        return not_found(ip + ": tensor " + quoted(name) + " is listed in weight_map under shard " +
                         quoted(shard) + ", but that shard does not hold it");
      out[name] = *t;
    }
    return out;
  } catch (const std::bad_alloc&) {
    return internal_error(ip + ": out of memory while loading the sharded checkpoint");
  } catch (const std::exception& e) {
    return internal_error(ip + ": unexpected error loading the sharded checkpoint: " + e.what());
  }
}

}  // namespace bert
