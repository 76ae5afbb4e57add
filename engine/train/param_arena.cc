// ParamArena (engine/train/param_arena.h): one allocation holding the parameter and gradient regions.
#include "engine/train/param_arena.h"

#include <algorithm>
#include <climits>
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

int64_t ParamArena::first_stage(const ModelConfig& c, const std::string& name) {
  if (name == "embeddings.word" && (c.head == HeadKind::kMaskedLM || c.head == HeadKind::kPreTraining))
    return c.num_layers;  // the tied decoder adds into it during the head's backward
  if (name.starts_with("layer.")) {
    const int64_t set = std::atoll(name.c_str() + 6);
    for (int64_t l = c.num_layers - 1; l >= 0; --l)
      if (c.layer_weights_index(l) == set) return l;
    return -1;
  }
  return ready_stage(c, name);
}

namespace {

// ZeRO-2: a place for each bucket's gradients in one region, first fit from the largest bucket,
// so that buckets alive at the same time never share memory. Returns the region's size (floats).
size_t place_buckets(std::vector<ParamArena::Bucket>& buckets) {
  auto overlap_in_time = [](const ParamArena::Bucket& a, const ParamArena::Bucket& b) {
    return !(a.ready_stage > b.first_stage || b.ready_stage > a.first_stage);
  };
  std::vector<size_t> order(buckets.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return buckets[x].n > buckets[y].n; });
  std::vector<size_t> placed;
  size_t peak = 0;
  for (size_t i : order) {
    ParamArena::Bucket& b = buckets[i];
    std::vector<std::pair<size_t, size_t>> busy;  // [from, to) of placed buckets alive with this one
    for (size_t j : placed)
      if (overlap_in_time(b, buckets[j])) busy.emplace_back(buckets[j].grad_offset, buckets[j].grad_offset + buckets[j].n);
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto& [from, to] : busy) {
      if (at + b.n <= from) break;
      at = std::max(at, to);
    }
    b.grad_offset = at;
    peak = std::max(peak, at + b.n);
    placed.push_back(i);
  }
  // Who must be finished before a bucket's memory is reused: the buckets placed over the same floats.
  for (size_t i = 0; i < buckets.size(); ++i)
    for (size_t j = 0; j < buckets.size(); ++j) {
      const ParamArena::Bucket &a = buckets[i], &p = buckets[j];
      if (i != j && p.first_stage > a.first_stage && a.grad_offset < p.grad_offset + p.n &&
          p.grad_offset < a.grad_offset + a.n)
        buckets[i].shares_memory_with.push_back(j);
    }
  return peak;
}

}  // namespace

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
  open.first_stage = INT64_MIN;
  auto close_bucket = [&] {
    open.n = (a->total_ - open.offset + align - 1) / align * align;
    a->total_ = open.offset + open.n;
    open.shard_offset = a->shard_total_;
    open.grad_offset = open.offset;
    a->shard_total_ += open.n / layout.world_size;
    a->buckets_.push_back(open);
    open = Bucket{};
    open.offset = a->total_, open.first_stage = INT64_MIN;
  };
  for (const auto& [neg_stage, name] : order) {
    const Tensor& t = initial.at(name);
    Entry e;
    e.name = name, e.shape = t.shape, e.offset = a->total_, e.n = t.numel();
    e.decay = !(name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta"));
    a->total_ += (static_cast<size_t>(e.n) + 63) / 64 * 64;
    open.ready_stage = -neg_stage;  // the bucket's last (lowest) stage
    open.first_stage = std::max(open.first_stage, first_stage(config, name));
    e.bucket = a->buckets_.size();
    a->entries_.push_back(std::move(e));
    if (a->total_ - open.offset >= bucket_floats) close_bucket();
  }
  if (a->total_ > open.offset) close_bucket();
  a->moment_total_ = layout.zero_stage >= 1 ? a->shard_total_ : a->total_;
  a->grad_total_ = layout.zero_stage >= 2 ? place_buckets(a->buckets_) : a->total_;
  const size_t shard_grads = layout.zero_stage >= 1 ? a->shard_total_ : 0;
  const size_t floats = a->total_ + a->grad_total_ + 2 * a->moment_total_ + shard_grads;
  const size_t bytes = floats * sizeof(float);
  void* p = backend.allocate(bytes);
  if (!p)
    return out_of_range("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the parameters, gradients and moments on " +
                        backend.name());
  a->bytes_ = bytes;
  a->memory_ = runtime::DeviceBuffer(&backend, p);
  a->params_ = static_cast<float*>(p);
  a->grads_ = a->params_ + a->total_;
  a->moments_ = a->grads_ + a->grad_total_;
  a->shard_grads_ = shard_grads ? a->moments_ + 2 * a->moment_total_ : nullptr;
  BERT_RETURN_IF_ERROR(backend.zero(p, bytes));
  for (const Entry& e : a->entries_)
    BERT_RETURN_IF_ERROR(backend.upload(a->params_ + e.offset, initial.at(e.name).data, sizeof(float) * e.n));
  auto lookup = [&](float* base, bool gradients) {
    return [&, base, gradients](const std::string& name) -> const float* {
      const Entry* e = a->find(name);
      if (!e) return nullptr;
      if (!gradients) return base + e->offset;
      const Bucket& b = a->buckets_[e->bucket];
      return base + b.grad_offset + (e->offset - b.offset);
    };
  };
  BERT_RETURN_IF_ERROR(bind_weights(config, lookup(a->params_, false), a->weights_));
  BERT_RETURN_IF_ERROR(bind_weights(config, lookup(a->grads_, true), a->gradients_));
  return a;
}

const ParamArena::Entry* ParamArena::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Status ParamArena::zero_grads() {
  if (shard_grads_) BERT_RETURN_IF_ERROR(backend_->zero(shard_grads_, shard_total_ * sizeof(float)));
  return backend_->zero(grads_, grad_total_ * sizeof(float));
}

Result<const float*> ParamArena::host_params() {
  if (backend_->device() == Device::kCpu) return static_cast<const float*>(params_);
  host_params_.resize(total_);
  BERT_RETURN_IF_ERROR(backend_->download(host_params_.data(), params_, total_ * sizeof(float)));
  return static_cast<const float*>(host_params_.data());
}

Result<const float*> ParamArena::host_grads() {
  if (layout_.zero_stage >= 2)
    return unsupported("with ZeRO-2 no rank holds whole gradients (only its reduced shard)");
  if (backend_->device() == Device::kCpu) return static_cast<const float*>(grads_);
  host_grads_.resize(total_);
  BERT_RETURN_IF_ERROR(backend_->download(host_grads_.data(), grads_, total_ * sizeof(float)));
  return static_cast<const float*>(host_grads_.data());
}

Status ParamArena::set_params(const float* host) { return backend_->upload(params_, host, total_ * sizeof(float)); }

}  // namespace bert
