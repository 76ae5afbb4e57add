// ParamArena (engine/train/param_arena.h): one allocation holding the parameter and gradient regions.
#include "engine/train/param_arena.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace bert {

int64_t ParamArena::ready_stage(const ModelConfig& c, const std::string& name) {
  if (name.starts_with("embeddings.")) return -1;
  if (name.starts_with("layer.")) {
    const int64_t set = std::atoll(name.c_str() + 6);
    for (int64_t l = 0; l < c.num_layers; ++l)
      if (c.layer_weights_index(l) == set) return l;  // the backward runs layers last to first
    return -1;
  }
  return c.num_layers;  // pooler and head
}

Result<std::unique_ptr<ParamArena>> ParamArena::Create(runtime::Backend& backend, const ModelConfig& config,
                                                       const TensorMap& initial, const Layout& layout) {
  if (layout.world_size < 1 || layout.rank < 0 || layout.rank >= layout.world_size || layout.bucket_bytes < 1 ||
      layout.zero_stage < 0 || layout.zero_stage > 2)
    return invalid_argument("ParamArena: bad layout (world size, rank, bucket bytes or ZeRO stage)");
  auto a = std::unique_ptr<ParamArena>(new ParamArena());
  a->backend_ = &backend;
  a->layout_ = layout;
  // The order the backward finishes the gradients in (then by name: the order checkpoints see).
  std::vector<std::pair<int64_t, std::string>> order;
  for (const auto& [name, t] : initial) {
    if (t.dtype != DType::kF32) return internal_error("parameter '" + name + "' is not F32");
    order.emplace_back(-ready_stage(config, name), name);
  }
  std::sort(order.begin(), order.end());
  const size_t align = 64 * static_cast<size_t>(layout.world_size);
  const size_t bucket_floats = std::max<size_t>(1, static_cast<size_t>(layout.bucket_bytes) / sizeof(float));
  Bucket open;
  auto close_bucket = [&] {
    open.n = (a->total_ - open.offset + align - 1) / align * align;
    a->total_ = open.offset + open.n;
    open.shard_offset = a->shard_total_;
    a->shard_total_ += open.n / layout.world_size;
    a->buckets_.push_back(open);
    open = Bucket{a->total_, 0, 0, 0};
  };
  for (const auto& [neg_stage, name] : order) {
    const Tensor& t = initial.at(name);
    Entry e;
    e.name = name, e.shape = t.shape, e.offset = a->total_, e.n = t.numel();
    e.decay = !(name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta"));
    a->total_ += (static_cast<size_t>(e.n) + 63) / 64 * 64;
    open.ready_stage = -neg_stage;  // the bucket's last (lowest) stage
    a->entries_.push_back(std::move(e));
    if (a->total_ - open.offset >= bucket_floats) close_bucket();
  }
  if (a->total_ > open.offset) close_bucket();
  a->moment_total_ = layout.zero_stage >= 1 ? a->shard_total_ : a->total_;
  const size_t shard_grads = layout.zero_stage >= 1 ? a->shard_total_ : 0;
  const size_t floats = 2 * a->total_ + 2 * a->moment_total_ + shard_grads;
  const size_t bytes = floats * sizeof(float);
  void* p = backend.allocate(bytes);
  if (!p)
    return out_of_range("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the parameters, gradients and moments on " +
                        backend.name());
  a->bytes_ = bytes;
  a->memory_ = runtime::DeviceBuffer(&backend, p);
  a->params_ = static_cast<float*>(p);
  a->grads_ = a->params_ + a->total_;
  a->moments_ = a->grads_ + a->total_;
  a->shard_grads_ = shard_grads ? a->moments_ + 2 * a->moment_total_ : nullptr;
  BERT_RETURN_IF_ERROR(backend.zero(p, bytes));
  for (const Entry& e : a->entries_)
    BERT_RETURN_IF_ERROR(backend.upload(a->params_ + e.offset, initial.at(e.name).data, sizeof(float) * e.n));
  auto lookup = [&](float* base) {
    return [&, base](const std::string& name) -> const float* {
      const Entry* e = a->find(name);
      return e ? base + e->offset : nullptr;
    };
  };
  BERT_RETURN_IF_ERROR(bind_weights(config, lookup(a->params_), a->weights_));
  BERT_RETURN_IF_ERROR(bind_weights(config, lookup(a->grads_), a->gradients_));
  return a;
}

const ParamArena::Entry* ParamArena::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Status ParamArena::zero_grads() { return backend_->zero(grads_, total_ * sizeof(float)); }

Result<const float*> ParamArena::host_params() {
  if (backend_->device() == Device::kCpu) return static_cast<const float*>(params_);
  host_params_.resize(total_);
  BERT_RETURN_IF_ERROR(backend_->download(host_params_.data(), params_, total_ * sizeof(float)));
  return static_cast<const float*>(host_params_.data());
}

Result<const float*> ParamArena::host_grads() {
  if (backend_->device() == Device::kCpu) return static_cast<const float*>(grads_);
  host_grads_.resize(total_);
  BERT_RETURN_IF_ERROR(backend_->download(host_grads_.data(), grads_, total_ * sizeof(float)));
  return static_cast<const float*>(host_grads_.data());
}

Status ParamArena::set_params(const float* host) { return backend_->upload(params_, host, total_ * sizeof(float)); }

}  // namespace bert
