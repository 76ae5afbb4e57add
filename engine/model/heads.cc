// Every head of the network in one place each: its buffers, forward, named outputs, loss (as
// transformers defines it) and backward into dL/d(last hidden state). Heads run the same code for
// inference and training (dropout is off in inference). The pooler's forward and backward belong to
// the network (engine/model/network.cc); heads on it read `pooled` and call pooler_backward.
#include <algorithm>

#include "engine/model/net.h"

namespace bert::model {

namespace {

using kernels::Activation;

// Integer labels: present, and each in [0, classes) or -100 (ignored).
Status check_classes(const int32_t* v, int64_t n, int64_t classes, const char* head, const char* what,
                     const char* size_name) {
  if (!v) return invalid_argument(std::string("the ") + head + " head needs labels '" + what + "'");
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != -100 && (v[i] < 0 || v[i] >= classes))
      return out_of_range(std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                          " is outside 0.." + std::to_string(classes - 1) + " (" + size_name + ") and is not -100");
  return Status::Ok();
}

// Registers loss slot `slot` with `weight` and returns its backend pointer.
kernels::LossSum* loss_slot(Network::Impl& n, size_t slot, double weight) {
  n.loss_terms.push_back({slot, weight});
  return n.loss_slot(slot);
}

// No head: the base model's outputs only (nothing to train).
class NoHead final : public Head {
 public:
  std::vector<std::string> output_names() const override { return {}; }
  Status check_labels(const TrainLabels&, int64_t, int64_t) const override {
    return invalid_argument("a base model (no head) has no loss to train; use a model with a head");
  }
  void plan(Plan&, int64_t, int64_t, bool) override {}
  void forward(Network::Impl&, int64_t, int64_t) override {}
  void publish(Network::Impl&, int64_t, int64_t) override {}
  void loss_backward(Network::Impl& n, const TrainLabels&, int64_t, int64_t, float, const BertWeights&) override {
    n.ops->check(invalid_argument("a base model (no head) has no loss to train; use a model with a head"));
  }
};

// Sequence classification: pooler -> dropout -> classifier (BERT, ALBERT), or first token -> dropout ->
// dense -> activation -> dropout -> classifier (RoBERTa, DistilBERT, ELECTRA). num_labels 1 is regression (MSE).
class SequenceClassification final : public Head {
 public:
  explicit SequenceClassification(const ModelConfig& c) : c_(c) {}
  std::vector<std::string> output_names() const override { return {"logits"}; }
  Status check_labels(const TrainLabels& y, int64_t B, int64_t) const override {
    if (c_.num_labels != 1)
      return check_classes(y.labels, B, c_.num_labels, "sequence_classification", "labels", "num_labels");
    if (!y.regression) return invalid_argument("num_labels 1 is regression: it needs float labels 'labels'");
    return Status::Ok();
  }
  void plan(Plan& p, int64_t B, int64_t S, bool training) override {
    const int64_t H = c_.hidden_size;
    cls_in_ = p.add(B * H);
    if (!c_.classifier_on_pooler) first_ = p.add(B * H), first_pre_ = p.add(B * H);
    logits_ = p.add(B * c_.num_labels);
    if (training) d_logits_ = p.add(B * c_.num_labels), d_x_ = p.add(B * H), d_y_ = p.add(B * H), labels_ = p.add(B);
  }
  void forward(Network::Impl& n, int64_t B, int64_t S) override {
    Ops& ops = *n.ops;
    const int64_t H = c_.hidden_size;
    float* cin = n.at(cls_in_);
    if (c_.classifier_on_pooler) {
      ops.dropout(cin, B * H, kClassifierInSite, n.at(n.pooled));
    } else {
      ops.check(ops.backend().copy_rows(n.last_hidden(), S * H, n.at(first_), H, B, H));
      ops.dropout(n.at(first_), B * H, kClassifierInSite);
      ops.linear("head", n.at(first_), n.w->pre_classifier, n.at(first_pre_), B);
      ops.copy(n.at(first_pre_), cin, B * H);
      ops.activation(cin, B * H, to_activation(c_.classifier_act));
      ops.dropout(cin, B * H, kClassifierHiddenSite);
    }
    ops.linear("head", cin, n.w->classifier, n.at(logits_), B);
  }
  void publish(Network::Impl& n, int64_t B, int64_t) override { n.publish("logits", {B, c_.num_labels}, n.at(logits_)); }
  void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                     const BertWeights& g) override {
    Ops& ops = *n.ops;
    const int64_t H = c_.hidden_size, L = c_.num_labels;
    if (L == 1) {
      float* target = n.at(labels_);
      ops.check(ops.backend().upload(target, y.regression, sizeof(float) * B));
      ops.check(ops.backend().mse({n.at(logits_), target, n.at(d_logits_), B, loss_scale}, loss_slot(n, 0, 1.0)));
    } else {
      kernels::CrossEntropyArgs a;
      a.logits = n.at(logits_), a.targets = n.upload_ints(labels_, y.labels, B), a.dlogits = n.at(d_logits_);
      a.rows = B, a.classes = L, a.grad_scale = loss_scale;
      ops.check(ops.backend().cross_entropy(a, loss_slot(n, 0, 1.0)));
    }
    float* d_cin = n.at(d_x_);
    ops.linear_backward("backward.head", n.w->classifier, g.classifier, n.at(cls_in_), n.at(d_logits_), d_cin, B, false);
    if (c_.classifier_on_pooler) {
      ops.dropout(d_cin, B * H, kClassifierInSite);
      n.pooler_backward(d_cin, g);
    } else {
      ops.dropout(d_cin, B * H, kClassifierHiddenSite);
      ops.activation_backward(n.at(first_pre_), d_cin, B * H, to_activation(c_.classifier_act));
      float* d_first = n.at(d_y_);
      ops.linear_backward("backward.head", n.w->pre_classifier, g.pre_classifier, n.at(first_), d_cin, d_first, B, false);
      ops.dropout(d_first, B * H, kClassifierInSite);
      ops.check(ops.backend().add_rows(d_first, H, n.at(n.d_h), S * H, B, H));
    }
  }

 private:
  const ModelConfig& c_;
  Buf cls_in_, first_, first_pre_, logits_, d_logits_, d_x_, d_y_, labels_;
};

// Token classification: dropout -> classifier on every token.
class TokenClassification final : public Head {
 public:
  explicit TokenClassification(const ModelConfig& c) : c_(c) {}
  std::vector<std::string> output_names() const override { return {"logits"}; }
  Status check_labels(const TrainLabels& y, int64_t B, int64_t S) const override {
    return check_classes(y.labels, B * S, c_.num_labels, "token_classification", "labels", "num_labels");
  }
  void plan(Plan& p, int64_t B, int64_t S, bool training) override {
    const int64_t T = B * S, H = c_.hidden_size;
    logits_ = p.add(T * c_.num_labels);
    if (training) cls_in_ = p.add(T * H), d_logits_ = p.add(T * c_.num_labels), d_x_ = p.add(T * H), labels_ = p.add(T);
  }
  // The classifier's input: the last hidden state, or its dropped-out copy.
  const float* input(Network::Impl& n) const {
    return n.ops->dropping() ? n.at(cls_in_) : n.last_hidden();
  }
  void forward(Network::Impl& n, int64_t B, int64_t S) override {
    const int64_t T = B * S, H = c_.hidden_size;
    if (n.ops->dropping()) n.ops->dropout(n.at(cls_in_), T * H, kClassifierInSite, n.last_hidden());
    n.ops->linear("head", input(n), n.w->classifier, n.at(logits_), T);
  }
  void publish(Network::Impl& n, int64_t B, int64_t S) override {
    n.publish("logits", {B, S, c_.num_labels}, n.at(logits_));
  }
  void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                     const BertWeights& g) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S, H = c_.hidden_size;
    kernels::CrossEntropyArgs a;
    a.logits = n.at(logits_), a.targets = n.upload_ints(labels_, y.labels, T), a.dlogits = n.at(d_logits_);
    a.rows = T, a.classes = c_.num_labels, a.grad_scale = loss_scale;
    ops.check(ops.backend().cross_entropy(a, loss_slot(n, 0, 1.0)));
    ops.linear_backward("backward.head", n.w->classifier, g.classifier, input(n), n.at(d_logits_), n.at(d_x_), T, false);
    ops.dropout(n.at(d_x_), T * H, kClassifierInSite);
    ops.check(ops.backend().add(n.at(n.d_h), n.at(d_x_), n.at(n.d_h), T * H));
  }

 private:
  const ModelConfig& c_;
  Buf cls_in_, logits_, d_logits_, d_x_, labels_;
};

// Question answering: qa_outputs [T, 2] -> start and end logits per token; the loss is the mean of
// the start and end cross-entropies over the sequence, positions clamped to [0, S] (S is ignored).
class QuestionAnswering final : public Head {
 public:
  explicit QuestionAnswering(const ModelConfig& c) : c_(c) {}
  std::vector<std::string> output_names() const override { return {"start_logits", "end_logits"}; }
  Status check_labels(const TrainLabels& y, int64_t, int64_t) const override {
    if (!y.start_positions || !y.end_positions)
      return invalid_argument("the question_answering head needs 'start_positions' and 'end_positions'");
    return Status::Ok();
  }
  void plan(Plan& p, int64_t B, int64_t S, bool training) override {
    const int64_t T = B * S;
    logits_ = p.add(2 * T), start_ = p.add(T), end_ = p.add(T);
    if (training) {
      d_logits_ = p.add(2 * T), d_start_ = p.add(T), d_end_ = p.add(T);
      starts_ = p.add(B), ends_ = p.add(B);
      host_.resize(2 * B);
    }
  }
  void forward(Network::Impl& n, int64_t B, int64_t S) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S;
    ops.linear("head", n.last_hidden(), n.w->qa, n.at(logits_), T);
    ops.check(ops.backend().copy_rows(n.at(logits_), 2, n.at(start_), 1, T, 1));
    ops.check(ops.backend().copy_rows(n.at(logits_) + 1, 2, n.at(end_), 1, T, 1));
  }
  void publish(Network::Impl& n, int64_t B, int64_t S) override {
    n.publish("start_logits", {B, S}, n.at(start_));
    n.publish("end_logits", {B, S}, n.at(end_));
  }
  void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                     const BertWeights& g) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S;
    const int32_t s32 = static_cast<int32_t>(S);
    for (int64_t b = 0; b < B; ++b) {
      host_[b] = std::clamp<int32_t>(y.start_positions[b], 0, s32);
      host_[B + b] = std::clamp<int32_t>(y.end_positions[b], 0, s32);
    }
    const int32_t* starts = n.upload_ints(starts_, host_.data(), B);
    const int32_t* ends = n.upload_ints(ends_, host_.data() + B, B);
    for (int side = 0; side < 2; ++side) {
      kernels::CrossEntropyArgs a;
      a.logits = n.at(side ? end_ : start_), a.targets = side ? ends : starts;
      a.dlogits = n.at(side ? d_end_ : d_start_), a.rows = B, a.classes = S, a.ignore_index = s32;
      a.grad_scale = 0.5f * loss_scale;
      ops.check(ops.backend().cross_entropy(a, loss_slot(n, side, 0.5)));
    }
    ops.check(ops.backend().copy_rows(n.at(d_start_), 1, n.at(d_logits_), 2, T, 1));
    ops.check(ops.backend().copy_rows(n.at(d_end_), 1, n.at(d_logits_) + 1, 2, T, 1));
    ops.linear_backward("backward.head", n.w->qa, g.qa, n.last_hidden(), n.at(d_logits_), n.at(n.d_h), T, true);
  }

 private:
  const ModelConfig& c_;
  Buf logits_, start_, end_, d_logits_, d_start_, d_end_, starts_, ends_;
  std::vector<int32_t> host_;
};

// ELECTRA's discriminator: per token dense -> hidden_act -> one logit; BCE over attended tokens.
class Discriminator final : public Head {
 public:
  explicit Discriminator(const ModelConfig& c) : c_(c) {}
  std::vector<std::string> output_names() const override { return {"logits"}; }
  Status check_labels(const TrainLabels& y, int64_t B, int64_t S) const override {
    return check_classes(y.labels, B * S, 2, "discriminator", "labels", "0 or 1");
  }
  void plan(Plan& p, int64_t B, int64_t S, bool training) override {
    const int64_t T = B * S, H = c_.hidden_size;
    pre_ = p.add(T * H), act_ = p.add(T * H), logits_ = p.add(T);
    if (training) d_logits_ = p.add(T), d_x_ = p.add(T * H), targets_ = p.add(T), host_.resize(T);
  }
  void forward(Network::Impl& n, int64_t B, int64_t S) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S, H = c_.hidden_size;
    ops.linear("head", n.last_hidden(), n.w->disc_dense, n.at(pre_), T);
    ops.copy(n.at(pre_), n.at(act_), T * H);
    ops.activation(n.at(act_), T * H, to_activation(c_.hidden_act));
    ops.linear("head", n.at(act_), n.w->disc_out, n.at(logits_), T);
  }
  void publish(Network::Impl& n, int64_t B, int64_t S) override { n.publish("logits", {B, S}, n.at(logits_)); }
  void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                     const BertWeights& g) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S, H = c_.hidden_size;
    for (int64_t t = 0; t < T; ++t) host_[t] = static_cast<float>(y.labels[t]);
    ops.check(ops.backend().upload(n.at(targets_), host_.data(), sizeof(float) * T));
    kernels::BceWithLogitsArgs a;
    a.logits = n.at(logits_), a.targets = n.at(targets_), a.mask = n.d_mask, a.dlogits = n.at(d_logits_);
    a.n = T, a.grad_scale = loss_scale;
    ops.check(ops.backend().bce_with_logits(a, loss_slot(n, 0, 1.0)));
    ops.linear_backward("backward.head", n.w->disc_out, g.disc_out, n.at(act_), n.at(d_logits_), n.at(d_x_), T, false);
    ops.activation_backward(n.at(pre_), n.at(d_x_), T * H, to_activation(c_.hidden_act));
    ops.linear_backward("backward.head", n.w->disc_dense, g.disc_dense, n.last_hidden(), n.at(d_x_), n.at(n.d_h), T, true);
  }

 private:
  const ModelConfig& c_;
  Buf pre_, act_, logits_, d_logits_, d_x_, targets_;
  std::vector<float> host_;
};

// Masked LM: transform (dense -> activation -> LayerNorm) -> decoder (tied to the word embeddings
// unless the checkpoint has its own); pre-training adds NSP (or ALBERT's SOP) on the pooler output.
class MaskedLM final : public Head {
 public:
  explicit MaskedLM(const ModelConfig& c) : c_(c), pretraining_(c.head == HeadKind::kPreTraining) {}
  std::vector<std::string> output_names() const override {
    if (!pretraining_) return {"logits"};
    return {"prediction_logits", c_.sentence_head_output()};
  }
  Status check_labels(const TrainLabels& y, int64_t B, int64_t S) const override {
    const char* head = pretraining_ ? "pretraining" : "masked_lm";
    BERT_RETURN_IF_ERROR(check_classes(y.labels, B * S, c_.vocab_size, head, "labels", "vocab_size"));
    if (!pretraining_) return Status::Ok();
    return check_classes(y.sentence_labels, B, 2, head,
                         c_.family == ModelFamily::kAlbert ? "sentence_order_label" : "next_sentence_label",
                         "2 classes");
  }
  void plan(Plan& p, int64_t B, int64_t S, bool training) override {
    const int64_t T = B * S, E = c_.embedding_size, V = c_.vocab_size;
    pre_ = p.add(T * E), act_ = p.add(T * E), ln_ = p.add(T * E), logits_ = p.add(T * V);
    if (pretraining_) sentence_ = p.add(2 * B);
    if (training) {
      d_logits_ = p.add(T * V), d_ln_ = p.add(T * E), labels_ = p.add(T);
      if (pretraining_) d_sentence_ = p.add(2 * B), d_pooled_ = p.add(B * c_.hidden_size), sentence_labels_ = p.add(B);
    }
  }
  void forward(Network::Impl& n, int64_t B, int64_t S) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S, E = c_.embedding_size;
    ops.linear("head", n.last_hidden(), n.w->mlm_transform, n.at(pre_), T);
    ops.copy(n.at(pre_), n.at(act_), T * E);
    ops.activation(n.at(act_), T * E, to_activation(c_.mlm_act));
    ops.layernorm(n.at(act_), nullptr, n.w->mlm_ln, n.at(ln_), T, E);
    ops.linear("head.mlm_decoder", n.at(ln_), n.w->mlm_decoder, n.at(logits_), T);
    if (pretraining_) ops.linear("head", n.at(n.pooled), n.w->nsp, n.at(sentence_), B);
  }
  void publish(Network::Impl& n, int64_t B, int64_t S) override {
    if (!pretraining_) {
      n.publish("logits", {B, S, c_.vocab_size}, n.at(logits_));
      return;
    }
    n.publish("prediction_logits", {B, S, c_.vocab_size}, n.at(logits_));
    n.publish(c_.sentence_head_output(), {B, 2}, n.at(sentence_));
  }
  void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                     const BertWeights& g) override {
    Ops& ops = *n.ops;
    const int64_t T = B * S, E = c_.embedding_size;
    kernels::CrossEntropyArgs a;
    a.logits = n.at(logits_), a.targets = n.upload_ints(labels_, y.labels, T), a.dlogits = n.at(d_logits_);
    a.rows = T, a.classes = c_.vocab_size, a.grad_scale = loss_scale;
    ops.check(ops.backend().cross_entropy(a, loss_slot(n, 0, 1.0)));
    float* d_ln = n.at(d_ln_);
    ops.linear_backward("backward.head", n.w->mlm_decoder, g.mlm_decoder, n.at(ln_), n.at(d_logits_), d_ln, T, false);
    ops.layernorm_backward(n.at(act_), n.w->mlm_ln, g.mlm_ln, d_ln, d_ln, T, E);
    ops.activation_backward(n.at(pre_), d_ln, T * E, to_activation(c_.mlm_act));
    ops.linear_backward("backward.head", n.w->mlm_transform, g.mlm_transform, n.last_hidden(), d_ln, n.at(n.d_h), T, true);
    if (!pretraining_) return;
    kernels::CrossEntropyArgs s;
    s.logits = n.at(sentence_), s.targets = n.upload_ints(sentence_labels_, y.sentence_labels, B);
    s.dlogits = n.at(d_sentence_), s.rows = B, s.classes = 2, s.grad_scale = loss_scale;
    ops.check(ops.backend().cross_entropy(s, loss_slot(n, 1, 1.0)));
    ops.linear_backward("backward.head", n.w->nsp, g.nsp, n.at(n.pooled), n.at(d_sentence_), n.at(d_pooled_), B, false);
    n.pooler_backward(n.at(d_pooled_), g);
  }

 private:
  const ModelConfig& c_;
  bool pretraining_;
  Buf pre_, act_, ln_, logits_, sentence_, d_logits_, d_ln_, labels_, d_sentence_, d_pooled_, sentence_labels_;
};

}  // namespace

std::unique_ptr<Head> make_head(const ModelConfig& c) {
  switch (c.head) {
    case HeadKind::kNone: return std::make_unique<NoHead>();
    case HeadKind::kSequenceClassification: return std::make_unique<SequenceClassification>(c);
    case HeadKind::kTokenClassification: return std::make_unique<TokenClassification>(c);
    case HeadKind::kQuestionAnswering: return std::make_unique<QuestionAnswering>(c);
    case HeadKind::kDiscriminator: return std::make_unique<Discriminator>(c);
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining: return std::make_unique<MaskedLM>(c);
  }
  return std::make_unique<NoHead>();
}

std::vector<std::string> head_output_names(const ModelConfig& c) { return make_head(c)->output_names(); }

Status check_head_labels(const ModelConfig& c, const TrainLabels& y, int64_t batch, int64_t seq) {
  return make_head(c)->check_labels(y, batch, seq);
}

}  // namespace bert::model
