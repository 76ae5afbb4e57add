// bert_serve: serve models over HTTP (JSON): /v1/models, /v1/predict, /v1/embed, /v1/tokenize, /health,
// /metrics and the demo page (docs/SERVING.md). A thin main over engine/serve/server: options,
// signals (SIGTERM / SIGINT: stop accepting, finish in-flight requests, exit 0).
//
//   bert_serve --port 8080 --model tiny=models/demo/sst2-tiny.bert --model-dir models/demo
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/serve/server/http_server.h"

#ifndef BERT_SERVE_WEB_DIR
#define BERT_SERVE_WEB_DIR ""
#endif

namespace {

int usage(const std::string& msg) {
  if (!msg.empty()) std::fprintf(stderr, "bert_serve: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: bert_serve [--port P (8080; 0 = any free port)] [--host 127.0.0.1] [--model NAME=PATH ...]\n"
               "         [--model-dir DIR] [--admin-token TOKEN | --admin-token-file FILE]\n"
               "         [--threads N (compute workers; default: the cores)] [--http-threads N]\n"
               "         [--max-batch-tokens T (4096)] [--max-batch-rows R (64)] [--max-wait-ms W (0)]\n"
               "         [--no-remove-padding] [--max-body-bytes B (2097152)] [--max-inputs N (512)]\n"
               "         [--max-input-chars C (20000)] [--max-queue Q (1024)] [--timeout-ms T (30000)]\n"
               "         [--web-dir DIR (the demo page; default: the source tree's web/)] [--no-web]\n"
               "         [--demo-data sst2-dev.tsv] [--device cpu|cuda] [--log-requests]\n");
  return 2;
}

bool parse_number(const char* s, double lo, double hi, double* out) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (!*s || *end || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bert::serve::ServerOptions o;
  o.web_dir = BERT_SERVE_WEB_DIR;
  std::vector<bert::serve::ModelSpec> models;
  bert::LoadOptions load;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") return usage(""), 0;
    if (a == "--no-remove-padding") { o.remove_padding = false; continue; }
    if (a == "--no-web") { o.web_dir.clear(); continue; }
    if (a == "--log-requests") { o.log_requests = true; continue; }
    if (i + 1 >= argc) return usage("option " + a + " needs a value (or is unknown)");
    const char* v = argv[++i];
    double n = 0;
    auto num = [&](double lo, double hi) {
      if (!parse_number(v, lo, hi, &n)) {
        usage(a + " needs a number from " + std::to_string(static_cast<long long>(lo)) + " to " +
              std::to_string(static_cast<long long>(hi)) + ", not '" + v + "'");
        std::exit(2);
      }
      return n;
    };
    if (a == "--port") o.port = static_cast<int>(num(0, 65535));
    else if (a == "--host") o.host = v;
    else if (a == "--model") {
      const std::string spec = v;
      const size_t eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        return usage("--model takes NAME=PATH, not '" + spec + "'");
      models.push_back({spec.substr(0, eq), spec.substr(eq + 1), {}});
    } else if (a == "--model-dir") o.model_dir = v;
    else if (a == "--admin-token") o.admin_token = v;
    else if (a == "--admin-token-file") {
      FILE* f = std::fopen(v, "rb");
      if (!f) return usage(std::string("cannot read --admin-token-file ") + v);
      char buf[4096];
      const size_t got = std::fread(buf, 1, sizeof buf, f);
      std::fclose(f);
      o.admin_token.assign(buf, got);
      while (!o.admin_token.empty() && (o.admin_token.back() == '\n' || o.admin_token.back() == '\r'))
        o.admin_token.pop_back();
      if (o.admin_token.empty()) return usage("--admin-token-file is empty");
    } else if (a == "--threads") o.threads = static_cast<int>(num(0, 1024));
    else if (a == "--http-threads") o.http_threads = static_cast<int>(num(2, 4096));
    else if (a == "--max-batch-tokens") o.max_batch_tokens = static_cast<int>(num(1, 1 << 24));
    else if (a == "--max-batch-rows") o.max_batch_rows = static_cast<int>(num(1, 1 << 16));
    else if (a == "--max-wait-ms") o.max_wait_ms = num(0, 60000);
    else if (a == "--max-body-bytes") o.max_body_bytes = static_cast<size_t>(num(1, 1 << 30));
    else if (a == "--max-inputs") o.max_inputs = static_cast<int>(num(1, 1 << 20));
    else if (a == "--max-input-chars") o.max_input_chars = static_cast<int>(num(1, 1 << 24));
    else if (a == "--max-queue") o.max_queue = static_cast<int>(num(1, 1 << 24));
    else if (a == "--timeout-ms") o.timeout_ms = num(0.001, 3.6e6);
    else if (a == "--web-dir") o.web_dir = v;
    else if (a == "--demo-data") o.demo_data = v;
    else if (a == "--device") {
      const std::string d = v;
      if (d == "cpu") load.device = bert::Device::kCpu;
      else if (d == "cuda") load.device = bert::Device::kCuda;
      else return usage("--device must be cpu or cuda, not '" + d + "'");
    } else return usage("unknown option " + a);
  }
  for (auto& m : models) m.load = load;
  if (!o.web_dir.empty() && !std::filesystem::exists(std::filesystem::path(o.web_dir) / "index.html")) {
    std::fprintf(stderr, "bert_serve: no demo page at %s (use --web-dir DIR); serving without it\n", o.web_dir.c_str());
    o.web_dir.clear();
  }

  // SIGTERM / SIGINT are taken by sigwait below, in this thread only: block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = bert::serve::Server::Create(o);
  if (!server.ok()) {
    std::fprintf(stderr, "bert_serve: %s\n", server.status().to_string().c_str());
    return 1;
  }
  if (bert::Status st = (*server)->Start(models); !st.ok()) {
    std::fprintf(stderr, "bert_serve: %s\n", st.to_string().c_str());
    return 1;
  }
  std::printf("bert_serve: listening on http://%s:%d\n", o.host.c_str(), (*server)->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  std::fprintf(stderr, "bert_serve: %s: finishing in-flight requests\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  std::fprintf(stderr, "bert_serve: stopped\n");
  return 0;
}
