// Tests for the torch.save (zip + restricted pickle) checkpoint reader: hand-built archives cover
// strided views, storage offsets, ZIP64, malicious globals, bad opcodes, truncation and corruption;
// with ../shared, every fixture's pytorch_model.bin must match its model.safetensors.
#include "weights/torch_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"
#include "weights/safetensors.h"

namespace bert {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;
using test::TempDir;
using test::write_file;

// ---- a tiny zip writer (stored entries, optional ZIP64 end records, 64-byte aligned data) -------

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put16(std::string* o, uint32_t v) {
  o->push_back(static_cast<char>(v & 0xFF));
  o->push_back(static_cast<char>((v >> 8) & 0xFF));
}
void put32(std::string* o, uint32_t v) {
  put16(o, v & 0xFFFF);
  put16(o, v >> 16);
}
void put64(std::string* o, uint64_t v) {
  put32(o, static_cast<uint32_t>(v));
  put32(o, static_cast<uint32_t>(v >> 32));
}

struct ZipItem {
  std::string name;
  std::string data;
  uint16_t method = 0;
};

std::string make_zip(const std::vector<ZipItem>& items, bool zip64 = true) {
  std::string out, central;
  for (const auto& it : items) {
    const uint32_t off = static_cast<uint32_t>(out.size());
    size_t base = out.size() + 30 + it.name.size() + 4;
    size_t pad = (64 - base % 64) % 64;
    out += "PK\x03\x04";
    put16(&out, 20);
    put16(&out, 0);
    put16(&out, it.method);
    put16(&out, 0);
    put16(&out, 0);
    put32(&out, crc32(it.data));
    put32(&out, static_cast<uint32_t>(it.data.size()));
    put32(&out, static_cast<uint32_t>(it.data.size()));
    put16(&out, static_cast<uint32_t>(it.name.size()));
    put16(&out, static_cast<uint32_t>(4 + pad));
    out += it.name;
    put16(&out, 0x4246);  // "FB" padding extra field, as torch writes
    put16(&out, static_cast<uint32_t>(pad));
    out.append(pad, 'Z');
    out += it.data;

    central += "PK\x01\x02";
    put16(&central, 20);
    put16(&central, 20);
    put16(&central, 0);
    put16(&central, it.method);
    put16(&central, 0);
    put16(&central, 0);
    put32(&central, crc32(it.data));
    put32(&central, static_cast<uint32_t>(it.data.size()));
    put32(&central, static_cast<uint32_t>(it.data.size()));
    put16(&central, static_cast<uint32_t>(it.name.size()));
    put16(&central, 0);
    put16(&central, 0);
    put16(&central, 0);
    put16(&central, 0);
    put32(&central, 0);
    put32(&central, off);
    central += it.name;
  }
  const uint64_t cd_off = out.size();
  out += central;
  if (zip64) {
    const uint64_t z64 = out.size();
    out += "PK\x06\x06";
    put64(&out, 44);
    put16(&out, 45);
    put16(&out, 45);
    put32(&out, 0);
    put32(&out, 0);
    put64(&out, items.size());
    put64(&out, items.size());
    put64(&out, central.size());
    put64(&out, cd_off);
    out += "PK\x06\x07";
    put32(&out, 0);
    put64(&out, z64);
    put32(&out, 1);
  }
  out += "PK\x05\x06";
  put16(&out, 0);
  put16(&out, 0);
  put16(&out, zip64 ? 0xFFFF : static_cast<uint32_t>(items.size()));
  put16(&out, zip64 ? 0xFFFF : static_cast<uint32_t>(items.size()));
  put32(&out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(central.size()));
  put32(&out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_off));
  put16(&out, 0);
  return out;
}

// ---- hand-assembled pickles -------------------------------------------------------------------

struct Pickle {
  std::string b;
  Pickle& op(char c) {
    b.push_back(c);
    return *this;
  }
  Pickle& raw(const std::string& s) {
    b += s;
    return *this;
  }
  Pickle& str(const std::string& s) {  // BINUNICODE
    b.push_back('X');
    put32(&b, static_cast<uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v > INT32_MAX || v < INT32_MIN) {  // LONG1 with 8 bytes
      b.push_back('\x8a');
      b.push_back(8);
      put64(&b, static_cast<uint64_t>(v));
    } else if (v >= 0 && v < 256) {
      b.push_back('K');
      b.push_back(static_cast<char>(v));
    } else if (v >= 0 && v < 65536) {
      b.push_back('M');
      put16(&b, static_cast<uint32_t>(v));
    } else {
      b.push_back('J');
      put32(&b, static_cast<uint32_t>(v));
    }
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b.push_back('c');
    b += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  // _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& storage_type, const std::string& key, int64_t numel,
                 int64_t offset, const std::vector<int64_t>& size,
                 const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(').str("storage").global("torch", storage_type).str(key).str("cpu").integer(numel).op('t');
    op('Q');
    integer(offset);
    int_tuple(size);
    int_tuple(stride);
    op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    op('t');
    return op('R');
  }
};

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string i64_bytes(const std::vector<int64_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 8);
}

// A state dict: OrderedDict with a `_metadata` BUILD, memo use, a parameter wrapper, a transposed
// view, a view at a storage offset, a strided view and an int64 storage.
std::string valid_pickle() {
  Pickle p;
  p.op('\x80').op('\x02');
  p.global("collections", "OrderedDict").op('q').op('\x00').op(')').op('R').op('q').op('\x01');
  p.op('(');
  p.str("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.str("wt").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.str("ws").tensor("FloatStorage", "0", 6, 1, {2, 2}, {3, 1});
  p.str("tail").tensor("FloatStorage", "0", 6, 4, {2}, {1});
  p.str("b").tensor("LongStorage", "1", 5, 2, {3}, {1});
  // _rebuild_parameter(tensor, True, OrderedDict())
  p.str("param").global("torch._utils", "_rebuild_parameter").op('(');
  p.tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('\x88').op('h').op('\x00').op(')').op('R').op('t').op('R');
  p.str("scalar").tensor("FloatStorage", "0", 6, 5, {}, {});
  p.str("empty").tensor("FloatStorage", "0", 6, 0, {0, 3}, {3, 1});
  p.op('u');
  // BUILD with the state dict's _metadata (ignored).
  p.op('}').str("_metadata").op('}').op('s').op('b');
  p.op('.');
  return p.b;
}

std::string torch_zip(const std::string& pkl, const std::string& prefix = "archive/",
                      bool zip64 = true) {
  return make_zip({{prefix + "data.pkl", pkl},
                   {prefix + "data/0", f32_bytes({0, 1, 2, 3, 4, 5})},
                   {prefix + "data/1", i64_bytes({10, 11, 12, 13, 14})},
                   {prefix + "version", "3\n"}},
                  zip64);
}

Status load_status(const TempDir& dir, const std::string& bytes) {
  const fs::path p = dir / "pytorch_model.bin";
  write_file(p, bytes);
  auto r = load_torch_checkpoint(p.string());
  if (r.ok()) return Status::Ok();
  EXPECT_NE(r.status().message().find(p.string()), std::string::npos) << r.status().message();
  return r.status();
}

std::vector<float> floats(const Tensor& t) {
  EXPECT_EQ(t.dtype, DType::kF32);
  return std::vector<float>(t.as<float>(), t.as<float>() + t.numel());
}

TEST(TorchCheckpointTest, MinimalStateDictWithViews) {
  TempDir dir;
  for (bool zip64 : {true, false}) {
    for (const std::string prefix : {"archive/", "pytorch_model/"}) {
      const fs::path p = dir / "pytorch_model.bin";
      write_file(p, torch_zip(valid_pickle(), prefix, zip64));
      TensorMap m;
      {
        auto r = load_torch_checkpoint(p.string());
        ASSERT_TRUE(r.ok()) << r.status().to_string();
        m = *r;
      }
      fs::remove(p);  // tensors keep the mapping alive
      ASSERT_EQ(m.size(), 8u);
      EXPECT_EQ(m.at("w").shape, (std::vector<int64_t>{2, 3}));
      EXPECT_EQ(floats(m.at("w")), (std::vector<float>{0, 1, 2, 3, 4, 5}));
      EXPECT_EQ(m.at("wt").shape, (std::vector<int64_t>{3, 2}));
      EXPECT_EQ(floats(m.at("wt")), (std::vector<float>{0, 3, 1, 4, 2, 5}));
      EXPECT_EQ(floats(m.at("ws")), (std::vector<float>{1, 2, 4, 5}));
      EXPECT_EQ(floats(m.at("tail")), (std::vector<float>{4, 5}));
      EXPECT_EQ(floats(m.at("param")), (std::vector<float>{0, 1, 2, 3, 4, 5}));
      EXPECT_EQ(m.at("scalar").shape.size(), 0u);
      EXPECT_EQ(floats(m.at("scalar")), (std::vector<float>{5}));
      EXPECT_EQ(m.at("empty").numel(), 0);
      const Tensor& b = m.at("b");
      EXPECT_EQ(b.dtype, DType::kI64);
      EXPECT_EQ(b.shape, (std::vector<int64_t>{3}));
      EXPECT_EQ(std::vector<int64_t>(b.as<int64_t>(), b.as<int64_t>() + 3),
                (std::vector<int64_t>{12, 13, 14}));
      for (const auto& [n, t] : m)
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << n;
    }
  }
}

TEST(TorchCheckpointTest, RefusesDangerousGlobals) {
  TempDir dir;
  {
    Pickle p;
    p.op('\x80').op('\x02').global("os", "system").str("echo pwned").op('\x85').op('R').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("pickle references 'os.system', which is not tensor data; "
                                "refusing to load"),
              std::string::npos)
        << st.message();
  }
  for (auto [m, n] : std::vector<std::pair<std::string, std::string>>{
           {"builtins", "eval"}, {"__builtin__", "getattr"}, {"torch", "load"},
           {"torch.storage", "UntypedStorage"}, {"collections", "defaultdict"}}) {
    Pickle p;
    p.op('\x80').op('\x02').global(m, n).op(')').op('R').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("'" + m + "." + n + "'"), std::string::npos) << st.message();
  }
  {  // STACK_GLOBAL is checked the same way.
    Pickle p;
    p.op('\x80').op('\x04').str("builtins").str("exec").op('\x93').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("builtins.exec"), std::string::npos) << st.message();
  }
}

TEST(TorchCheckpointTest, UnknownOpcode) {
  TempDir dir;
  Pickle p;
  p.op('\x80').op('\x02').op('}').op('i').raw("os\nsystem\n").op('.');  // INST
  Status st = load_status(dir, torch_zip(p.b));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("0x69"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("offset 3"), std::string::npos) << st.message();
  Pickle p2;
  p2.op('\x80').op('\x02').op('\xff');
  st = load_status(dir, torch_zip(p2.b));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("0xff"), std::string::npos) << st.message();
}

TEST(TorchCheckpointTest, MalformedPickles) {
  TempDir dir;
  auto bad = [&](const std::string& pkl, const std::string& want) {
    Status st = load_status(dir, torch_zip(pkl));
    EXPECT_FALSE(st.ok()) << want;
    if (!want.empty()) {
      EXPECT_NE(st.message().find(want), std::string::npos) << st.message();
    }
  };
  bad("", "STOP");                                   // empty
  bad("\x80\x02}", "STOP");                          // no STOP
  bad("\x80\x02.", "");                              // STOP on empty stack
  bad("\x80\x09}.", "protocol");                     // unknown protocol
  bad("\x80\x02]." , "not a state dict");            // a list
  bad("\x80\x02}X\x01\x00\x00\x00kK\x05s."s, "'k'");  // non-tensor value names the key
  bad("\x80\x02}K\x01K\x05s.", "key");               // non-string key
  bad("\x80\x02h\x07.", "memo");                     // BINGET of an unknown index
  bad("\x80\x02}r\xff\xff\xff\xffj\xfe\xff\xff\xff.", "memo");
  bad(std::string("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", 12), "truncated");  // huge str
  bad(std::string("\x80\x02X\xff\xff\xff\xff", 7), "truncated");
  bad("\x80\x02T\xff\xff\xff\xff", "");
  bad(std::string("\x80\x02\x8a\x09", 4), "");       // LONG1 too long
  bad("\x80\x02)R.", "");                           // REDUCE with too few items
  bad("\x80\x02K\x01)R.", "");                      // REDUCE calling an int
  bad("\x80\x02(}u.", "");                          // SETITEMS with no dict below the mark
  bad("\x80\x02}(K\x01u.", "odd");                  // odd SETITEMS
  bad("\x80\x02t.", "MARK");                        // TUPLE without MARK
  bad("\x80\x02}(K\x01" "b.", "");                   // BUILD with nothing above the MARK
  bad("\x80\x02K\x01}b.", "BUILD");                 // BUILD on an int
  // Deep nesting: 200000 TUPLE1 around one value, and lists appended to themselves.
  bad("\x80\x02)" + std::string(200000, '\x85') + ".", "nested");
  bad("\x80\x02]q\x00"s + [] {
    std::string s;
    for (int i = 0; i < 1000; ++i) s += "h\x00" "a"s;
    return s;
  }() + ".", "nested");
  // A rebuild with wrong argument types.
  {
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("x").global("torch._utils", "_rebuild_tensor_v2");
    p.op('(').integer(1).integer(0).int_tuple({1}).int_tuple({1}).op('\x89').op('}').op('t').op('R');
    p.op('s').op('.');
    bad(p.b, "storage");
  }
  {  // size/stride rank mismatch
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("x").tensor("FloatStorage", "0", 6, 0, {2, 3}, {1}).op('s').op('.');
    bad(p.b, "dims");
  }
  {  // a persistent id that is not ('storage', ...)
    Pickle p;
    p.op('\x80').op('\x02').str("nope").op('Q').op('.');
    bad(p.b, "persistent id");
  }
  {  // one storage used with two dtypes
    Pickle p;
    p.op('\x80').op('\x02').op('}').op('(');
    p.str("a").tensor("FloatStorage", "0", 6, 0, {6}, {1});
    p.str("b").tensor("IntStorage", "0", 6, 0, {6}, {1});
    p.op('u').op('.');
    bad(p.b, "two different");
  }
}

TEST(TorchCheckpointTest, MissingStorageAndOversizedView) {
  TempDir dir;
  {
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("enc.weight").tensor("FloatStorage", "7", 6, 0, {6}, {1}).op('s').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), ErrorCode::kNotFound);
    EXPECT_NE(st.message().find("'enc.weight'"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("archive/data/7"), std::string::npos) << st.message();
  }
  for (auto [off, size, stride] : std::vector<std::tuple<int64_t, std::vector<int64_t>, std::vector<int64_t>>>{
           {0, {7}, {1}}, {1, {6}, {1}}, {0, {2, 3}, {4, 1}}, {6, {1}, {1}},
           {0, {3000000000LL, 3000000000LL}, {3000000000LL, 1}}}) {
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("big").tensor("FloatStorage", "0", 6, off, size, stride).op('s').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("'big'"), std::string::npos) << st.message();
  }
  {  // the persistent id claims more elements than the entry holds
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("x").tensor("FloatStorage", "0", 600, 0, {6}, {1}).op('s').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("'x'"), std::string::npos) << st.message();
  }
  {  // a broadcast view far larger than the file is refused, not allocated
    Pickle p;
    p.op('\x80').op('\x02').op('}').str("x").tensor("FloatStorage", "0", 6, 0, {1000000, 1000000}, {0, 0}).op('s').op('.');
    Status st = load_status(dir, torch_zip(p.b));
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("'x'"), std::string::npos) << st.message();
  }
}

TEST(TorchCheckpointTest, CompressedEntry) {
  TempDir dir;
  auto zip = make_zip({{"archive/data.pkl", valid_pickle(), 8},
                       {"archive/data/0", f32_bytes({0, 1, 2, 3, 4, 5})},
                       {"archive/data/1", i64_bytes({10, 11, 12, 13, 14})}});
  Status st = load_status(dir, zip);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("compressed"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("archive/data.pkl"), std::string::npos) << st.message();
  zip = make_zip({{"archive/data.pkl", valid_pickle()},
                  {"archive/data/0", f32_bytes({0, 1, 2, 3, 4, 5}), 8},
                  {"archive/data/1", i64_bytes({10, 11, 12, 13, 14})}});
  st = load_status(dir, zip);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("archive/data/0"), std::string::npos) << st.message();
}

TEST(TorchCheckpointTest, NotZipAndLegacy) {
  TempDir dir;
  Status st = load_status(dir, "hello, this is not a checkpoint at all");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not a zip"), std::string::npos) << st.message();
  st = load_status(dir, "");
  EXPECT_FALSE(st.ok());
  // Legacy torch.save: a bare pickle stream starting with the magic number.
  st = load_status(dir, std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("legacy"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("safetensors"), std::string::npos) << st.message();
  // A zip that is not a torch checkpoint.
  st = load_status(dir, make_zip({{"readme.txt", "hi"}}));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("data.pkl"), std::string::npos) << st.message();
  auto r = load_torch_checkpoint((dir / "absent.bin").string());
  EXPECT_FALSE(r.ok());
}

TEST(TorchCheckpointTest, TruncatedZip) {
  TempDir dir;
  const std::string good = torch_zip(valid_pickle());
  Status st = load_status(dir, good.substr(0, good.size() / 2));
  ASSERT_FALSE(st.ok());
  // Every prefix fails cleanly (the EOCD is the last thing in the file).
  for (size_t n = 0; n < good.size(); ++n) {
    const fs::path p = dir / "t.bin";
    fs::remove(p);
    write_file(p, good.substr(0, n));
    EXPECT_FALSE(load_torch_checkpoint(p.string()).ok()) << n;
  }
}

// Single-byte corruptions of a valid archive: each loads or fails, never crashes or reads out of
// bounds (meaningful under ASan/valgrind).
TEST(TorchCheckpointTest, CorruptionFuzz) {
  TempDir dir;
  const std::string good = torch_zip(valid_pickle());
  const fs::path p = dir / "c.bin";
  int loaded = 0;
  uint8_t sum = 0;
  const uint8_t kFlips[] = {0x01, 0x80, 0xff};
  for (size_t j = 0; j < 3 * good.size(); ++j) {
    const size_t i = j / 3;
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ kFlips[j % 3]);
    fs::remove(p);  // a fresh file: truncating one in place makes ext4 flush it
    write_file(p, bad);
    auto r = load_torch_checkpoint(p.string());
    if (!r.ok()) continue;
    ++loaded;
    for (const auto& [n, t] : *r)
      for (size_t k = 0; k < t.nbytes(); ++k) sum ^= static_cast<const uint8_t*>(t.data)[k];
  }
  volatile uint8_t sink = sum;  // touch every byte handed out
  (void)sink;
  EXPECT_GT(loaded, 0);  // corrupting padding or tensor bytes still loads
}

TEST(TorchCheckpointTest, SharedFixturesMatchSafetensors) {
  BERT_REQUIRE_SHARED(shared);
  int fixtures = 0;
  for (const auto& entry : fs::directory_iterator(shared / "fixtures")) {
    const fs::path bin = entry.path() / "pytorch_model.bin";
    const fs::path st = entry.path() / "model.safetensors";
    if (!entry.is_directory() || !fs::exists(bin) || !fs::exists(st)) continue;
    ++fixtures;
    const std::string name = entry.path().filename().string();
    auto b = load_torch_checkpoint(bin.string());
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    auto s = SafetensorsFile::Open(st.string());
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    for (const auto& [tname, t] : s->tensors()) {
      auto it = b->find(tname);
      ASSERT_NE(it, b->end()) << name << ": " << tname << " missing from pytorch_model.bin";
      const Tensor& u = it->second;
      EXPECT_EQ(u.dtype, t.dtype) << name << ": " << tname;
      EXPECT_EQ(u.shape, t.shape) << name << ": " << tname;
      ASSERT_EQ(u.nbytes(), t.nbytes()) << name << ": " << tname;
      EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes()), 0) << name << ": " << tname;
    }
    std::vector<std::string> extra;
    for (const auto& [tname, t] : *b)
      if (s->find(tname) == nullptr) extra.push_back(tname);
    std::cout << "[fixture " << name << "] " << s->tensors().size() << " safetensors tensors, "
              << b->size() << " in pytorch_model.bin; extra in .bin:";
    for (const auto& e : extra) {
      std::cout << " " << e;
      // Name the tensor it is tied to (same storage bytes), if any.
      const Tensor& x = b->at(e);
      for (const auto& [other, y] : *b)
        if (other != e && y.data == x.data && y.shape == x.shape && s->find(other))
          std::cout << " (tied to " << other << ")";
    }
    std::cout << (extra.empty() ? " (none)" : "") << "\n";
  }
  EXPECT_GT(fixtures, 0);
}

}  // namespace
}  // namespace bert
