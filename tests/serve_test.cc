// bert_serve end to end: the server binary started on a free loopback port, driven over HTTP.
// Every endpoint; concurrent clients get bert_run's answers; a corpus of malformed requests (each a
// 4xx JSON error naming the problem); 10,000 mixed valid and malformed requests with the server alive
// and correct after; loading / replacing / unloading a model while requests run; limits (queue full
// -> 429, timeout -> 504, body / inputs / characters -> 413); model-dir confinement and the admin
// token; SIGTERM finishing the request in flight. Models are synthetic bert-tiny shapes written here
// (../shared's vocab when present, else a small built-in one).
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bert/model_builder.h"
#include "engine/serve/server/http_server.h"
#include "tests/test_util.h"

namespace bert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// ---- fixtures ------------------------------------------------------------------------------------

// The models every test uses, written once per test process.
struct Models {
  test::TempDir dir;
  fs::path model_dir;  // confinement root for POST /v1/models
  fs::path vocab;
  Models() {
    model_dir = dir / "models";
    fs::create_directories(model_dir);
    auto shared = test::shared_dir();
    if (shared && fs::exists(*shared / "models/bert-base-uncased-tokenizer/vocab.txt")) {
      vocab = *shared / "models/bert-base-uncased-tokenizer/vocab.txt";
    } else {
      vocab = dir / "vocab.txt";
      std::ofstream f(vocab);
      for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "movie", "film", "is", "was",
                            "good", "bad", "great", "awful", "and", "but", "not", "it", "'", "s", ",", ".", "!",
                            "charming", "dull", "##ly", "##s", "where", "paris", "france", "in", "acting", "story"})
        f << t << "\n";
    }
    write("cls.bert", "BertForSequenceClassification", 1);
    write("cls2.bert", "BertForSequenceClassification", 2);
    write("mlm.bert", "BertForMaskedLM", 3);
    write("qa.bert", "BertForQuestionAnswering", 4);
    write("tok.bert", "BertForTokenClassification", 5);
    test::write_file(model_dir / "not_a_model.bert", "this is not a safetensors file");
  }
  void write(const std::string& file, const std::string& arch, uint32_t seed) {
    auto r = WriteSynthetic({.preset = "bert-tiny", .architecture = arch, .seed = seed, .vocab_path = vocab.string()},
                            (model_dir / file).string());
    if (!r.ok()) throw std::runtime_error(r.status().to_string());
  }
  std::string path(const std::string& file) const { return (model_dir / file).string(); }
};

Models& models() {
  static Models m;
  return m;
}

// bert_serve as a child process; its port is read from its first stdout line.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    log_ = (log_dir_.path() / "stderr.txt").string();
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      FILE* err = std::fopen(log_.c_str(), "w");
      if (err) dup2(fileno(err), 2);
      close(out[0]);
      std::vector<std::string> argv_s = {(test::tools_dir() / "bert_serve").string(), "--port", "0"};
      argv_s.insert(argv_s.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, n);
    }
    close(out[0]);
    const size_t colon = line.rfind(':');
    if (line.find("listening on") == std::string::npos || colon == std::string::npos)
      throw std::runtime_error("bert_serve did not start: " + line + " / " + stderr_text());
    port_ = std::atoi(line.c_str() + colon + 1);
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string stderr_text() const { return test::read_file(log_); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    c.set_connection_timeout(5, 0);
    c.set_tcp_nodelay(true);
    return c;
  }
  // Waits for GET /health to say 200.
  bool WaitHealthy() const {
    auto c = client();
    for (int i = 0; i < 300; ++i) {
      auto r = c.Get("/health");
      if (r && r->status == 200) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  // Sends `sig`, waits up to `timeout` for the exit; the exit status, or -1 when still running.
  int Stop(int sig, std::chrono::milliseconds timeout) {
    kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

 private:
  test::TempDir log_dir_;
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// The standard server: five models, the model dir, small limits so the limit tests stay cheap.
std::vector<std::string> standard_args(std::vector<std::string> extra = {}) {
  const Models& m = models();
  std::vector<std::string> a = {"--model",      "cls=" + m.path("cls.bert"),
                                "--model",      "cls2=" + m.path("cls2.bert"),
                                "--model",      "mlm=" + m.path("mlm.bert"),
                                "--model",      "qa=" + m.path("qa.bert"),
                                "--model",      "tok=" + m.path("tok.bert"),
                                "--model-dir",  m.model_dir.string(),
                                "--threads",    "2",
                                "--max-inputs", "16",
                                "--max-input-chars", "1000",
                                "--max-body-bytes", "65536"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

struct Reply {
  int status = -1;
  json body;
  std::string raw;
};

Reply post(httplib::Client& c, const std::string& path, const std::string& body,
           const httplib::Headers& headers = {}) {
  auto r = c.Post(path, headers, body, "application/json");
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.raw = r->body;
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

Reply get(httplib::Client& c, const std::string& path) {
  auto r = c.Get(path);
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.raw = r->body;
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

// The error message of a JSON error reply ("" when the reply is not one).
std::string error_message(const Reply& r) {
  if (!r.body.is_object() || !r.body.contains("error")) return "";
  return r.body["error"].value("message", "");
}

const std::vector<std::string> kSentences = {
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting is great but the story is dull",
    "a film that is not good !",
    "where is paris ?",
    "it was awful",
    "",  // an empty text is valid: [CLS] [SEP]
    "great great great movie , great acting , great story and a charming film",
};

// bert_run --text's JSON for one input.
json bert_run(const std::string& model_file, const std::string& text, const std::string& pair = "") {
  auto quote = [](const std::string& x) {
    std::string q = "'";
    for (char ch : x) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
  };
  std::string cmd = (test::tools_dir() / "bert_run").string() + " --model " + models().path(model_file) + " --text " +
                    quote(text);
  if (!pair.empty()) cmd += " --text-pair " + quote(pair);
  auto r = test::run_command(cmd + " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json::parse(r.output, nullptr, false);
}

// Same prediction: tokens equal, probabilities / scores within 1e-5 (batched vs single runs differ
// in the last bits), labels equal unless the reference's top two are within 1e-5 of each other.
void expect_same_prediction(const json& got, const json& want, const std::string& what) {
  ASSERT_TRUE(got.is_object()) << what;
  EXPECT_EQ(got["tokens"], want["tokens"]) << what;
  if (want.contains("probabilities")) {
    std::vector<double> p;
    for (const auto& [label, v] : want["probabilities"].items()) {
      EXPECT_NEAR(got["probabilities"][label].get<double>(), v.get<double>(), 1e-5) << what << " " << label;
      p.push_back(v.get<double>());
    }
    std::sort(p.rbegin(), p.rend());
    if (p.size() < 2 || p[0] - p[1] > 1e-5) {
      EXPECT_EQ(got["label"], want["label"]) << what;
    }
  }
  if (want.contains("entities")) {
    ASSERT_EQ(got["entities"].size(), want["entities"].size()) << what;
    for (size_t i = 0; i < want["entities"].size(); ++i) {
      const double s = want["entities"][i]["score"].get<double>();
      EXPECT_NEAR(got["entities"][i]["score"].get<double>(), s, 1e-5) << what;
      if (std::abs(s - 0.5) > 1e-5) {
        EXPECT_EQ(got["entities"][i]["label"], want["entities"][i]["label"]) << what;
      }
    }
  }
}

// ---- unit tests of the pieces the HTTP layer relies on --------------------------------------------

TEST(serve, ResolveModelPathConfines) {
  test::TempDir d;
  fs::create_directories(d / "root/sub");
  test::write_file(d / "root/sub/m.bert", "x");
  test::write_file(d / "outside.bert", "x");
  fs::create_symlink(d / "outside.bert", d / "root/escape.bert");
  fs::create_symlink(d / "root/sub/m.bert", d / "root/inside_link.bert");
  const std::string root = (d / "root").string();
  auto ok = serve::ResolveModelPath(root, "sub/m.bert");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(*ok, fs::canonical(d / "root/sub/m.bert").string());
  EXPECT_TRUE(serve::ResolveModelPath(root, "inside_link.bert").ok());
  EXPECT_TRUE(serve::ResolveModelPath(root, (d / "root/sub/m.bert").string()).ok());  // absolute, inside
  auto dots = serve::ResolveModelPath(root, "sub/../sub/m.bert");
  EXPECT_EQ(dots.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(dots.status().message().find("'..'"), std::string::npos);
  auto abs = serve::ResolveModelPath(root, (d / "outside.bert").string());
  EXPECT_EQ(abs.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(abs.status().message().find("outside the model directory"), std::string::npos);
  auto link = serve::ResolveModelPath(root, "escape.bert");
  EXPECT_EQ(link.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(link.status().message().find("symlink"), std::string::npos);
  EXPECT_EQ(serve::ResolveModelPath(root, "missing.bert").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(serve::ResolveModelPath(root, "").status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(serve::ResolveModelPath("", "sub/m.bert").status().code(), ErrorCode::kInvalidArgument);
}

TEST(serve, TokenEquals) {
  EXPECT_TRUE(serve::TokenEquals("s3cret", "s3cret"));
  EXPECT_FALSE(serve::TokenEquals("s3cre", "s3cret"));
  EXPECT_FALSE(serve::TokenEquals("s3cretX", "s3cret"));
  EXPECT_FALSE(serve::TokenEquals("", "s3cret"));
  EXPECT_FALSE(serve::TokenEquals("S3cret", "s3cret"));
  EXPECT_TRUE(serve::TokenEquals("", ""));
}

// ---- the server -----------------------------------------------------------------------------------

TEST(serve, EveryEndpoint) {
  const fs::path demo = models().dir / "demo.tsv";
  test::write_file(demo, "sentence\tlabel\na fine film \t1\nawful \t0\n");
  ServeProcess s(standard_args({"--demo-data", demo.string()}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();

  Reply health = get(c, "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body["status"], "ok");
  EXPECT_EQ(health.body["models"].size(), 5u);

  Reply list = get(c, "/v1/models");
  ASSERT_EQ(list.status, 200);
  std::map<std::string, json> info;
  for (const json& m : list.body["models"]) info[m["name"]] = m;
  ASSERT_EQ(info.size(), 5u);
  EXPECT_EQ(info["cls"]["head"], "sequence_classification");
  EXPECT_EQ(info["cls"]["family"], "bert");
  EXPECT_EQ(info["cls"]["labels"].size(), 2u);
  EXPECT_EQ(info["cls"]["precision"], "fp32");
  EXPECT_EQ(info["cls"]["device"], "cpu");
  EXPECT_EQ(info["qa"]["head"], "question_answering");

  Reply cls = post(c, "/v1/predict", R"({"model": "cls", "inputs": ["a good movie", ["the film", "was dull"]]})");
  ASSERT_EQ(cls.status, 200) << cls.raw;
  ASSERT_EQ(cls.body["results"].size(), 2u);
  EXPECT_TRUE(cls.body["results"][0].contains("label"));
  EXPECT_EQ(cls.body["results"][0]["probabilities"].size(), 2u);
  EXPECT_GT(cls.body["latency_ms"].get<double>(), 0);
  EXPECT_EQ(cls.body["results"][1]["tokens"].back(), "[SEP]");

  Reply mlm = post(c, "/v1/predict", R"({"model": "mlm", "inputs": ["the [MASK] is good"], "top_k": 3})");
  ASSERT_EQ(mlm.status, 200) << mlm.raw;
  ASSERT_EQ(mlm.body["results"][0]["masks"].size(), 1u);
  EXPECT_EQ(mlm.body["results"][0]["masks"][0]["top5"].size(), 3u);

  Reply qa = post(c, "/v1/predict", R"({"model": "qa", "inputs": [["where is paris ?", "paris is in france ."]]})");
  ASSERT_EQ(qa.status, 200) << qa.raw;
  EXPECT_TRUE(qa.body["results"][0].contains("answer"));
  // As bert_run prints it: the answer cut from the context with character offsets (or a note why not).
  EXPECT_TRUE(qa.body["results"][0].contains("start") || qa.body["results"][0].contains("note")) << qa.raw;

  Reply tok = post(c, "/v1/predict", R"({"model": "tok", "inputs": ["a charming film"]})");
  ASSERT_EQ(tok.status, 200) << tok.raw;
  // Token labels come by word, without [CLS] / [SEP] (as bert_run prints them).
  ASSERT_EQ(tok.body["results"][0]["entities"].size(), 3u) << tok.raw;
  EXPECT_EQ(tok.body["results"][0]["entities"][1]["word"], "charming");

  // Embeddings: mean pooling, normalised -> unit length; the same text twice -> the same vector.
  Reply emb = post(c, "/v1/embed", R"({"model": "cls", "inputs": ["a good movie", "a good movie", "bad"], "normalize": true})");
  ASSERT_EQ(emb.status, 200) << emb.raw;
  ASSERT_EQ(emb.body["embeddings"].size(), 3u);
  EXPECT_EQ(emb.body["dimension"], 128);
  double norm = 0;
  for (const json& x : emb.body["embeddings"][0]) norm += x.get<double>() * x.get<double>();
  EXPECT_NEAR(norm, 1.0, 1e-4);
  for (size_t i = 0; i < 128; ++i)
    EXPECT_NEAR(emb.body["embeddings"][0][i].get<double>(), emb.body["embeddings"][1][i].get<double>(), 1e-5);
  Reply cls_pool = post(c, "/v1/embed", R"({"model": "cls", "inputs": ["a good movie"], "pooling": "cls"})");
  ASSERT_EQ(cls_pool.status, 200) << cls_pool.raw;
  EXPECT_NE(cls_pool.body["embeddings"][0], emb.body["embeddings"][0]);

  Reply t = post(c, "/v1/tokenize", R"({"model": "cls", "inputs": ["A Good movie", ["a", "b"]]})");
  ASSERT_EQ(t.status, 200) << t.raw;
  EXPECT_EQ(t.body["results"][0]["tokens"], json({"[CLS]", "a", "good", "movie", "[SEP]"}));
  EXPECT_EQ(t.body["results"][1]["token_type_ids"], json({0, 0, 0, 1, 1}));
  Reply trunc = post(c, "/v1/tokenize", R"({"model": "cls", "inputs": ["a good movie and a bad one"], "max_length": 4})");
  ASSERT_EQ(trunc.status, 200) << trunc.raw;
  EXPECT_EQ(trunc.body["results"][0]["input_ids"].size(), 4u);

  Reply demo_sentences = get(c, "/v1/demo/sentences");
  ASSERT_EQ(demo_sentences.status, 200) << demo_sentences.raw;
  ASSERT_EQ(demo_sentences.body["sentences"].size(), 2u);
  EXPECT_EQ(demo_sentences.body["sentences"][0]["text"], "a fine film");
  EXPECT_EQ(demo_sentences.body["sentences"][1]["label"], 0);

  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<html"), std::string::npos);

  // Load, list, replace, unload.
  Reply load = post(c, "/v1/models", R"({"name": "extra", "path": "cls2.bert", "device": "cpu", "precision": "fp32"})");
  ASSERT_EQ(load.status, 200) << load.raw;
  EXPECT_EQ(load.body["loaded"]["name"], "extra");
  EXPECT_EQ(get(c, "/v1/models").body["models"].size(), 6u);
  Reply extra = post(c, "/v1/predict", R"({"model": "extra", "inputs": ["a good movie"]})");
  Reply cls2 = post(c, "/v1/predict", R"({"model": "cls2", "inputs": ["a good movie"]})");
  ASSERT_EQ(extra.status, 200);
  EXPECT_EQ(extra.body["results"][0]["probabilities"], cls2.body["results"][0]["probabilities"]);
  auto del = c.Delete("/v1/models/extra");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(post(c, "/v1/predict", R"({"model": "extra", "inputs": ["x"]})").status, 404);

  // (requests are counted after their answer is sent: poll until the last one shows)
  const std::vector<std::string> wants = {"bert_requests_total{route=\"POST /v1/predict\",status=\"200\"}",
                           "bert_errors_total{kind=\"unknown_model\"} 1", "bert_queue_depth{model=\"cls\"} 0",
                           "bert_batch_rows_bucket{model=\"cls\",le=\"+Inf\"}",
                           "bert_request_latency_seconds_count{model=\"mlm\"} 1", "bert_tokens_total{model=\"cls\"}",
                           "bert_compute_workers 2"};
  std::string body;
  for (int i = 0; i < 100; ++i) {
    auto metrics = c.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_EQ(metrics->status, 200);
    body = metrics->body;
    if (std::all_of(wants.begin(), wants.end(), [&](const std::string& w) { return body.find(w) != std::string::npos; }))
      break;
    std::this_thread::sleep_for(10ms);
  }
  for (const std::string& want : wants)
    EXPECT_NE(body.find(want), std::string::npos) << want << "\n" << body;
}

TEST(serve, HealthSaysWhyAStartupModelFailed) {
  ServeProcess s({"--model", "bad=" + models().path("not_a_model.bert")});
  auto c = s.client();
  Reply h;
  for (int i = 0; i < 200; ++i) {
    h = get(c, "/health");
    if (h.body.is_object() && h.body.value("status", "") != "loading") break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body["status"], "failed");
  EXPECT_NE(h.body["error"].get<std::string>().find("bad"), std::string::npos) << h.raw;
}

TEST(serve, ConcurrentClientsGetBertRunsAnswers) {
  // The references: bert_run --text, one process per input.
  std::vector<std::pair<std::string, std::string>> cases;  // model, text
  for (size_t i = 0; i < 5; ++i) cases.push_back({"cls", kSentences[i]});
  for (size_t i = 5; i < kSentences.size(); ++i) cases.push_back({"tok", kSentences[i]});
  std::vector<json> want;
  for (const auto& [m, text] : cases) want.push_back(bert_run(m + ".bert", text));
  for (const json& w : want) ASSERT_TRUE(w.is_object());

  ServeProcess s(standard_args({"--max-wait-ms", "2"}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  std::atomic<int> failures{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      auto c = s.client();
      std::mt19937 rng(t);
      for (int r = 0; r < 25; ++r) {
        // A request of 1-3 inputs of one model, in a random order.
        const std::string model = rng() % 2 ? "cls" : "tok";
        std::vector<size_t> idx;
        for (size_t i = 0; i < cases.size(); ++i)
          if (cases[i].first == model) idx.push_back(i);
        std::shuffle(idx.begin(), idx.end(), rng);
        idx.resize(1 + rng() % std::min<size_t>(3, idx.size()));
        json inputs = json::array();
        for (size_t i : idx) inputs.push_back(cases[i].second);
        Reply rep = post(c, "/v1/predict", json{{"model", model}, {"inputs", inputs}}.dump());
        if (rep.status != 200) {
          ++failures;
          ADD_FAILURE() << rep.status << " " << rep.raw;
          continue;
        }
        for (size_t k = 0; k < idx.size(); ++k)
          expect_same_prediction(rep.body["results"][k], want[idx[k]], model + ": '" + cases[idx[k]].second + "'");
        ++done;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(done, 200);
  // Batching happened: some batch had more than one row.
  auto m = s.client().Get("/metrics");
  ASSERT_TRUE(m);
  const std::string key = "bert_batch_rows_bucket{model=\"cls\",le=\"1\"} ";
  const size_t at = m->body.find(key);
  ASSERT_NE(at, std::string::npos);
  const long single = std::atol(m->body.c_str() + at + key.size());
  const std::string total_key = "bert_batches_total{model=\"cls\"} ";
  const long total = std::atol(m->body.c_str() + m->body.find(total_key) + total_key.size());
  EXPECT_LT(single, total) << "no batch of cls had more than one row";
}

// The malformed requests: what is sent and what the server must answer.
struct Bad {
  std::string method, path, body;
  int status;
  std::string says;  // in the error message
  httplib::Headers headers = {};
};

std::vector<Bad> malformed_corpus() {
  std::vector<Bad> v = {
      {"POST", "/v1/predict", "", 400, "empty"},
      {"POST", "/v1/predict", "{", 400, "not valid JSON"},
      {"POST", "/v1/predict", "{\"model\": \"cls\", \"inputs\": [\"\xff\xfe\"]}", 400, "not valid JSON"},
      {"POST", "/v1/predict", "[1, 2]", 400, "JSON object"},
      {"POST", "/v1/predict", "null", 400, "JSON object"},
      {"POST", "/v1/predict", R"({"inputs": ["a"]})", 400, "missing field 'model'"},
      {"POST", "/v1/predict", R"({"model": 5, "inputs": ["a"]})", 400, "'model' must be a string"},
      {"POST", "/v1/predict", R"({"model": "nope", "inputs": ["a"]})", 404, "unknown model 'nope'"},
      {"POST", "/v1/predict", R"({"model": "cls"})", 400, "missing field 'inputs'"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": "a"})", 400, "not one string"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": {"a": 1}})", 400, "must be an array"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": []})", 400, "'inputs' is empty"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": [1]})", 400, "inputs[0]"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["ok", null]})", 400, "inputs[1]"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": [["a"]]})", 400, "pair"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": [["a", "b", "c"]]})", 400, "pair"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": [["a", 2]]})", 400, "pair"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["a"], "extra": 1})", 400, "unknown field 'extra'"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["a"], "top_k": 0})", 400, "top_k"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["a"], "top_k": "5"})", 400, "top_k"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["a"], "max_length": 1})", 400, "max_length"},
      {"POST", "/v1/predict", R"({"model": "cls", "inputs": ["a"], "max_length": 2.5})", 400, "max_length"},
      {"POST", "/v1/embed", R"({"model": "cls", "inputs": ["a"], "pooling": "avg"})", 400, "pooling"},
      {"POST", "/v1/embed", R"({"model": "cls", "inputs": ["a"], "normalize": "yes"})", 400, "normalize"},
      {"POST", "/v1/embed", R"({"model": "cls", "inputs": ["a"], "top_k": 3})", 400, "unknown field 'top_k'"},
      {"POST", "/v1/tokenize", R"({"model": "nope", "inputs": ["a"]})", 404, "unknown model"},
      {"POST", "/v1/tokenize", R"({"model": "cls", "inputs": [true]})", 400, "inputs[0]"},
      {"POST", "/v1/models", R"({"path": "cls.bert"})", 400, "missing field 'name'"},
      {"POST", "/v1/models", R"({"name": "x"})", 400, "missing field 'path'"},
      {"POST", "/v1/models", R"({"name": "a/b", "path": "cls.bert"})", 400, "model name"},
      {"POST", "/v1/models", R"({"name": "", "path": "cls.bert"})", 400, "model name"},
      {"POST", "/v1/models", R"({"name": "x", "path": 3})", 400, "'path' must be a string"},
      {"POST", "/v1/models", R"({"name": "x", "path": "../cls.bert"})", 403, "'..'"},
      {"POST", "/v1/models", R"({"name": "x", "path": "/etc/passwd"})", 403, "outside the model directory"},
      {"POST", "/v1/models", R"({"name": "x", "path": "missing.bert"})", 404, "no model at"},
      {"POST", "/v1/models", R"({"name": "x", "path": "not_a_model.bert"})", 400, "loading model 'x'"},
      {"POST", "/v1/models", R"({"name": "x", "path": "cls.bert", "device": "tpu"})", 400, "'device'"},
      {"POST", "/v1/models", R"({"name": "x", "path": "cls.bert", "precision": "fp64"})", 400, "'precision'"},
      {"POST", "/v1/models", R"({"name": "x", "path": "cls.bert", "weights": 1})", 400, "unknown field 'weights'"},
      {"DELETE", "/v1/models/nope", "", 404, "unknown model 'nope'"},
      {"GET", "/v1/nothing", "", 404, "no such endpoint"},
      {"POST", "/v1/nothing", "{}", 404, "no such endpoint"},
      {"PUT", "/v1/predict", "{}", 404, "no such endpoint"},
      {"GET", "/v1/%FF%FE", "", 404, "no such endpoint"},
      {"DELETE", "/v1/models/%FF", "", 404, "unknown model"},
      {"POST", "/v1/predict", R"({"model": "\u00ff\ud800", "inputs": ["a"]})", 400, "not valid JSON"},
  };
  // Limits (the standard server: 16 inputs, 1000 characters, 64 KiB bodies).
  json many = {{"model", "cls"}, {"inputs", json::array()}};
  for (int i = 0; i < 17; ++i) many["inputs"].push_back("a");
  v.push_back({"POST", "/v1/predict", many.dump(), 413, "limit is 16"});
  v.push_back({"POST", "/v1/predict", json{{"model", "cls"}, {"inputs", {std::string(1001, 'a')}}}.dump(), 413,
               "more than 1000 characters"});
  v.push_back({"POST", "/v1/predict", json{{"model", "cls"}, {"inputs", json::array({json::array({"a", std::string(1001, 'b')})})}}.dump(), 413,
               "more than 1000 characters"});
  v.push_back({"POST", "/v1/predict", json{{"model", "cls"}, {"inputs", {std::string(70000, 'a')}}}.dump(), 413,
               "larger than the limit"});
  v.push_back({"POST", "/v1/predict", std::string(30000, '[') + std::string(30000, ']'), 400, "JSON object"});
  return v;
}

Reply send(httplib::Client& c, const Bad& b) {
  auto r = [&]() -> httplib::Result {
    if (b.method == "POST") return c.Post(b.path, b.headers, b.body, "application/json");
    if (b.method == "GET") return c.Get(b.path, b.headers);
    if (b.method == "DELETE") return c.Delete(b.path, b.headers);
    return c.Put(b.path, b.headers, b.body, "application/json");
  }();
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.raw = r->body;
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

TEST(serve, MalformedRequestsGetJsonErrorsNamingTheProblem) {
  ServeProcess s(standard_args());
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();
  for (const Bad& b : malformed_corpus()) {
    Reply r = send(c, b);
    const std::string what = b.method + " " + b.path + " " + b.body.substr(0, 80);
    EXPECT_EQ(r.status, b.status) << what << " -> " << r.raw;
    EXPECT_NE(error_message(r).find(b.says), std::string::npos) << what << " -> " << r.raw;
    EXPECT_EQ(r.body["error"]["status"], b.status) << what;
  }
  EXPECT_EQ(get(c, "/health").status, 200);
}

TEST(serve, TenThousandMixedRequestsLeaveTheServerAliveAndCorrect) {
  ServeProcess s(standard_args());
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  // Each sentence's answer, from the server itself before the storm.
  std::vector<json> want;
  {
    auto c = s.client();
    json inputs = kSentences;
    Reply r = post(c, "/v1/predict", json{{"model", "cls"}, {"inputs", inputs}}.dump());
    ASSERT_EQ(r.status, 200) << r.raw;
    for (const json& x : r.body["results"]) want.push_back(x);
  }
  std::vector<Bad> corpus = malformed_corpus();
  corpus.erase(std::remove_if(corpus.begin(), corpus.end(), [](const Bad& b) { return b.path == "/v1/models"; }),
               corpus.end());  // (no loading in the storm: it is timed separately)
  std::atomic<int> valid{0}, malformed{0}, wrong{0};
  constexpr int kThreads = 8, kPerThread = 1250;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto c = s.client();
      std::mt19937 rng(100 + t);
      for (int i = 0; i < kPerThread; ++i) {
        if (rng() % 2) {
          const size_t k = rng() % kSentences.size();
          Reply r = post(c, "/v1/predict", json{{"model", "cls"}, {"inputs", {kSentences[k]}}}.dump());
          ++valid;
          if (r.status != 200 || r.body["results"][0]["tokens"] != want[k]["tokens"] ||
              std::abs(r.body["results"][0]["probabilities"]["LABEL_0"].get<double>() -
                       want[k]["probabilities"]["LABEL_0"].get<double>()) > 1e-5) {
            if (++wrong < 5) ADD_FAILURE() << r.status << " " << r.raw;
          }
        } else {
          const Bad& b = corpus[rng() % corpus.size()];
          Reply r = send(c, b);
          ++malformed;
          if (r.status != b.status || error_message(r).find(b.says) == std::string::npos) {
            if (++wrong < 5) ADD_FAILURE() << b.body.substr(0, 80) << " -> " << r.status << " " << r.raw;
          }
        }
      }
    });
  for (auto& th : threads) th.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(valid + malformed, kThreads * kPerThread);
  EXPECT_EQ(wrong, 0);
  std::printf("10,000 mixed requests (%d valid, %d malformed) in %.2f s\n", valid.load(), malformed.load(), secs);
  // Alive and still correct.
  auto c = s.client();
  EXPECT_EQ(get(c, "/health").status, 200);
  Reply after = post(c, "/v1/predict", json{{"model", "cls"}, {"inputs", kSentences}}.dump());
  ASSERT_EQ(after.status, 200);
  for (size_t k = 0; k < kSentences.size(); ++k) expect_same_prediction(after.body["results"][k], want[k], kSentences[k]);
  EXPECT_EQ(kill(s.pid(), 0), 0);
}

TEST(serve, LoadingAndReplacingModelsWhileRequestsRun) {
  ServeProcess s(standard_args());
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();
  const std::string body = json{{"model", "cls"}, {"inputs", {kSentences[0]}}}.dump();
  const json old_answer = post(c, "/v1/predict", body).body["results"][0];
  const json new_answer =
      post(c, "/v1/predict", json{{"model", "cls2"}, {"inputs", {kSentences[0]}}}.dump()).body["results"][0];
  ASSERT_NE(old_answer["probabilities"], new_answer["probabilities"]);

  std::atomic<bool> stop{false}, replaced{false};
  std::atomic<int> ok{0}, bad{0}, mlm_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      auto cc = s.client();
      while (!stop) {
        const bool was_replaced = replaced;
        if (t == 3) {  // another model, untouched by the reloads
          Reply r = post(cc, "/v1/predict", R"({"model": "mlm", "inputs": ["a [MASK] film"]})");
          (r.status == 200 ? mlm_ok : bad)++;
          continue;
        }
        Reply r = post(cc, "/v1/predict", body);
        if (r.status != 200) {
          ++bad;
          continue;
        }
        const json& got = r.body["results"][0];
        auto same = [&](const json& want) {
          return std::abs(got["probabilities"]["LABEL_0"].get<double>() -
                          want["probabilities"]["LABEL_0"].get<double>()) < 1e-6;
        };
        // Before the swap: the old answer; after it: the new one; during it: either.
        if (!same(old_answer) && !same(new_answer)) ++bad;
        else if (was_replaced && !same(new_answer)) ++bad;
        else ++ok;
      }
    });
  std::this_thread::sleep_for(100ms);
  for (int i = 0; i < 3; ++i) {  // reload other names while cls is busy
    Reply r = post(c, "/v1/models", json{{"name", "side" + std::to_string(i)}, {"path", "cls.bert"}}.dump());
    EXPECT_EQ(r.status, 200) << r.raw;
  }
  Reply r = post(c, "/v1/models", R"({"name": "cls", "path": "cls2.bert"})");
  EXPECT_EQ(r.status, 200) << r.raw;
  replaced = true;
  std::this_thread::sleep_for(150ms);
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, 0);
  EXPECT_GT(ok, 20);
  EXPECT_GT(mlm_ok, 5);
  EXPECT_NEAR(post(c, "/v1/predict", body).body["results"][0]["probabilities"]["LABEL_0"].get<double>(),
              new_answer["probabilities"]["LABEL_0"].get<double>(), 1e-6);
  // Unloading while requests run: they get either an answer or a 404 naming the model.
  std::atomic<int> unexpected{0};
  std::thread t([&] {
    auto cc = s.client();
    for (int i = 0; i < 200; ++i) {
      Reply x = post(cc, "/v1/predict", R"({"model": "side0", "inputs": ["a"]})");
      if (x.status != 200 && !(x.status == 404 && error_message(x).find("side0") != std::string::npos)) ++unexpected;
    }
  });
  std::this_thread::sleep_for(20ms);
  auto del = c.Delete("/v1/models/side0");
  t.join();
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(unexpected, 0);
}

TEST(serve, AdminTokenGuardsModelManagement) {
  ServeProcess s(standard_args({"--admin-token", "s3cret-token"}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();
  const std::string body = R"({"name": "x", "path": "cls.bert"})";
  Reply none = post(c, "/v1/models", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(error_message(none).find("Bearer"), std::string::npos);
  EXPECT_EQ(post(c, "/v1/models", body, {{"Authorization", "Bearer s3cret-toke"}}).status, 401);
  EXPECT_EQ(post(c, "/v1/models", body, {{"Authorization", "Bearer s3cret-token2"}}).status, 401);
  EXPECT_EQ(post(c, "/v1/models", body, {{"Authorization", "s3cret-token"}}).status, 401);
  EXPECT_EQ(post(c, "/v1/models", body, {{"Authorization", "Bearer s3cret-token"}}).status, 200);
  auto del = c.Delete("/v1/models/x");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 401);
  del = c.Delete("/v1/models/x", {{"Authorization", "Bearer s3cret-token"}});
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  // Predicting and listing need no token.
  EXPECT_EQ(get(c, "/v1/models").status, 200);
  EXPECT_EQ(post(c, "/v1/predict", R"({"model": "cls", "inputs": ["a"]})").status, 200);
  // A symlink in the model dir that points outside it is refused.
  test::TempDir outside;
  fs::copy_file(models().path("cls.bert"), outside / "m.bert");
  const fs::path link = models().model_dir / ("escape_" + std::to_string(getpid()) + ".bert");
  fs::create_symlink(outside / "m.bert", link);
  Reply esc = post(c, "/v1/models", json{{"name", "esc"}, {"path", link.filename().string()}}.dump(),
                   {{"Authorization", "Bearer s3cret-token"}});
  fs::remove(link);
  EXPECT_EQ(esc.status, 403) << esc.raw;
  EXPECT_NE(error_message(esc).find("outside the model directory"), std::string::npos) << esc.raw;
}

TEST(serve, WithoutModelDirNothingLoadsOverHttp) {
  ServeProcess s({"--model", "cls=" + models().path("cls.bert")});
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();
  Reply r = post(c, "/v1/models", json{{"name", "x"}, {"path", models().path("cls.bert")}}.dump());
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(error_message(r).find("--model-dir"), std::string::npos) << r.raw;
}

// Long inputs: about 180 word pieces each.
std::string long_text() {
  std::string t;
  for (int i = 0; i < 45; ++i) t += "the acting is great ";  // 900 characters (the limit is 1000)
  return t;
}

TEST(serve, FullQueueSays429) {
  ServeProcess s(standard_args({"--threads", "1", "--max-queue", "8", "--max-batch-rows", "1"}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  const std::string big = json{{"model", "cls"}, {"inputs", std::vector<std::string>(8, long_text())}}.dump();
  std::atomic<int> ok{0}, full{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t)
    threads.emplace_back([&] {
      auto c = s.client();
      Reply r = post(c, "/v1/predict", big);
      if (r.status == 200) ++ok;
      else if (r.status == 429 && error_message(r).find("queue of model 'cls' is full") != std::string::npos) ++full;
      else {
        ++other;
        ADD_FAILURE() << r.status << " " << r.raw;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(other, 0);
  EXPECT_GE(ok, 1);
  EXPECT_GE(full, 1) << "8 inputs fill the queue: the requests behind them must be refused";
  auto c = s.client();
  EXPECT_EQ(post(c, "/v1/predict", R"({"model": "cls", "inputs": ["a"]})").status, 200);
}

TEST(serve, SlowRequestsTimeOutAndTheirInputsAreDropped) {
  ServeProcess s(standard_args({"--threads", "1", "--max-batch-rows", "1", "--timeout-ms", "10"}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  auto c = s.client();
  // 16 long inputs on one worker, one row at a time: far more than 10 ms.
  Reply slow = post(c, "/v1/predict", json{{"model", "cls"}, {"inputs", std::vector<std::string>(16, long_text())}}.dump());
  EXPECT_EQ(slow.status, 504) << slow.raw.substr(0, 300);
  EXPECT_NE(error_message(slow).find("limit of 10 ms"), std::string::npos) << slow.raw.substr(0, 300);
  // Most of its inputs were dropped unrun (one worker, one row per batch).
  std::this_thread::sleep_for(200ms);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  const std::string key = "bert_batches_total{model=\"cls\"} ";
  const size_t at = m->body.find(key);
  ASSERT_NE(at, std::string::npos);
  EXPECT_LT(std::atol(m->body.c_str() + at + key.size()), 16);
  // The server answers short requests again (a first one may pay for planning a session).
  int status = 0;
  for (int i = 0; i < 50 && status != 200; ++i) {
    status = post(c, "/v1/predict", R"({"model": "cls", "inputs": ["a"]})").status;
    if (status != 200) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(status, 200);
  EXPECT_EQ(get(c, "/health").status, 200);
}

TEST(serve, SigtermFinishesTheRequestInFlight) {
  ServeProcess s(standard_args({"--threads", "1", "--max-batch-rows", "2"}));
  ASSERT_TRUE(s.WaitHealthy()) << s.stderr_text();
  Reply slow;
  std::atomic<bool> sent{false};
  std::thread t([&] {
    auto c = s.client();
    sent = true;
    slow = post(c, "/v1/predict", json{{"model", "cls"}, {"inputs", std::vector<std::string>(16, long_text())}}.dump());
  });
  while (!sent) std::this_thread::sleep_for(1ms);
  // Wait until the request is being computed.
  auto c = s.client();
  for (int i = 0; i < 500; ++i) {
    auto m = c.Get("/metrics");
    if (m && m->body.find("bert_in_flight_requests 2") != std::string::npos) break;  // (this one counts too)
    std::this_thread::sleep_for(2ms);
  }
  const int code = s.Stop(SIGTERM, 30s);
  t.join();
  EXPECT_EQ(code, 0);
  ASSERT_EQ(slow.status, 200) << slow.raw;
  EXPECT_EQ(slow.body["results"].size(), 16u);
  // Nobody listens any more.
  httplib::Client gone("127.0.0.1", s.port());
  gone.set_connection_timeout(1, 0);
  EXPECT_FALSE(gone.Get("/health"));
}

TEST(serve, ClientExperimentAndLoadModes) {
  const fs::path data = models().dir / "client.tsv";
  test::write_file(data, "sentence\tlabel\na fine film \t1\nawful \t0\nthe acting is great \t1\n");
  ServeProcess s(standard_args());
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port());
  const std::string client = (test::tools_dir() / "bert_client").string();
  test::TempDir out;
  auto r = test::run_command(client + " experiment --url " + url + " --models cls,cls2 --baseline cls --sizes 1,2 --trials 2 --data " +
                             data.string() + " --csv " + (out / "t.csv").string() + " --markdown " + (out / "t.md").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string csv = test::read_file(out / "t.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 2 * 2 * 2) << csv;  // header + models x sizes x trials
  const std::string md = test::read_file(out / "t.md");
  EXPECT_NE(md.find("| cls | 1 | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("1.000x"), std::string::npos) << md;  // the baseline against itself
  r = test::run_command(client + " load --url " + url + " --model cls --clients 4 --requests 200 --data " + data.string() +
                        " --json " + (out / "load.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json load = json::parse(test::read_file(out / "load.json"));
  EXPECT_EQ(load["requests_ok"], 200);
  EXPECT_EQ(load["errors"], 0);
  EXPECT_GT(load["sentences_per_s"].get<double>(), 0);
  EXPECT_LE(load["p50_ms"].get<double>(), load["p99_ms"].get<double>());
  r = test::run_command(client + " load --url " + url + " --model nope --clients 2 --requests 10");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("\"404\":10"), std::string::npos) << r.output;
}

TEST(serve, RefusesBadStartOptions) {
  EXPECT_THROW(ServeProcess(standard_args({"--demo-data", "/nonexistent/dev.tsv"})), std::runtime_error);
  EXPECT_THROW(ServeProcess({"--model-dir", "/nonexistent/dir"}), std::runtime_error);
  auto r = test::run_command((test::tools_dir() / "bert_serve").string() + " --max-queue 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--max-queue"), std::string::npos) << r.output;
  r = test::run_command((test::tools_dir() / "bert_serve").string() + " --model nameonly");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("NAME=PATH"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bert
