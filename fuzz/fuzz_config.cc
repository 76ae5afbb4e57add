// Fuzz target: config.json of every family, then the parameter list its sizes make.
#include "weights/bert_layout.h"
#include "weights/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = bert::parse_model_config(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
  if (!c.ok()) return 0;
  (void)c->max_sequence_length();
  for (int64_t l = 0; l < c->num_layers; ++l) (void)c->layer_weights_index(l);
  (void)bert::param_specs(*c);  // bounded sizes: the list must be small enough to build
  return 0;
}
