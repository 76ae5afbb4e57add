// ParamArena (engine/train/param_arena.h): one allocation holding the parameter and gradient regions.
#include "engine/train/param_arena.h"

#include <cstring>

namespace bert {

Result<std::unique_ptr<ParamArena>> ParamArena::Create(runtime::Backend& backend, const ModelConfig& config,
                                                       const TensorMap& initial) {
  auto a = std::unique_ptr<ParamArena>(new ParamArena());
  a->backend_ = &backend;
  for (const auto& [name, t] : initial) {  // name order: the order checkpoints and optimizers see
    if (t.dtype != DType::kF32) return internal_error("parameter '" + name + "' is not F32");
    Entry e;
    e.name = name, e.shape = t.shape, e.offset = a->total_, e.n = t.numel();
    e.decay = !(name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta"));
    a->total_ += (static_cast<size_t>(e.n) + 63) / 64 * 64;
    a->entries_.push_back(std::move(e));
  }
  const size_t bytes = 4 * a->total_ * sizeof(float);  // parameters, gradients, m, v
  void* p = backend.allocate(bytes);
  if (!p)
    return out_of_range("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the parameters, gradients and moments on " +
                        backend.name());
  a->memory_ = runtime::DeviceBuffer(&backend, p);
  a->params_ = static_cast<float*>(p);
  a->grads_ = a->params_ + a->total_;
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
