// torch.save zip checkpoints (pytorch_model.bin): locate <prefix>/data.pkl, run the restricted
// unpickler over it, then turn each tensor description into a Tensor over <prefix>/data/<key>,
// zero-copy when the view is contiguous and aligned, otherwise as a contiguous copy.
#include "weights/torch_checkpoint.h"

#include <cstring>
#include <memory>
#include <new>

#include "weights/mapped_file.h"
#include "weights/pickle_reader.h"
#include "weights/zip_reader.h"

namespace bert {

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

// Finds the single "<top folder>/data.pkl" (or a bare "data.pkl") and returns its prefix.
Result<std::string> find_prefix(const ZipArchive& zip, const std::string& path) {
  static const std::string kPkl = "data.pkl";
  std::string found;
  int count = 0;
  for (const auto& e : zip.entries()) {
    if (e.name.size() < kPkl.size() ||
        e.name.compare(e.name.size() - kPkl.size(), kPkl.size(), kPkl) != 0)
      continue;
    std::string prefix = e.name.substr(0, e.name.size() - kPkl.size());
    bool top_level = prefix.empty() ||
                     (prefix.back() == '/' && prefix.find('/') == prefix.size() - 1 &&
                      prefix.size() > 1);
    if (!top_level) continue;
    if (count++ == 0) found = prefix;
  }
  if (count == 0)
    return format_error(path + ": the zip archive has no '<folder>/data.pkl'; it is not a "
                               "torch.save checkpoint");
  if (count > 1)
    return format_error(path + ": the zip archive has more than one top-level data.pkl");
  return found;
}

bool mul_ok(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Builds one named tensor from its description and its storage's bytes.
Status materialise(const std::string& path, const std::string& name, const TorchTensorRef& r,
                   const ZipArchive::Bytes& storage, const std::shared_ptr<const void>& owner,
                   uint64_t* copy_budget, Tensor* out) {
  const std::string where = path + ": tensor " + q(name);
  const size_t es = dtype_size(r.storage.dtype);
  const std::string dname(dtype_name(r.storage.dtype));
  uint64_t storage_bytes = 0;
  if (!mul_ok(static_cast<uint64_t>(r.storage.numel), es, &storage_bytes) ||
      storage_bytes > storage.size)
    return format_error(where + ": storage " + q(r.storage.key) + " declares " +
                        std::to_string(r.storage.numel) + " elements of " + dname +
                        " but its archive entry holds only " + std::to_string(storage.size) +
                        " bytes");
  const size_t nd = r.size.size();
  uint64_t numel = 1;
  for (int64_t s : r.size)
    if (!mul_ok(numel, static_cast<uint64_t>(s), &numel))
      return format_error(where + ": shape " + shape_string(r.size) + " is too large");
  uint64_t nbytes = 0;
  if (!mul_ok(numel, es, &nbytes) || nbytes > (uint64_t{1} << 62))
    return format_error(where + ": shape " + shape_string(r.size) + " is too large");

  Tensor t;
  t.dtype = r.storage.dtype;
  t.shape = r.size;
  if (numel == 0) {
    t.data = storage.data;
    t.owner = owner;
    *out = std::move(t);
    return Status::Ok();
  }
  // The last element the view touches must lie inside the storage.
  uint64_t last = static_cast<uint64_t>(r.storage_offset);
  for (size_t k = 0; k < nd; ++k) {
    uint64_t span = 0;
    if (!mul_ok(static_cast<uint64_t>(r.size[k] - 1), static_cast<uint64_t>(r.stride[k]), &span) ||
        __builtin_add_overflow(last, span, &last))
      return format_error(where + ": view (size " + shape_string(r.size) + ", stride " +
                          shape_string(r.stride) + ") overflows");
  }
  if (last >= static_cast<uint64_t>(r.storage.numel))
    return format_error(where + ": view (offset " + std::to_string(r.storage_offset) + ", size " +
                        shape_string(r.size) + ", stride " + shape_string(r.stride) +
                        ") reaches element " + std::to_string(last) + " but storage " +
                        q(r.storage.key) + " holds " + std::to_string(r.storage.numel) +
                        " elements");

  bool contiguous = true;
  int64_t expect = 1;
  for (size_t k = nd; k-- > 0;) {
    if (r.size[k] == 1) continue;
    if (r.stride[k] != expect) {
      contiguous = false;
      break;
    }
    expect *= r.size[k];
  }
  const uint8_t* base = storage.data + static_cast<uint64_t>(r.storage_offset) * es;
  if (contiguous && reinterpret_cast<uintptr_t>(base) % es == 0) {
    t.data = base;
    t.owner = owner;
    *out = std::move(t);
    return Status::Ok();
  }
  if (nbytes > *copy_budget)
    return out_of_range(where + ": materialising its strided view needs " +
                        std::to_string(nbytes) + " bytes, more than this checkpoint may expand "
                        "to (" + std::to_string(*copy_budget) + " bytes left)");
  *copy_budget -= nbytes;
  Tensor c = make_owned_tensor(t.dtype, t.shape);
  uint8_t* dst = static_cast<uint8_t*>(mutable_data(c));
  if (contiguous) {
    std::memcpy(dst, base, static_cast<size_t>(nbytes));
  } else {
    // Walk the outer dims with an index counter; copy the innermost dim row by row.
    const int64_t inner = nd ? r.size[nd - 1] : 1;
    const int64_t inner_stride = nd ? r.stride[nd - 1] : 1;
    std::vector<int64_t> idx(nd, 0);
    uint64_t src = 0;  // element offset from base
    const uint64_t rows = numel / static_cast<uint64_t>(inner);
    for (uint64_t row = 0; row < rows; ++row) {
      const uint8_t* s = base + src * es;
      if (inner_stride == 1) {
        std::memcpy(dst, s, static_cast<size_t>(inner) * es);
        dst += static_cast<size_t>(inner) * es;
      } else {
        for (int64_t j = 0; j < inner; ++j) {
          std::memcpy(dst, s + static_cast<uint64_t>(j * inner_stride) * es, es);
          dst += es;
        }
      }
      for (size_t k = nd - 1; k-- > 0;) {  // advance the outer index (dims 0 .. nd-2)
        if (++idx[k] < r.size[k]) {
          src += static_cast<uint64_t>(r.stride[k]);
          break;
        }
        src -= static_cast<uint64_t>(r.stride[k]) * static_cast<uint64_t>(r.size[k] - 1);
        idx[k] = 0;
      }
    }
  }
  *out = std::move(c);
  return Status::Ok();
}

Result<TensorMap> load_impl(const std::string& path) {
  BERT_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::Open(path));
  const uint8_t* d = file->data();
  const size_t n = file->size();
  const bool zip_magic =
      n >= 4 && d[0] == 'P' && d[1] == 'K' &&
      ((d[2] == 3 && d[3] == 4) || (d[2] == 5 && d[3] == 6));
  if (!zip_magic) {
    const bool legacy_pickle = n >= 2 && d[0] == 0x80 && d[1] <= 5;
    const bool legacy_tar = n >= 262 && std::memcmp(d + 257, "ustar", 5) == 0;
    if (legacy_pickle || legacy_tar)
      return unsupported(path + ": this is a legacy (pre-1.6, non-zip) torch.save file, which "
                                "is not supported; re-save it with a newer PyTorch (torch.save "
                                "with the default zip format) or convert it to safetensors");
    return format_error(path + ": not a zip archive, so not a torch.save checkpoint (PyTorch "
                               ">= 1.6 writes zip files)");
  }
  BERT_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(d, n, path));
  BERT_ASSIGN_OR_RETURN(std::string prefix, find_prefix(zip, path));

  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    BERT_ASSIGN_OR_RETURN(ZipArchive::Bytes b, zip.stored_bytes(*bo));
    std::string order(reinterpret_cast<const char*>(b.data), b.size);
    if (order != "little")
      return unsupported(path + ": tensors are stored with byte order " + q(order) +
                         "; only little-endian checkpoints are supported");
  }

  const ZipEntry* pkl = zip.find(prefix + "data.pkl");
  BERT_ASSIGN_OR_RETURN(ZipArchive::Bytes pb, zip.stored_bytes(*pkl));
  BERT_ASSIGN_OR_RETURN(auto refs, unpickle_torch_state_dict(pb.data, pb.size, path));

  std::shared_ptr<const void> owner(file, static_cast<const void*>(file.get()));
  uint64_t copy_budget = 2 * static_cast<uint64_t>(n) + (uint64_t{64} << 20);
  TensorMap out;
  for (const auto& [name, r] : refs) {
    const std::string entry_name = prefix + "data/" + r.storage.key;
    const ZipEntry* e = zip.find(entry_name);
    if (e == nullptr)
      return not_found(path + ": tensor " + q(name) + " uses storage " + q(r.storage.key) +
                       ", but the archive has no entry " + q(entry_name));
    auto sb = zip.stored_bytes(*e);
    if (!sb.ok()) return sb.status().with_context("tensor " + q(name));
    Tensor t;
    BERT_RETURN_IF_ERROR(materialise(path, name, r, *sb, owner, &copy_budget, &t));
    out[name] = std::move(t);
  }
  return out;
}

}  // namespace

Result<TensorMap> load_torch_checkpoint(const std::string& path) {
  try {
    return load_impl(path);
  } catch (const std::bad_alloc&) {
    return internal_error(path + ": out of memory while loading the torch checkpoint");
  } catch (const std::exception& e) {
    return internal_error(path + ": unexpected error loading the torch checkpoint: " + e.what());
  }
}

}  // namespace bert
