// Tests for the safetensors reader/writer and sharded-index loader: round trips, every malformed
// header case (each must fail with a message naming the file/tensor, never crash), and opening
// every fixture under ../shared/fixtures when it is present.
#include "weights/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.h"

namespace bert {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using test::write_file;

Tensor tensor_from_bytes(DType dt, std::vector<int64_t> shape, const std::vector<uint8_t>& bytes) {
  Tensor t = make_owned_tensor(dt, std::move(shape));
  EXPECT_EQ(t.nbytes(), bytes.size());
  if (!bytes.empty()) std::memcpy(mutable_data(t), bytes.data(), bytes.size());
  return t;
}

std::vector<uint8_t> seq_bytes(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

// A raw safetensors file: 8-byte LE length, the header as given, then `data`.
std::string raw_file(const std::string& header, const std::string& data = "",
                     uint64_t declared_len = UINT64_MAX) {
  uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
  return out + header + data;
}

// Writes `bytes`, opens it, expects failure; returns the error message.
std::string open_error(const TempDir& dir, const std::string& bytes,
                       ErrorCode want = ErrorCode::kFormatError) {
  const fs::path p = dir / "model.safetensors";
  write_file(p, bytes);
  auto r = SafetensorsFile::Open(p.string());
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), want) << r.status().to_string();
  EXPECT_NE(r.status().message().find(p.string()), std::string::npos) << r.status().message();
  return r.status().message();
}

TEST(SafetensorsTest, RoundTripManyDtypes) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts;
  ts.emplace_back("f32", tensor_from_bytes(DType::kF32, {2, 3}, seq_bytes(24, 1)));
  ts.emplace_back("f16", tensor_from_bytes(DType::kF16, {3}, seq_bytes(6, 2)));  // odd size
  ts.emplace_back("bf16", tensor_from_bytes(DType::kBF16, {2, 2}, seq_bytes(8, 3)));
  ts.emplace_back("f64", tensor_from_bytes(DType::kF64, {2}, seq_bytes(16, 4)));
  ts.emplace_back("i64", tensor_from_bytes(DType::kI64, {1, 3}, seq_bytes(24, 5)));
  ts.emplace_back("i32", tensor_from_bytes(DType::kI32, {2}, seq_bytes(8, 6)));
  ts.emplace_back("i16", tensor_from_bytes(DType::kI16, {3}, seq_bytes(6, 7)));
  ts.emplace_back("i8", tensor_from_bytes(DType::kI8, {5}, seq_bytes(5, 8)));
  ts.emplace_back("u8", tensor_from_bytes(DType::kU8, {1, 1, 3}, seq_bytes(3, 9)));
  ts.emplace_back("bool", tensor_from_bytes(DType::kBool, {2}, {0, 1}));
  ts.emplace_back("scalar", tensor_from_bytes(DType::kF32, {}, seq_bytes(4, 10)));
  ts.emplace_back("empty", tensor_from_bytes(DType::kF32, {0, 4}, {}));
  ts.emplace_back("weird \"name\"\\\n\xc3\xa9", tensor_from_bytes(DType::kF32, {1}, seq_bytes(4, 11)));
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "quote \" backslash \\ newline \n tab \t \xc3\xbcni"}, {"", ""}};
  const std::string path = (dir / "rt.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, ts, meta).ok());

  // Standard layout: header length a multiple of 8, data contiguous right after it.
  std::string bytes = test::read_file(path);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; --i) hl = (hl << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(hl % 8, 0u);
  size_t total = 0;
  for (const auto& [n, t] : ts) total += t.nbytes();
  EXPECT_EQ(bytes.size(), 8 + hl + total);
  // No temporary file is left behind.
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) (void)e, ++files;
  EXPECT_EQ(files, 1u);

  TensorMap copy;
  {
    auto f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ(f->path(), path);
    EXPECT_EQ(f->metadata(), meta);
    EXPECT_EQ(f->tensors().size(), ts.size());
    EXPECT_EQ(f->find("nope"), nullptr);
    for (const auto& [name, t] : ts) {
      const Tensor* got = f->find(name);
      ASSERT_NE(got, nullptr) << name;
      EXPECT_EQ(got->dtype, t.dtype) << name;
      EXPECT_EQ(got->shape, t.shape) << name;
      ASSERT_EQ(got->nbytes(), t.nbytes()) << name;
      if (t.nbytes()) {
        EXPECT_EQ(std::memcmp(got->data, t.data, t.nbytes()), 0) << name;
      }
      EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data) % dtype_size(got->dtype), 0u) << name;
    }
    copy = f->tensors();
  }
  // Tensors outlive the SafetensorsFile object (the mapping is shared through Tensor.owner).
  const Tensor& f32 = copy.at("f32");
  EXPECT_EQ(std::memcmp(f32.data, ts[0].second.data, 24), 0);
  EXPECT_EQ(copy.at("scalar").numel(), 1);
  EXPECT_EQ(copy.at("empty").nbytes(), 0u);
}

TEST(SafetensorsTest, RoundTripNoMetadataNoTensorsAndOverwrite) {
  TempDir dir;
  const std::string path = (dir / "e.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, {}, {}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
  // Overwriting an existing file replaces it; the old mapping stays valid.
  TensorMap before = f->tensors();
  std::vector<std::pair<std::string, Tensor>> ts;
  ts.emplace_back("x", tensor_from_bytes(DType::kI32, {2}, seq_bytes(8, 1)));
  ASSERT_TRUE(write_safetensors(path, ts, {{"k", "v"}}).ok());
  auto g = SafetensorsFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->tensors().size(), 1u);
  EXPECT_EQ(g->metadata().at("k"), "v");
}

TEST(SafetensorsTest, WriteErrorsNameThePath) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts;
  ts.emplace_back("x", tensor_from_bytes(DType::kF32, {1}, seq_bytes(4, 1)));
  const std::string bad = (dir / "no_such_dir" / "m.safetensors").string();
  Status st = write_safetensors(bad, ts, {});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(bad), std::string::npos) << st.message();

  const std::string path = (dir / "m.safetensors").string();
  auto dup = ts;
  dup.push_back(ts[0]);
  st = write_safetensors(path, dup, {});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'x'"), std::string::npos) << st.message();

  std::vector<std::pair<std::string, Tensor>> reserved;
  reserved.emplace_back("__metadata__", ts[0].second);
  EXPECT_FALSE(write_safetensors(path, reserved, {}).ok());

  std::vector<std::pair<std::string, Tensor>> nodata;
  Tensor t;
  t.shape = {3};
  nodata.emplace_back("nodata", t);
  st = write_safetensors(path, nodata, {});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("nodata"), std::string::npos);

  EXPECT_FALSE(write_safetensors(path, ts, {{"bad", std::string("\xff\xfe")}}).ok());
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsTest, MissingFile) {
  TempDir dir;
  const std::string p = (dir / "absent.safetensors").string();
  auto r = SafetensorsFile::Open(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find(p), std::string::npos);
}

TEST(SafetensorsTest, TruncatedFiles) {
  TempDir dir;
  open_error(dir, "");
  open_error(dir, "\x05\x00\x00");
  EXPECT_NE(open_error(dir, std::string(7, '\0')).find("too short"), std::string::npos);
  // Header cut short: declares 64 bytes, holds 20.
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_NE(open_error(dir, raw_file(h.substr(0, 20), "", h.size())).find("header length"),
            std::string::npos);
  // Data cut short: the tensor's bytes are missing.
  std::string m = open_error(dir, raw_file(h, "ab"));
  EXPECT_NE(m.find("'a'"), std::string::npos) << m;
}

TEST(SafetensorsTest, HeaderLengthBeyondFileOrLimit) {
  TempDir dir;
  open_error(dir, raw_file("{}", "", 1000));
  open_error(dir, raw_file("{}", "", UINT64_MAX - 1));
  // A header length above 100 MiB is refused even when the file is that large (sparse file).
  const fs::path p = dir / "big.safetensors";
  write_file(p, raw_file("{}", "", (100ull << 20) + 8));
  fs::resize_file(p, (100ull << 20) + 64);
  auto r = SafetensorsFile::Open(p.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("100 MiB"), std::string::npos) << r.status().message();
}

TEST(SafetensorsTest, InvalidJson) {
  TempDir dir;
  EXPECT_NE(open_error(dir, raw_file("{not json")).find("JSON"), std::string::npos);
  open_error(dir, raw_file("[1, 2]   "));
  open_error(dir, raw_file("        "));
  open_error(dir, raw_file("{\"a\": 1}"));
  open_error(dir, raw_file("{} trailing"));
  open_error(dir, raw_file(std::string("{\"\xff\": 1}")));  // invalid UTF-8
  open_error(dir, raw_file(std::string(5000, '[')));
  std::string deep = "{\"a\":" + std::string(20000, '[') + std::string(20000, ']') + "}";
  open_error(dir, raw_file(deep));
}

TEST(SafetensorsTest, BadEntries) {
  TempDir dir;
  auto entry = [](const std::string& body) { return "{\"bert.pooler.dense.weight\":" + body + "}"; };
  const std::string d64(64, 'x');
  std::string m = open_error(dir, raw_file(entry(R"({"dtype":"F33","shape":[1],"data_offsets":[0,4]})"), d64));
  EXPECT_NE(m.find("bert.pooler.dense.weight"), std::string::npos);
  EXPECT_NE(m.find("F33"), std::string::npos);
  m = open_error(dir, raw_file(entry(R"({"dtype":"U32","shape":[1],"data_offsets":[0,4]})"), d64),
                 ErrorCode::kUnsupported);
  EXPECT_NE(m.find("U32"), std::string::npos);
  m = open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[-1, 4],"data_offsets":[0,4]})"), d64));
  EXPECT_NE(m.find("negative"), std::string::npos) << m;
  EXPECT_NE(m.find("bert.pooler.dense.weight"), std::string::npos);
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"shape":[1],"data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","data_offsets":[0,4]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"), d64));
  open_error(dir, raw_file(entry(R"([1,2])"), d64));
  // Offsets beyond the data section.
  m = open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[60,76]})"), d64));
  EXPECT_NE(m.find("beyond"), std::string::npos) << m;
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]})"), d64));
  // Size mismatch, with the message the brief asks for.
  m = open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[4,4],"data_offsets":[10,20]})"), d64));
  EXPECT_NE(m.find("tensor 'bert.pooler.dense.weight': data_offsets [10, 20] hold 10 bytes but "
                   "shape [4, 4] of F32 needs 64"),
            std::string::npos)
      << m;
  // Shapes whose byte size overflows.
  m = open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]})"), d64));
  EXPECT_NE(m.find("too large"), std::string::npos) << m;
  open_error(dir, raw_file(entry(R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]})"), d64));
  open_error(dir, raw_file(entry(R"({"dtype":"F32","shape":[0, 99999999999999999999],"data_offsets":[0,0]})"), d64));
}

TEST(SafetensorsTest, OverlappingTensors) {
  TempDir dir;
  const std::string d(64, 'x');
  std::string m = open_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                           d));
  EXPECT_NE(m.find("'a'"), std::string::npos) << m;
  EXPECT_NE(m.find("'b'"), std::string::npos) << m;
  EXPECT_NE(m.find("overlap"), std::string::npos) << m;
  open_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d));
  open_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[16],"data_offsets":[0,64]},)"
                           R"("b":{"dtype":"U8","shape":[1],"data_offsets":[63,64]}})", d));
  // Zero-size tensors overlap nothing; gaps are allowed.
  auto r = [&] {
    write_file(dir / "ok.safetensors",
               raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("z":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                        R"("c":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}})", d));
    return SafetensorsFile::Open((dir / "ok.safetensors").string());
  }();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->tensors().size(), 3u);
}

TEST(SafetensorsTest, BadMetadata) {
  TempDir dir;
  std::string m = open_error(dir, raw_file(R"({"__metadata__":{"format":"pt","n":1}})"));
  EXPECT_NE(m.find("__metadata__"), std::string::npos) << m;
  EXPECT_NE(m.find("'n'"), std::string::npos) << m;
  open_error(dir, raw_file(R"({"__metadata__":["a"]})"));
  open_error(dir, raw_file(R"({"__metadata__":{"a":{"b":"c"}}})"));
  open_error(dir, raw_file(R"({"__metadata__":{"a":null}})"));
}

TEST(SafetensorsTest, MisalignedTensorIsCopiedAligned) {
  TempDir dir;
  // An F16 of one element puts the following F32 at data offset 2.
  std::string data = "\x01\x02";
  float v = 3.5f;
  data.append(reinterpret_cast<const char*>(&v), 4);
  std::string header = R"({"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                       R"("f":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})";
  while ((header.size() + 8) % 8) header += ' ';
  write_file(dir / "m.safetensors", raw_file(header, data));
  auto r = SafetensorsFile::Open((dir / "m.safetensors").string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tensor* f = r->find("f");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f->data) % 4, 0u);
  EXPECT_EQ(f->as<float>()[0], 3.5f);
}

TEST(SafetensorsTest, ShardedIndex) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> s1, s2;
  s1.emplace_back("a", tensor_from_bytes(DType::kF32, {2}, seq_bytes(8, 1)));
  s1.emplace_back("b", tensor_from_bytes(DType::kI64, {1}, seq_bytes(8, 2)));
  s2.emplace_back("c", tensor_from_bytes(DType::kF16, {3}, seq_bytes(6, 3)));
  s2.emplace_back("unlisted", tensor_from_bytes(DType::kU8, {1}, seq_bytes(1, 4)));
  ASSERT_TRUE(write_safetensors((dir / "model-00001-of-00002.safetensors").string(), s1, {}).ok());
  ASSERT_TRUE(write_safetensors((dir / "model-00002-of-00002.safetensors").string(), s2, {}).ok());
  const std::string idx = (dir / "model.safetensors.index.json").string();
  write_file(idx, R"({"metadata":{"total_size":22},"weight_map":{
      "a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",
      "c":"model-00002-of-00002.safetensors"}})");
  auto r = load_safetensors_index(idx);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ(r->at("c").dtype, DType::kF16);
  EXPECT_EQ(std::memcmp(r->at("a").data, s1[0].second.data, 8), 0);
  EXPECT_EQ(std::memcmp(r->at("c").data, s2[0].second.data, 6), 0);

  // A name missing from its shard.
  write_file(idx, R"({"weight_map":{"a":"model-00001-of-00002.safetensors",
      "c":"model-00001-of-00002.safetensors"}})");
  auto m = load_safetensors_index(idx);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("'c'"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("model-00001-of-00002.safetensors"), std::string::npos);
  EXPECT_NE(m.status().message().find(idx), std::string::npos);

  // A missing shard file.
  write_file(idx, R"({"weight_map":{"a":"model-00009.safetensors"}})");
  m = load_safetensors_index(idx);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model-00009.safetensors"), std::string::npos);

  for (const char* bad : {"", "[]", "{}", R"({"weight_map":[]})", R"({"weight_map":{"a":1}})",
                          R"({"weight_map":{"a":"/etc/passwd"}})",
                          R"({"weight_map":{"a":"../x.safetensors"}})", R"({"weight_map":{}})"}) {
    write_file(idx, bad);
    auto b = load_safetensors_index(idx);
    EXPECT_FALSE(b.ok()) << bad;
    if (!b.ok()) {
      EXPECT_NE(b.status().message().find(idx), std::string::npos);
    }
  }
  EXPECT_FALSE(load_safetensors_index((dir / "absent.json").string()).ok());
}

// Every prefix of a valid file and every single-byte corruption of its header: no crash.
TEST(SafetensorsTest, FuzzTruncationAndCorruption) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts;
  ts.emplace_back("w", tensor_from_bytes(DType::kF32, {2, 2}, seq_bytes(16, 1)));
  ts.emplace_back("b", tensor_from_bytes(DType::kF16, {2}, seq_bytes(4, 2)));
  const std::string path = (dir / "m.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, ts, {{"k", "v"}}).ok());
  const std::string good = test::read_file(path);
  const std::string p2 = (dir / "f.safetensors").string();
  for (size_t n = 0; n < good.size(); ++n) {
    fs::remove(p2);
    write_file(p2, good.substr(0, n));
    EXPECT_FALSE(SafetensorsFile::Open(p2).ok()) << n;
  }
  const uint8_t kFlips[] = {0x01, 0x10, 0x80, 0xff};
  uint8_t sum = 0;
  for (size_t j = 0; j < 4 * good.size(); ++j) {
    const size_t i = j / 4;
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ kFlips[j % 4]);
    fs::remove(p2);  // a fresh file: truncating one in place makes ext4 flush it
    write_file(p2, bad);
    auto r = SafetensorsFile::Open(p2);
    if (!r.ok()) continue;
    for (const auto& [n, t] : r->tensors())
      for (size_t k = 0; k < t.nbytes(); ++k) sum ^= static_cast<const uint8_t*>(t.data)[k];
  }
  volatile uint8_t sink = sum;  // touch every byte handed out
  (void)sink;
}

TEST(SafetensorsTest, SharedFixturesOpen) {
  BERT_REQUIRE_SHARED(shared);
  int opened = 0;
  for (const auto& entry : fs::directory_iterator(shared / "fixtures")) {
    if (!entry.is_directory()) continue;
    for (const char* file : {"model.safetensors", "golden.safetensors"}) {
      const fs::path p = entry.path() / file;
      if (!fs::exists(p)) continue;
      auto r = SafetensorsFile::Open(p.string());
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_FALSE(r->tensors().empty()) << p;
      ++opened;
    }
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace bert
