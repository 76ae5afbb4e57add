// bert_client: drives a running bert_serve.
//
//   bert_client experiment --url http://127.0.0.1:8080 [--models a,b,c (default: all hosted)]
//       [--baseline NAME (default: a model whose name has "base")] [--sizes 1,8,32] [--trials 10]
//       --data sst2-dev.tsv [--csv trials.csv] [--markdown summary.md]
//     Study 002's experiment: every model x input size (sentences per request) x trial, timed on the
//     client and on the server; the summary has median latencies, the speed-up over the baseline at
//     the same size and each model's accuracy on the sentences it saw.
//   bert_client load --url URL --model NAME [--clients 8] [--seconds 10 | --requests R] [--rate RPS]
//       [--batch 1] [--endpoint predict|embed] [--data sst2-dev.tsv] [--json out.json]
//     N concurrent clients (one keep-alive connection each) send --batch sentences per request for T
//     seconds or R requests in all (--rate: at most RPS requests per second over all clients);
//     prints throughput (requests/s, sentences/s), p50/p90/p99 latency and errors.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int usage(const std::string& msg) {
  if (!msg.empty()) std::fprintf(stderr, "bert_client: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: bert_client experiment --url URL --data dev.tsv [--models a,b] [--baseline NAME]\n"
               "                  [--sizes 1,8,32] [--trials 10] [--csv F] [--markdown F]\n"
               "       bert_client load --url URL --model NAME [--clients 8] [--seconds 10 | --requests R]\n"
               "                  [--rate RPS] [--batch 1] [--endpoint predict|embed] [--data dev.tsv] [--json F]\n");
  return 2;
}

struct Sentence {
  std::string text;
  int label = -1;
};

// sentence<TAB>label lines, a header line skipped; without a file, a few fixed sentences.
std::vector<Sentence> read_sentences(const std::string& path) {
  std::vector<Sentence> out;
  if (path.empty()) {
    for (const char* s : {"a charming and often affecting journey", "unflinchingly bleak and desperate",
                          "the acting is superb", "it is a dull , lifeless movie"})
      out.push_back({s, -1});
    return out;
  }
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    const size_t tab = line.rfind('\t');
    if (tab == std::string::npos) continue;
    const std::string label = line.substr(tab + 1);
    if (label.empty() || !std::isdigit(static_cast<unsigned char>(label[0]))) continue;  // header
    out.push_back({line.substr(0, tab), std::atoi(label.c_str())});
  }
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, sep))
    if (!x.empty()) out.push_back(x);
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

// http://host:port -> host, port
bool parse_url(const std::string& url, std::string* host, int* port) {
  std::string u = url;
  if (u.rfind("http://", 0) == 0) u = u.substr(7);
  while (!u.empty() && u.back() == '/') u.pop_back();
  const size_t colon = u.rfind(':');
  if (colon == std::string::npos) return false;
  *host = u.substr(0, colon);
  *port = std::atoi(u.substr(colon + 1).c_str());
  return *port > 0 && !host->empty();
}

struct Args {
  std::map<std::string, std::string> v;
  std::string get(const std::string& k, const std::string& d = "") const {
    auto it = v.find(k);
    return it == v.end() ? d : it->second;
  }
};

// Waits (up to a minute) for GET /health to say 200: the server's start-up models are loaded.
bool wait_healthy(const std::string& host, int port) {
  httplib::Client cli(host, port);
  cli.set_connection_timeout(2, 0);
  for (int i = 0; i < 600; ++i) {
    auto r = cli.Get("/health");
    if (r && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int experiment(const Args& a, const std::string& host, int port) {
  const std::vector<Sentence> sentences = read_sentences(a.get("data"));
  if (sentences.empty()) return usage("no sentences in --data " + a.get("data"));
  httplib::Client cli(host, port);
  cli.set_read_timeout(300, 0);
  cli.set_tcp_nodelay(true);
  auto models_res = cli.Get("/v1/models");
  if (!models_res || models_res->status != 200) return usage("cannot list the models at " + a.get("url"));
  std::vector<std::string> models = split(a.get("models"), ',');
  const json listed = json::parse(models_res->body, nullptr, false);
  if (models.empty() && listed.is_object() && listed.contains("models"))
    for (const json& m : listed["models"]) models.push_back(m["name"]);
  if (models.empty()) return usage("the server hosts no models");
  std::string baseline = a.get("baseline");
  if (baseline.empty())
    for (const std::string& m : models)
      if (m.find("base") != std::string::npos) baseline = m;
  std::vector<int> sizes;
  for (const std::string& s : split(a.get("sizes", "1,8,32"), ',')) sizes.push_back(std::max(1, std::atoi(s.c_str())));
  const int trials = std::max(1, std::atoi(a.get("trials", "10").c_str()));

  struct Cell {
    std::vector<double> client_ms, server_ms;
    int correct = 0, labelled = 0;
  };
  std::map<std::pair<std::string, int>, Cell> cells;
  std::string csv = "model,size,trial,client_ms,server_ms,correct,labelled\n";
  // One untimed request per model and size first: sessions are planned on first use.
  for (int size : sizes)
    for (const std::string& m : models) {
      json inputs = json::array();
      for (int i = 0; i < size; ++i) inputs.push_back(sentences[i % sentences.size()].text);
      cli.Post("/v1/predict", json{{"model", m}, {"inputs", inputs}}.dump(), "application/json");
    }
  size_t cursor = 0;
  for (int size : sizes)
    for (int t = 0; t < trials; ++t) {
      // The same sentences for every model in a trial.
      json inputs = json::array();
      std::vector<int> labels;
      for (int i = 0; i < size; ++i) {
        const Sentence& s = sentences[(cursor + i) % sentences.size()];
        inputs.push_back(s.text);
        labels.push_back(s.label);
      }
      cursor += size;
      for (const std::string& m : models) {
        const json req = {{"model", m}, {"inputs", inputs}};
        const auto t0 = Clock::now();
        auto res = cli.Post("/v1/predict", req.dump(), "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!res || res->status != 200) {
          std::fprintf(stderr, "bert_client: %s size %d: %s\n", m.c_str(), size,
                       res ? res->body.c_str() : httplib::to_string(res.error()).c_str());
          return 1;
        }
        const json body = json::parse(res->body);
        Cell& c = cells[{m, size}];
        c.client_ms.push_back(ms);
        c.server_ms.push_back(body["latency_ms"].get<double>());
        int correct = 0, labelled = 0;
        for (int i = 0; i < size; ++i) {
          const json& r = body["results"][i];
          if (labels[i] < 0 || !r.contains("label_id")) continue;
          ++labelled;
          correct += r["label_id"].get<int>() == labels[i];
        }
        c.correct += correct, c.labelled += labelled;
        char line[256];
        std::snprintf(line, sizeof line, "%s,%d,%d,%.3f,%.3f,%d,%d\n", m.c_str(), size, t, ms,
                      body["latency_ms"].get<double>(), correct, labelled);
        csv += line;
      }
    }
  std::ostringstream md;
  md << "| model | sentences per request | trials | median client ms | median server ms | speed-up over "
     << (baseline.empty() ? "baseline" : baseline) << " | accuracy |\n| --- | --- | --- | --- | --- | --- | --- |\n";
  for (int size : sizes)
    for (const std::string& m : models) {
      const Cell& c = cells[{m, size}];
      const double med = percentile(c.server_ms, 50);
      double speedup = 0;
      if (!baseline.empty() && cells.count({baseline, size})) speedup = percentile(cells[{baseline, size}].server_ms, 50) / med;
      char line[512];
      std::snprintf(line, sizeof line, "| %s | %d | %zu | %.2f | %.2f | %s | %s |\n", m.c_str(), size, c.client_ms.size(),
                    percentile(c.client_ms, 50), med, speedup > 0 ? (std::to_string(speedup).substr(0, 5) + "x").c_str() : "-",
                    c.labelled ? (std::to_string(100.0 * c.correct / c.labelled).substr(0, 5) + "%").c_str() : "-");
      md << line;
    }
  std::printf("%s", md.str().c_str());
  if (!a.get("csv").empty()) std::ofstream(a.get("csv")) << csv;
  if (!a.get("markdown").empty()) std::ofstream(a.get("markdown")) << md.str();
  return 0;
}

int load(const Args& a, const std::string& host, int port) {
  const std::string model = a.get("model");
  if (model.empty()) return usage("load needs --model");
  const std::vector<Sentence> sentences = read_sentences(a.get("data"));
  const int clients = std::max(1, std::atoi(a.get("clients", "8").c_str()));
  const double seconds = std::atof(a.get("seconds", "0").c_str());
  const long requests = std::atol(a.get("requests", "0").c_str());
  const double rate = std::atof(a.get("rate", "0").c_str());
  const int batch = std::max(1, std::atoi(a.get("batch", "1").c_str()));
  const std::string endpoint = "/v1/" + a.get("endpoint", "predict");
  if (seconds <= 0 && requests <= 0) return usage("load needs --seconds T or --requests R");

  std::atomic<long> issued{0};
  std::atomic<long> errors{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::map<int, long> statuses;
  const auto start = Clock::now();
  const auto end = start + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      httplib::Client cli(host, port);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);
      cli.set_read_timeout(120, 0);
      std::vector<double> mine;
      std::map<int, long> st;
      long k = c;
      for (;;) {
        const long n = issued.fetch_add(1);
        if (requests > 0 && n >= requests) break;
        if (seconds > 0 && Clock::now() >= end) break;
        if (rate > 0) {  // request n is due at start + n / rate
          const auto due = start + std::chrono::microseconds(static_cast<int64_t>(n * 1e6 / rate));
          std::this_thread::sleep_until(due);
        }
        json inputs = json::array();
        for (int i = 0; i < batch; ++i) inputs.push_back(sentences[(k++ * 7919) % sentences.size()].text);
        const std::string body = json{{"model", model}, {"inputs", inputs}}.dump();
        const auto t0 = Clock::now();
        auto res = cli.Post(endpoint, body, "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        const int code = res ? res->status : -1;
        st[code] += 1;
        if (code == 200) mine.push_back(ms);
        else errors += 1;
      }
      std::lock_guard<std::mutex> lk(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
      for (auto [k2, v] : st) statuses[k2] += v;
    });
  for (std::thread& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const double ok = static_cast<double>(latencies.size());
  json out = {{"model", model},
              {"endpoint", endpoint},
              {"clients", clients},
              {"batch", batch},
              {"rate_limit", rate},
              {"seconds", wall},
              {"requests_ok", latencies.size()},
              {"errors", errors.load()},
              {"requests_per_s", ok / wall},
              {"sentences_per_s", ok * batch / wall},
              {"p50_ms", percentile(latencies, 50)},
              {"p90_ms", percentile(latencies, 90)},
              {"p99_ms", percentile(latencies, 99)}};
  json codes = json::object();
  for (auto [k, v] : statuses) codes[std::to_string(k)] = v;
  out["status_counts"] = codes;
  std::printf("%s: %d clients x %d sentence(s): %.0f requests/s, %.0f sentences/s, p50 %.2f ms, p90 %.2f ms, "
              "p99 %.2f ms, %ld errors (%.1f s); statuses %s\n",
              model.c_str(), clients, batch, ok / wall, ok * batch / wall, percentile(latencies, 50),
              percentile(latencies, 90), percentile(latencies, 99), errors.load(), wall, codes.dump().c_str());
  if (!a.get("json").empty()) std::ofstream(a.get("json")) << out.dump(2) << "\n";
  return errors.load() > 0 ? 3 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("give a mode: experiment or load");
  const std::string mode = argv[1];
  if (mode == "--help" || mode == "-h") return usage(""), 0;
  Args a;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) return usage("unexpected argument " + k);
    static const char* kKnown[] = {"url", "models", "baseline", "sizes", "trials", "data", "csv", "markdown", "model",
                                   "clients", "seconds", "requests", "rate", "batch", "endpoint", "json"};
    bool known = false;
    for (const char* x : kKnown) known = known || k.substr(2) == x;
    if (!known) return usage("unknown option " + k);
    a.v[k.substr(2)] = argv[++i];
  }
  std::string host;
  int port = 0;
  if (!parse_url(a.get("url", "http://127.0.0.1:8080"), &host, &port)) return usage("--url must be http://HOST:PORT");
  if ((mode == "experiment" || mode == "load") && !wait_healthy(host, port)) {
    std::fprintf(stderr, "bert_client: %s is not healthy (GET /health is not 200 after a minute)\n", a.get("url").c_str());
    return 1;
  }
  if (mode == "experiment") return experiment(a, host, port);
  if (mode == "load") return load(a, host, port);
  return usage("unknown mode '" + mode + "'");
}
