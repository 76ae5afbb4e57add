// bert_serve's HTTP layer (cpp-httplib) over the model registry and the compute pool (batcher.h):
// JSON endpoints /v1/models, /v1/predict, /v1/embed, /v1/tokenize, /health, /metrics, the demo page's
// static files and its SST-2 sentences. Every bad request gets a 4xx JSON error naming the problem;
// handlers never let an exception out. Used by tools/bert_serve (main + signals), the tests and the
// serving bench (in-process).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/status.h"

namespace bert::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (port() tells which)
  int threads = 0;                 // compute workers; 0: the machine's cores
  int http_threads = 64;           // connection threads (they wait on the compute pool, not compute)
  int max_batch_tokens = 4096;     // padded tokens per batch
  int max_batch_rows = 64;
  double max_wait_ms = 0;          // how long a batch may wait to fill (0: run what is queued now)
  bool remove_padding = true;
  size_t max_body_bytes = 2 << 20; // larger bodies: 413
  int max_inputs = 512;            // inputs per request
  int max_input_chars = 20000;     // characters (UTF-8 code points) per input, checked before tokenising
  int max_queue = 1024;            // inputs waiting per model: more -> 429
  double timeout_ms = 30000;       // per request, queue + compute: more -> 504
  std::string model_dir;           // POST /v1/models loads only below this directory (empty: refused)
  std::string admin_token;         // when set, POST/DELETE /v1/models need "Authorization: Bearer <token>"
  std::string web_dir;             // the demo page's files (empty: no demo page)
  std::string demo_data;           // SST-2 style TSV (sentence<TAB>label) the demo page lists (optional)
  bool log_requests = false;       // one line per request on stderr
};

// A model given at start: NAME=PATH.
struct ModelSpec {
  std::string name, path;
  LoadOptions load;
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();

  // Binds and starts serving on a background thread; then loads `models` (GET /health says 503
  // until they are all loaded). Returns an error if the address cannot be bound.
  Status Start(std::vector<ModelSpec> models);
  int port() const;
  // Loads (or replaces) a model from any path (command-line models; the HTTP endpoint confines).
  Status LoadModel(const ModelSpec& spec);
  // True once the start-up models are loaded (or failed: then `startup_error` says why).
  bool ready() const;
  std::string startup_error() const;
  // Stops accepting connections, lets in-flight requests finish, then stops the compute pool.
  void Shutdown();
  // Blocks until the server has stopped (after Shutdown).
  void Wait();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The path a POST /v1/models request may load: `requested` (relative to model_dir, or absolute)
// resolved through symlinks, refused when it contains "..", is empty or resolves outside model_dir.
// Errors: InvalidArgument (refused: the message says why), NotFound.
Result<std::string> ResolveModelPath(const std::string& model_dir, const std::string& requested);

// Constant-time comparison of a presented token with the expected one (time depends only on the
// expected token's length).
bool TokenEquals(const std::string& presented, const std::string& expected);

}  // namespace bert::serve
