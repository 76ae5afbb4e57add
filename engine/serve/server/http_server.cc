// bert_serve's HTTP layer (see http_server.h): request validation, JSON in and out, errors as
// {"error": {"status", "kind", "message"}}, metrics in Prometheus text, static demo files.
#include "engine/serve/server/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/serve/server/batcher.h"

namespace bert::serve {

namespace fs = std::filesystem;
using nlohmann::json;

Result<std::string> ResolveModelPath(const std::string& model_dir, const std::string& requested) {
  if (model_dir.empty())
    return invalid_argument("loading models over HTTP is disabled: start bert_serve with --model-dir DIR");
  if (requested.empty()) return invalid_argument("the model path is empty");
  if (requested.find('\0') != std::string::npos) return invalid_argument("the model path contains a NUL byte");
  const fs::path p(requested);
  for (const fs::path& part : p)
    if (part == "..") return invalid_argument("the model path '" + requested + "' contains '..'");
  std::error_code ec;
  const fs::path root = fs::canonical(model_dir, ec);
  if (ec) return not_found("the model directory '" + model_dir + "' does not exist: " + ec.message());
  const fs::path candidate = p.is_absolute() ? p : root / p;
  const fs::path resolved = fs::canonical(candidate, ec);
  if (ec) return not_found("no model at '" + requested + "' in the model directory");
  const fs::path rel = resolved.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..")
    return invalid_argument("the model path '" + requested + "' resolves outside the model directory" +
                            (p.is_absolute() ? "" : " (through a symlink)"));
  return resolved.string();
}

bool TokenEquals(const std::string& presented, const std::string& expected) {
  // Every byte of `expected` is compared whatever `presented` is; the length difference is folded in.
  volatile unsigned char diff = static_cast<unsigned char>(presented.size() != expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char a = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | (a ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

namespace {

// An HTTP error: status code, a short kind (also the metrics label) and a message naming the problem.
struct HttpError {
  int status;
  std::string kind, message;
};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Invalid UTF-8 (a percent-decoded path, say) is replaced, never thrown about.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const HttpError& e) {
  send_json(res, e.status, {{"error", {{"status", e.status}, {"kind", e.kind}, {"message", e.message}}}});
  res.set_header("X-Error-Kind", e.kind);
}

HttpError from_status(const Status& st, const std::string& context) {
  const std::string msg = context + ": " + st.message();
  switch (st.code()) {
    case ErrorCode::kNotFound:
      return {404, "not_found", msg};
    case ErrorCode::kInternal:
      return {500, "internal", msg};
    case ErrorCode::kIoError:
    case ErrorCode::kFormatError:
      return {400, "not_a_model", msg};
    default:
      return {400, "invalid_argument", msg};
  }
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

// UTF-8 code points in s (continuation bytes are not counted; invalid bytes count as one each).
size_t utf8_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The route a path belongs to, as a bounded metrics label.
std::string route_of(const std::string& method, const std::string& path) {
  static const char* kRoutes[] = {"/v1/predict", "/v1/embed", "/v1/tokenize", "/v1/models",
                                  "/health",     "/metrics",  "/v1/demo/sentences"};
  for (const char* r : kRoutes)
    if (path == r) return method + " " + r;
  if (path.rfind("/v1/models/", 0) == 0) return method + " /v1/models/:name";
  if (method == "GET") return "GET static";
  return method + " other";
}

// Validated text inputs of a predict / embed / tokenize request.
struct TextInput {
  std::string text;
  std::optional<std::string> pair;
};

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  httplib::Server http;
  ModelRegistry registry;
  std::unique_ptr<ComputePool> pool;
  std::thread listener, loader;
  std::atomic<int> bound_port{0};
  std::atomic<bool> started_ok{false}, models_ready{false}, draining{false}, stopped{false};
  mutable std::mutex mu;
  std::string startup_error;
  json demo_sentences = json::array();
  // Request and error counters: route -> status -> count, error kind -> count.
  std::mutex counters_mu;
  std::map<std::string, std::map<int, uint64_t>> requests;
  std::map<std::string, uint64_t> errors;
  std::atomic<uint64_t> in_flight{0};
  const Clock::time_point started = Clock::now();

  void Routes();
  void Count(const httplib::Request& req, const httplib::Response& res);
  // Wraps a handler: catches everything, turns HttpError into a JSON error.
  template <typename F>
  httplib::Server::Handler Guard(F f);
  std::shared_ptr<ServedModel> Require(const json& body, const char* field = "model");
  void CheckAdmin(const httplib::Request& req);
  std::vector<TextInput> Inputs(const json& body);
  Status Load(const ModelSpec& spec);
  std::vector<Encoding> Encode(const ServedModel& m, const std::vector<TextInput>& inputs, int max_length);
  std::string Metrics();
};

template <typename F>
httplib::Server::Handler Server::Impl::Guard(F f) {
  return [this, f](const httplib::Request& req, httplib::Response& res) {
    in_flight += 1;
    try {
      f(req, res);
    } catch (const HttpError& e) {
      send_error(res, e);
    } catch (const json::exception& e) {
      send_error(res, {400, "invalid_json", std::string("bad JSON value: ") + e.what()});
    } catch (const std::bad_alloc&) {
      send_error(res, {503, "out_of_memory", "the server ran out of memory for this request"});
    } catch (const std::exception& e) {
      send_error(res, {500, "internal", std::string("internal error: ") + e.what()});
    } catch (...) {
      send_error(res, {500, "internal", "internal error"});
    }
    in_flight -= 1;
  };
}

static json parse_body(const httplib::Request& req) {
  if (req.body.empty()) throw HttpError{400, "invalid_json", "the request body is empty; expected a JSON object"};
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    throw HttpError{400, "invalid_json", "the request body is not valid JSON"};
  if (!body.is_object()) throw HttpError{400, "invalid_json", "the request body must be a JSON object"};
  return body;
}

static void allow_fields(const json& body, std::initializer_list<const char*> fields) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (const char* f : fields) known = known || key == f;
    if (!known) {
      std::string list;
      for (const char* f : fields) list += std::string(list.empty() ? "" : ", ") + f;
      throw HttpError{400, "unknown_field", "unknown field '" + key + "' (known: " + list + ")"};
    }
  }
}

std::shared_ptr<ServedModel> Server::Impl::Require(const json& body, const char* field) {
  if (!body.contains(field)) throw HttpError{400, "missing_field", std::string("missing field '") + field + "'"};
  if (!body[field].is_string())
    throw HttpError{400, "wrong_type", std::string("field '") + field + "' must be a string"};
  const std::string name = body[field].get<std::string>();
  auto m = registry.Get(name);
  if (!m) {
    std::string names;
    for (const auto& x : registry.List()) names += (names.empty() ? "" : ", ") + x->name;
    throw HttpError{404, "unknown_model",
                    "unknown model '" + name + "' (loaded: " + (names.empty() ? "none" : names) + ")"};
  }
  return m;
}

void Server::Impl::CheckAdmin(const httplib::Request& req) {
  if (opt.admin_token.empty()) return;
  const std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  const std::string presented = h.rfind(prefix, 0) == 0 ? h.substr(prefix.size()) : std::string();
  if (!TokenEquals(presented, opt.admin_token))
    throw HttpError{401, "unauthorized", "this endpoint needs 'Authorization: Bearer <admin token>'"};
}

std::vector<TextInput> Server::Impl::Inputs(const json& body) {
  if (!body.contains("inputs")) throw HttpError{400, "missing_field", "missing field 'inputs'"};
  const json& in = body["inputs"];
  if (in.is_string()) throw HttpError{400, "wrong_type", "field 'inputs' must be an array of texts, not one string"};
  if (!in.is_array()) throw HttpError{400, "wrong_type", "field 'inputs' must be an array"};
  if (in.empty()) throw HttpError{400, "empty_inputs", "field 'inputs' is empty"};
  if (static_cast<int>(in.size()) > opt.max_inputs)
    throw HttpError{413, "too_many_inputs", "field 'inputs' has " + std::to_string(in.size()) +
                                                " inputs; the limit is " + std::to_string(opt.max_inputs)};
  std::vector<TextInput> out;
  out.reserve(in.size());
  auto check_len = [&](const std::string& s, size_t i) {
    if (s.size() > static_cast<size_t>(opt.max_input_chars) * 4 || utf8_chars(s) > static_cast<size_t>(opt.max_input_chars))
      throw HttpError{413, "input_too_long", "inputs[" + std::to_string(i) + "] has more than " +
                                                 std::to_string(opt.max_input_chars) + " characters"};
  };
  for (size_t i = 0; i < in.size(); ++i) {
    const json& x = in[i];
    TextInput t;
    if (x.is_string()) {
      t.text = x.get<std::string>();
    } else if (x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string()) {
      t.text = x[0].get<std::string>();
      t.pair = x[1].get<std::string>();
    } else {
      throw HttpError{400, "wrong_type", "inputs[" + std::to_string(i) +
                                             "] must be a string or a pair [\"text\", \"text pair\"]"};
    }
    check_len(t.text, i);
    if (t.pair) check_len(*t.pair, i);
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<Encoding> Server::Impl::Encode(const ServedModel& m, const std::vector<TextInput>& inputs, int max_length) {
  if (!m.tokenizer)
    throw HttpError{400, "no_tokenizer", "model '" + m.name +
                                             "' has no WordPiece vocab, so it cannot take text (convert it with a vocab.txt)"};
  const int limit = static_cast<int>(m.model->info().max_seq);
  const int len = max_length > 0 ? std::min(max_length, limit) : limit;
  std::vector<Encoding> encs;
  encs.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto e = m.tokenizer->Encode(inputs[i].text,
                                 inputs[i].pair ? std::optional<std::string_view>(*inputs[i].pair) : std::nullopt, len);
    if (!e.ok()) {
      HttpError err = from_status(e.status(), "inputs[" + std::to_string(i) + "]");
      err.kind = "tokenize";
      throw err;
    }
    encs.push_back(std::move(*e));
  }
  return encs;
}

static int read_max_length(const json& body) {
  if (!body.contains("max_length")) return 0;
  const json& v = body["max_length"];
  if (!v.is_number_integer() || v.get<int64_t>() < 3 || v.get<int64_t>() > 100000)
    throw HttpError{400, "wrong_type", "field 'max_length' must be an integer >= 3"};
  return static_cast<int>(v.get<int64_t>());
}

Status Server::Impl::Load(const ModelSpec& spec) {
  auto model = Model::Load(spec.path, spec.load);
  if (!model.ok()) return model.status();
  auto sm = std::make_shared<ServedModel>();
  sm->name = spec.name;
  sm->path = spec.path;
  sm->model = *model;
  sm->load = spec.load;
  sm->loaded_at = utc_now();
  sm->metrics = registry.MetricsFor(spec.name);
  if (!(*model)->vocab().empty()) {
    TokenizerOptions topts;
    topts.lower_case = (*model)->lower_case();
    auto tok = Tokenizer::FromVocab((*model)->vocab(), topts);
    if (!tok.ok()) return tok.status().with_context("the model's vocab");
    sm->tokenizer = std::move(*tok);
  }
  // Warm-up before the model is visible: every worker plans its sessions for short, medium and
  // long sentences (buckets 16, 32, 64), so the first requests do not pay for that.
  if (sm->tokenizer) {
    for (int words : {4, 20, 50}) {
      std::string text;
      for (int i = 0; i < words; ++i) text += "the ";
      auto enc = sm->tokenizer->Encode(text, std::nullopt, static_cast<int>(sm->model->info().max_seq));
      if (!enc.ok()) break;
      auto cr = std::make_shared<ComputeRequest>();
      cr->model = sm;
      cr->received = Clock::now();
      cr->encodings.assign(static_cast<size_t>(pool->policy().workers), *enc);
      if (!pool->Submit(cr)) break;
      ComputePool::Wait(*cr, Clock::now() + std::chrono::seconds(120));
    }
  }
  registry.Put(std::move(sm));  // a replaced model finishes its queued requests, then goes
  return Status();
}

void Server::Impl::Count(const httplib::Request& req, const httplib::Response& res) {
  std::lock_guard<std::mutex> lk(counters_mu);
  requests[route_of(req.method, req.path)][res.status] += 1;
  if (res.status >= 400) {
    std::string kind = res.get_header_value("X-Error-Kind");
    errors[kind.empty() ? "http_" + std::to_string(res.status) : kind] += 1;
  }
  if (opt.log_requests)
    std::fprintf(stderr, "bert_serve: %s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
}

static std::string prom_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

std::string Server::Impl::Metrics() {
  std::ostringstream o;
  o << "# HELP bert_requests_total HTTP requests by route and status.\n# TYPE bert_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lk(counters_mu);
    for (const auto& [route, by] : requests)
      for (const auto& [status, n] : by)
        o << "bert_requests_total{route=\"" << prom_escape(route) << "\",status=\"" << status << "\"} " << n << "\n";
    o << "# HELP bert_errors_total Failed requests by kind.\n# TYPE bert_errors_total counter\n";
    for (const auto& [kind, n] : errors) o << "bert_errors_total{kind=\"" << prom_escape(kind) << "\"} " << n << "\n";
  }
  o << "# HELP bert_pool_queue_depth Inputs of all models waiting for a worker.\n# TYPE bert_pool_queue_depth gauge\n";
  o << "bert_pool_queue_depth " << pool->QueueDepth() << "\n";
  o << "# HELP bert_queue_depth Inputs waiting for a worker, per model.\n# TYPE bert_queue_depth gauge\n";
  for (const auto& m : registry.List())
    o << "bert_queue_depth{model=\"" << prom_escape(m->name) << "\"} " << m->queued.load() << "\n";
  o << "# HELP bert_in_flight_requests Requests being handled.\n# TYPE bert_in_flight_requests gauge\n";
  o << "bert_in_flight_requests " << in_flight.load() << "\n";
  o << "# HELP bert_models_loaded Models being served.\n# TYPE bert_models_loaded gauge\n";
  o << "bert_models_loaded " << registry.List().size() << "\n";
  o << "# HELP bert_compute_workers Compute threads.\n# TYPE bert_compute_workers gauge\n";
  o << "bert_compute_workers " << pool->policy().workers << "\n";
  const auto all = registry.AllMetrics();
  auto counter = [&](const char* name, const char* help, auto get) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
    for (const auto& [model, mm] : all) o << name << "{model=\"" << prom_escape(model) << "\"} " << get(*mm) << "\n";
  };
  counter("bert_model_requests_total", "Requests that reached a model.", [](ModelMetrics& m) { return m.requests.load(); });
  counter("bert_model_inputs_total", "Input sequences computed.", [](ModelMetrics& m) { return m.inputs.load(); });
  counter("bert_batches_total", "Batches run.", [](ModelMetrics& m) { return m.batches.load(); });
  counter("bert_tokens_total", "Real tokens computed.", [](ModelMetrics& m) { return m.tokens.load(); });
  counter("bert_padded_tokens_total", "Tokens of the padded batches (rows x longest).",
          [](ModelMetrics& m) { return m.padded_tokens.load(); });
  auto histogram = [&](const char* name, const char* help, Histogram ModelMetrics::*h) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    for (const auto& [model, mm] : all) o << ((*mm).*h).Prometheus(name, "model=\"" + prom_escape(model) + "\"");
  };
  histogram("bert_batch_rows", "Rows per batch run.", &ModelMetrics::batch_rows);
  histogram("bert_request_latency_seconds", "Server-side latency of successful requests.", &ModelMetrics::request_latency);
  histogram("bert_batch_compute_seconds", "Compute time per batch.", &ModelMetrics::compute_seconds);
  return o.str();
}

void Server::Impl::Routes() {
  http.set_payload_max_length(opt.max_body_bytes);
  http.new_task_queue = [n = opt.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  http.set_tcp_nodelay(true);  // no Nagle delay on small JSON replies
  http.set_keep_alive_max_count(100000);
  http.set_keep_alive_timeout(2);  // an idle connection holds a connection thread (and shutdown) this long
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  // Errors httplib answers itself (404 route, 413 payload, 400 bad HTTP) get a JSON body too.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    HttpError e{res.status, "http_" + std::to_string(res.status), "the HTTP request was refused"};
    if (res.status == 400) e.message = "malformed HTTP request";
    if (res.status == 405) e.message = "method not allowed: " + req.method + " " + req.path;
    if (res.status == 404) e = {404, "no_route", "no such endpoint: " + req.method + " " + req.path};
    if (res.status == 413) e = {413, "body_too_large", "the request body is larger than the limit"};
    send_error(res, e);
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) { Count(req, res); });
  if (!opt.web_dir.empty()) http.set_mount_point("/", opt.web_dir);

  http.Get("/health", Guard([this](const httplib::Request&, httplib::Response& res) {
             json models = json::array();
             for (const auto& m : registry.List()) models.push_back(m->name);
             std::string why;
             {
               std::lock_guard<std::mutex> lk(mu);
               why = startup_error;
             }
             if (draining) return send_json(res, 503, {{"status", "draining"}, {"models", models}});
             if (!models_ready)
               return send_json(res, 503, {{"status", "loading"}, {"models", models}});
             if (!why.empty())
               return send_json(res, 503, {{"status", "failed"}, {"error", why}, {"models", models}});
             send_json(res, 200, {{"status", "ok"}, {"models", models}});
           }));

  http.Get("/metrics", Guard([this](const httplib::Request&, httplib::Response& res) {
             res.set_content(Metrics(), "text/plain; version=0.0.4");
           }));

  http.Get("/v1/models", Guard([this](const httplib::Request&, httplib::Response& res) {
             json list = json::array();
             for (const auto& m : registry.List()) list.push_back(m->Info());
             send_json(res, 200, {{"models", list}});
           }));

  http.Post("/v1/models", Guard([this](const httplib::Request& req, httplib::Response& res) {
              CheckAdmin(req);
              const json body = parse_body(req);
              allow_fields(body, {"name", "path", "device", "precision"});
              for (const char* f : {"name", "path"}) {
                if (!body.contains(f)) throw HttpError{400, "missing_field", std::string("missing field '") + f + "'"};
                if (!body[f].is_string()) throw HttpError{400, "wrong_type", std::string("field '") + f + "' must be a string"};
              }
              const std::string name = body["name"].get<std::string>();
              if (name.empty() || name.size() > 64 ||
                  !std::all_of(name.begin(), name.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
                  }))
                throw HttpError{400, "bad_name", "model name '" + name + "' must be 1-64 characters of A-Z a-z 0-9 . _ -"};
              ModelSpec spec;
              spec.name = name;
              if (body.contains("device")) {
                if (!body["device"].is_string()) throw HttpError{400, "wrong_type", "field 'device' must be a string"};
                const std::string d = body["device"].get<std::string>();
                if (d == "cpu") spec.load.device = Device::kCpu;
                else if (d == "cuda") spec.load.device = Device::kCuda;
                else throw HttpError{400, "invalid_argument", "field 'device' must be \"cpu\" or \"cuda\", not '" + d + "'"};
              }
              if (body.contains("precision")) {
                if (!body["precision"].is_string()) throw HttpError{400, "wrong_type", "field 'precision' must be a string"};
                const std::string p = body["precision"].get<std::string>();
                if (p == "fp32") spec.load.precision = Precision::kF32;
                else if (p == "fp16") spec.load.precision = Precision::kF16;
                else if (p == "int8") spec.load.precision = Precision::kInt8;
                else if (p == "bf16") spec.load.precision = Precision::kBF16;
                else throw HttpError{400, "invalid_argument", "field 'precision' must be fp32, bf16, int8 or fp16, not '" + p + "'"};
              }
              auto path = ResolveModelPath(opt.model_dir, body["path"].get<std::string>());
              if (!path.ok()) {
                const bool refused = path.status().code() == ErrorCode::kInvalidArgument;
                throw HttpError{refused ? 403 : 404, refused ? "path_refused" : "not_found", path.status().message()};
              }
              spec.path = *path;
              if (Status st = Load(spec); !st.ok()) throw from_status(st, "loading model '" + name + "'");
              send_json(res, 200, {{"loaded", registry.Get(name)->Info()}});
            }));

  http.Delete(R"(/v1/models/([^/]+))", Guard([this](const httplib::Request& req, httplib::Response& res) {
                CheckAdmin(req);
                const std::string name = req.matches[1];
                if (!registry.Remove(name)) throw HttpError{404, "unknown_model", "unknown model '" + name + "'"};
                send_json(res, 200, {{"unloaded", name}});
              }));

  // predict and embed: tokenise here, compute in the pool, answer per input.
  auto compute = [this](const httplib::Request& req, httplib::Response& res, bool embed) {
    const Clock::time_point received = Clock::now();
    const json body = parse_body(req);
    if (embed) allow_fields(body, {"model", "inputs", "pooling", "normalize", "max_length"});
    else allow_fields(body, {"model", "inputs", "top_k", "max_length"});
    auto m = Require(body);
    std::vector<TextInput> inputs = Inputs(body);
    auto cr = std::make_shared<ComputeRequest>();
    cr->model = m;
    cr->received = received;
    if (embed) {
      cr->kind.embed = true;
      cr->kind.pooling = Pooling::kMean;
      if (body.contains("pooling")) {
        if (!body["pooling"].is_string()) throw HttpError{400, "wrong_type", "field 'pooling' must be a string"};
        const std::string p = body["pooling"].get<std::string>();
        if (p == "cls") cr->kind.pooling = Pooling::kCls;
        else if (p == "mean") cr->kind.pooling = Pooling::kMean;
        else if (p == "max") cr->kind.pooling = Pooling::kMax;
        else throw HttpError{400, "invalid_argument", "field 'pooling' must be cls, mean or max, not '" + p + "'"};
      }
      if (body.contains("normalize")) {
        if (!body["normalize"].is_boolean()) throw HttpError{400, "wrong_type", "field 'normalize' must be true or false"};
        cr->kind.normalize = body["normalize"].get<bool>();
      }
    } else if (body.contains("top_k")) {
      const json& k = body["top_k"];
      if (!k.is_number_integer() || k.get<int64_t>() < 1 || k.get<int64_t>() > 100)
        throw HttpError{400, "wrong_type", "field 'top_k' must be an integer from 1 to 100"};
      cr->predict.top_k = static_cast<int>(k.get<int64_t>());
    }
    cr->encodings = Encode(*m, inputs, read_max_length(body));
    for (const TextInput& in : inputs) cr->texts.emplace_back(in.text, in.pair);
    m->metrics->requests += 1;
    if (!pool->Submit(cr))
      throw HttpError{429, "queue_full", "the queue of model '" + m->name + "' is full (" +
                                             std::to_string(m->queued.load()) + " inputs waiting; limit " +
                                             std::to_string(opt.max_queue) + "); retry later"};
    const auto deadline = received + std::chrono::microseconds(static_cast<int64_t>(opt.timeout_ms * 1000));
    if (!ComputePool::Wait(*cr, deadline))
      throw HttpError{504, "timeout", "the request took longer than the server's limit of " +
                                          std::to_string(static_cast<int64_t>(opt.timeout_ms)) + " ms"};
    m->metrics->inputs += cr->encodings.size();
    for (size_t i = 0; i < cr->errors.size(); ++i)
      if (!cr->errors[i].empty())
        throw HttpError{500, "compute", "inputs[" + std::to_string(i) + "]: " + cr->errors[i]};
    const double latency = std::chrono::duration<double>(Clock::now() - received).count();
    m->metrics->request_latency.Observe(latency);
    json out = {{"model", m->name}, {"latency_ms", latency * 1e3}, {"compute_ms", cr->compute_ms}};
    if (embed) {
      out["embeddings"] = std::move(cr->results);
      out["dimension"] = m->model->info().hidden_size;
    } else {
      out["results"] = std::move(cr->results);
    }
    send_json(res, 200, out);
  };
  http.Post("/v1/predict", Guard([compute](const httplib::Request& req, httplib::Response& res) { compute(req, res, false); }));
  http.Post("/v1/embed", Guard([compute](const httplib::Request& req, httplib::Response& res) { compute(req, res, true); }));

  http.Post("/v1/tokenize", Guard([this](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req);
              allow_fields(body, {"model", "inputs", "max_length"});
              auto m = Require(body);
              const std::vector<Encoding> encs = Encode(*m, Inputs(body), read_max_length(body));
              json results = json::array();
              for (const Encoding& e : encs)
                results.push_back({{"tokens", e.tokens}, {"input_ids", e.input_ids}, {"token_type_ids", e.token_type_ids}});
              send_json(res, 200, {{"model", m->name}, {"results", results}});
            }));

  http.Get("/v1/demo/sentences", Guard([this](const httplib::Request&, httplib::Response& res) {
             if (demo_sentences.empty())
               throw HttpError{404, "no_demo_data", "no demo sentences: start bert_serve with --demo-data dev.tsv"};
             send_json(res, 200, {{"source", opt.demo_data}, {"sentences", demo_sentences}});
           }));
}

// Reads sentence<TAB>label lines (a header line is skipped); the label is the last column.
static Result<json> read_demo_tsv(const std::string& path) {
  std::ifstream f(path);
  if (!f) return not_found("cannot open the demo data '" + path + "'");
  json out = json::array();
  std::string line;
  bool first = true;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t tab = line.rfind('\t');
    if (tab == std::string::npos) continue;
    const std::string label = line.substr(tab + 1);
    if (first && (label.empty() || !std::isdigit(static_cast<unsigned char>(label[0])))) {
      first = false;
      continue;  // header
    }
    first = false;
    std::string text = line.substr(0, tab);
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out.push_back({{"text", text}, {"label", std::atoi(label.c_str())}});
  }
  return out;
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  Shutdown();
  Wait();
}

Result<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  ServerOptions& o = impl->opt;
  if (o.threads <= 0) o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o.http_threads < 2) return invalid_argument("http_threads must be at least 2");
  if (o.max_inputs < 1 || o.max_input_chars < 1 || o.max_queue < 1 || o.max_batch_tokens < 1 || o.max_batch_rows < 1)
    return invalid_argument("the limits (inputs, chars, queue, batch tokens, batch rows) must be at least 1");
  if (o.timeout_ms <= 0 || o.max_wait_ms < 0) return invalid_argument("timeout must be > 0 and max wait >= 0");
  if (!o.model_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(o.model_dir, ec)) return not_found("--model-dir '" + o.model_dir + "' is not a directory");
  }
  if (!o.web_dir.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(fs::path(o.web_dir) / "index.html", ec))
      return not_found("the web directory '" + o.web_dir + "' has no index.html");
  }
  if (!o.demo_data.empty()) {
    auto d = read_demo_tsv(o.demo_data);
    if (!d.ok()) return d.status();
    impl->demo_sentences = std::move(*d);
  }
  BatchPolicy policy;
  policy.workers = o.threads;
  policy.max_batch_tokens = o.max_batch_tokens;
  policy.max_batch_rows = o.max_batch_rows;
  policy.max_wait_ms = o.max_wait_ms;
  policy.max_queue = o.max_queue;
  policy.remove_padding = o.remove_padding;
  impl->pool = std::make_unique<ComputePool>(policy);
  impl->Routes();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Status Server::Start(std::vector<ModelSpec> models) {
  Impl& s = *impl_;
  int port = s.opt.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opt.host.c_str());
    if (port < 0) return io_error("cannot bind " + s.opt.host + " (any port)");
  } else if (!s.http.bind_to_port(s.opt.host.c_str(), port)) {
    return io_error("cannot bind " + s.opt.host + ":" + std::to_string(port) + " (in use, or not an address here)");
  }
  s.bound_port = port;
  s.started_ok = true;
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  // The start-up models load while /health says 503.
  s.loader = std::thread([this, models = std::move(models)] {
    std::string err;
    for (const ModelSpec& m : models) {
      if (Status st = impl_->Load(m); !st.ok()) {
        err += (err.empty() ? "" : "; ") + ("model '" + m.name + "': " + st.to_string());
        std::fprintf(stderr, "bert_serve: loading model '%s' from %s failed: %s\n", m.name.c_str(), m.path.c_str(),
                     st.to_string().c_str());
      } else {
        std::fprintf(stderr, "bert_serve: loaded model '%s' from %s\n", m.name.c_str(), m.path.c_str());
      }
    }
    {
      std::lock_guard<std::mutex> lk(impl_->mu);
      impl_->startup_error = err;
    }
    impl_->models_ready = true;
  });
  return Status();
}

int Server::port() const { return impl_->bound_port; }
Status Server::LoadModel(const ModelSpec& spec) { return impl_->Load(spec); }
bool Server::ready() const { return impl_->models_ready; }
std::string Server::startup_error() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->startup_error;
}

void Server::Shutdown() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  s.draining = true;
  s.http.stop();  // closes the listening socket; requests being handled run to their end
  if (s.listener.joinable()) s.listener.join();  // listen returns once its connection threads finished
  if (s.loader.joinable()) s.loader.join();
  s.pool->Shutdown();
}

void Server::Wait() {
  if (impl_->listener.joinable()) impl_->listener.join();
}

}  // namespace bert::serve
