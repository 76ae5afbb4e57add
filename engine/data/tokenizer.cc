// BERT WordPiece tokenizer: a from-scratch reimplementation of HuggingFace transformers' slow
// BertTokenizer (v4.30): special-token splitting and per-character lowercasing of
// PreTrainedTokenizer.tokenize, BasicTokenizer (clean text, CJK spacing, NFC, whitespace split,
// lowercase + accent stripping, punctuation split) and WordpieceTokenizer (greedy longest match).
// Unicode data (categories, case mapping, normalisation) comes from utf8proc.
#include "bert/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <unordered_map>

#include "weights/vocab.h"

namespace bert {

namespace {

using CodePoints = std::u32string;

constexpr char32_t kReplacement = 0xFFFD;
constexpr size_t kMaxCharsPerWord = 100;  // HF WordpieceTokenizer.max_input_chars_per_word

// Decodes UTF-8 like Python's bytes.decode("utf-8", "replace"): each invalid sequence becomes
// U+FFFD (overlongs, surrogates and values above U+10FFFF are invalid).
CodePoints decode_utf8(std::string_view s) {
  CodePoints out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    }
    int len;
    char32_t cp;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    int k = 1;
    for (; k < len && i + k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (cc < lo || cc > hi) : (cc & 0xC0) != 0x80) break;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (k == len) {
      out.push_back(cp);
      i += len;
    } else {
      out.push_back(kReplacement);  // the maximal invalid prefix becomes one U+FFFD
      i += k;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(const CodePoints& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

utf8proc_category_t category(char32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }

bool is_ascii(const CodePoints& cps) {
  return std::all_of(cps.begin(), cps.end(), [](char32_t c) { return c < 0x80; });
}

// Unicode normalisation of valid code points (NFC or NFD, per `options`); the input is returned
// unchanged if utf8proc refuses it (it cannot, for the valid scalar values we hand it).
CodePoints normalize(const CodePoints& cps, int options) {
  if (is_ascii(cps)) return cps;  // ASCII is invariant under NFC and NFD
  std::string utf8 = encode_utf8(cps);
  utf8proc_uint8_t* mapped = nullptr;
  utf8proc_ssize_t len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                                      static_cast<utf8proc_ssize_t>(utf8.size()), &mapped,
                                      static_cast<utf8proc_option_t>(options));
  if (len < 0 || mapped == nullptr) {
    std::free(mapped);
    return cps;
  }
  CodePoints out = decode_utf8(std::string_view(reinterpret_cast<const char*>(mapped), static_cast<size_t>(len)));
  std::free(mapped);
  return out;
}

// Python's str.lower() of one character: the full lowercase mapping. It equals the simple mapping
// except for U+0130 (İ -> "i̇"); the only other difference, final sigma, depends on context and
// never applies here because HF lowercases the text one character at a time (see tokenize_segment).
void append_lower(CodePoints& out, char32_t cp) {
  if (cp == 0x130) {
    out.push_back(U'i');
    out.push_back(0x307);
    return;
  }
  out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

CodePoints lower(const CodePoints& cps) {
  CodePoints out;
  out.reserve(cps.size());
  for (char32_t cp : cps) append_lower(out, cp);
  return out;
}

// HF _is_whitespace.
bool is_bert_whitespace(char32_t cp) {
  if (cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r') return true;
  return category(cp) == UTF8PROC_CATEGORY_ZS;
}

// HF _is_control: category C* except \t \n \r.
bool is_bert_control(char32_t cp) {
  if (cp == U'\t' || cp == U'\n' || cp == U'\r') return false;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
      return true;
    default:
      return false;
  }
}

// HF _is_punctuation: the ASCII non-alphanumeric ranges, or any category P*.
bool is_bert_punctuation(char32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126))
    return true;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// HF _is_chinese_char: the CJK Unified Ideographs blocks it lists.
bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Characters Python's str.split() splits on that can survive _clean_text (which maps every other
// whitespace to " " or drops it as a control character): " ", U+2028 (Zl), U+2029 (Zp).
bool is_split_space(char32_t cp) { return cp == U' ' || cp == 0x2028 || cp == 0x2029; }

// The special tokens HF never splits (BertTokenizer's unk, sep, pad, cls, mask tokens).
constexpr std::string_view kSpecialTokens[] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};

bool is_special_token(const CodePoints& cps) {
  if (cps.size() < 5 || cps.size() > 6) return false;
  for (std::string_view s : kSpecialTokens) {
    if (s.size() != cps.size()) continue;
    if (std::equal(s.begin(), s.end(), cps.begin(), [](char a, char32_t b) { return char32_t(a) == b; }))
      return true;
  }
  return false;
}

// Length of the special token that starts at cps[i], or 0.
size_t special_token_at(const CodePoints& cps, size_t i) {
  if (cps[i] != U'[') return 0;
  for (std::string_view s : kSpecialTokens) {
    if (i + s.size() > cps.size()) continue;
    bool match = true;
    for (size_t k = 0; k < s.size() && match; ++k) match = cps[i + k] == char32_t(s[k]);
    if (match) return s.size();
  }
  return 0;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

struct Tokenizer::Impl {
  TokenizerOptions opts;
  std::vector<std::string> vocab;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids;
  int32_t cls = -1, sep = -1, pad = -1, unk = -1, mask = -1;

  int32_t lookup(std::string_view token) const {
    auto it = ids.find(token);
    return it == ids.end() ? -1 : it->second;
  }

  // BasicTokenizer on one piece of text that contains no special token, appending the word pieces
  // of each resulting word to `out`.
  void tokenize_segment(const CodePoints& raw, std::vector<std::string>& out) const {
    // PreTrainedTokenizer.tokenize lowercases non-special text one character at a time first.
    const CodePoints& text_in = opts.lower_case ? lower(raw) : raw;
    // _clean_text, then _tokenize_chinese_chars.
    CodePoints text;
    text.reserve(text_in.size());
    for (char32_t cp : text_in) {
      if (cp == 0 || cp == kReplacement || is_bert_control(cp)) continue;
      if (is_bert_whitespace(cp)) {
        text.push_back(U' ');
      } else if (opts.tokenize_chinese_chars && is_cjk(cp)) {
        text.push_back(U' ');
        text.push_back(cp);
        text.push_back(U' ');
      } else {
        text.push_back(cp);
      }
    }
    // NFC, so that one character written two ways is one token.
    text = normalize(text, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    // Whitespace split, then per word: lowercase + strip accents, punctuation split, WordPiece.
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && is_split_space(text[i])) ++i;
      size_t start = i;
      while (i < text.size() && !is_split_space(text[i])) ++i;
      if (start == i) break;
      CodePoints word = text.substr(start, i - start);
      if (is_special_token(word)) {  // BasicTokenizer's never_split (= all special tokens)
        wordpiece(word, out);
        continue;
      }
      if (opts.lower_case) {
        word = lower(word);
        CodePoints nfd = normalize(word, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        word.clear();
        for (char32_t cp : nfd)
          if (category(cp) != UTF8PROC_CATEGORY_MN) word.push_back(cp);
      }
      size_t piece = 0;
      for (size_t k = 0; k < word.size(); ++k) {
        if (is_bert_punctuation(word[k])) {
          if (k > piece) wordpiece(word.substr(piece, k - piece), out);
          wordpiece(word.substr(k, 1), out);
          piece = k + 1;
        }
      }
      if (piece < word.size()) wordpiece(word.substr(piece), out);
    }
  }

  // WordpieceTokenizer on one word (no whitespace inside): greedy longest-match-first with "##"
  // continuations; "[UNK]" for the whole word if a piece has no match or the word is longer than
  // 100 code points.
  void wordpiece(const CodePoints& word, std::vector<std::string>& out) const {
    if (word.empty()) return;
    if (word.size() > kMaxCharsPerWord) {
      out.push_back(vocab[static_cast<size_t>(unk)]);
      return;
    }
    std::string utf8;
    std::vector<size_t> offset;  // byte offset of each code point, plus the end
    offset.reserve(word.size() + 1);
    for (char32_t cp : word) {
      offset.push_back(utf8.size());
      append_utf8(utf8, cp);
    }
    offset.push_back(utf8.size());

    const size_t first = out.size();
    std::string candidate;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      int32_t found = -1;
      for (; end > start; --end) {
        std::string_view sub(utf8.data() + offset[start], offset[end] - offset[start]);
        if (start == 0) {
          found = lookup(sub);
        } else {
          candidate.assign("##");
          candidate.append(sub);
          found = lookup(candidate);
        }
        if (found >= 0) break;
      }
      if (found < 0) {
        out.resize(first);
        out.push_back(vocab[static_cast<size_t>(unk)]);
        return;
      }
      out.push_back(vocab[static_cast<size_t>(found)]);
      start = end;
    }
  }

  std::vector<std::string> tokenize(std::string_view text_utf8) const {
    std::vector<std::string> out;
    CodePoints text = decode_utf8(text_utf8);
    // Special tokens in the text stay whole (HF's added-tokens trie split); the rest is tokenized.
    size_t seg = 0;
    for (size_t i = 0; i < text.size();) {
      size_t len = special_token_at(text, i);
      if (len == 0) {
        ++i;
        continue;
      }
      if (i > seg) tokenize_segment(text.substr(seg, i - seg), out);
      out.push_back(encode_utf8(text.substr(i, len)));
      i += len;
      seg = i;
    }
    if (seg < text.size()) tokenize_segment(text.substr(seg), out);
    return out;
  }

  int32_t id_of(const std::string& token) const {
    int32_t id = lookup(token);
    return id >= 0 ? id : unk;
  }
};

Result<Tokenizer> Tokenizer::FromVocabFile(const std::string& vocab_path, TokenizerOptions opts) {
  BERT_ASSIGN_OR_RETURN(std::vector<std::string> vocab, read_vocab_file(vocab_path));
  auto tok = FromVocab(std::move(vocab), opts);
  if (!tok.ok()) return tok.status().with_context("vocab file '" + vocab_path + "'");
  return tok;
}

Result<Tokenizer> Tokenizer::FromVocab(std::vector<std::string> vocab, TokenizerOptions opts) {
  if (vocab.empty()) return invalid_argument("tokenizer vocabulary is empty");
  if (vocab.size() > static_cast<size_t>(INT32_MAX)) return out_of_range("tokenizer vocabulary too large");
  auto impl = std::make_shared<Impl>();
  impl->opts = opts;
  impl->ids.reserve(vocab.size() * 2);
  for (size_t i = 0; i < vocab.size(); ++i) {
    auto [it, inserted] = impl->ids.emplace(vocab[i], static_cast<int32_t>(i));
    if (!inserted)
      return invalid_argument("tokenizer vocabulary: duplicate token '" + vocab[i] + "' at ids " +
                              std::to_string(it->second) + " and " + std::to_string(i));
  }
  impl->vocab = std::move(vocab);
  std::string missing;
  auto need = [&](const char* name, int32_t& slot) {
    slot = impl->lookup(name);
    if (slot < 0) missing += missing.empty() ? name : std::string(", ") + name;
  };
  need("[CLS]", impl->cls);
  need("[SEP]", impl->sep);
  need("[UNK]", impl->unk);
  need("[PAD]", impl->pad);
  if (!missing.empty())
    return invalid_argument("tokenizer vocabulary lacks required special token(s): " + missing);
  impl->mask = impl->lookup("[MASK]");
  return Tokenizer(std::move(impl));
}

std::vector<std::string> Tokenizer::Tokenize(std::string_view text) const { return impl_->tokenize(text); }

Result<Encoding> Tokenizer::Encode(std::string_view text, std::optional<std::string_view> text_pair,
                                   int max_length) const {
  const bool pair = text_pair.has_value();
  const int specials = pair ? 3 : 2;
  if (max_length < 0) return invalid_argument("max_length must be >= 0 (0 = no truncation), got " + std::to_string(max_length));
  if (max_length > 0 && max_length < specials)
    return invalid_argument("max_length " + std::to_string(max_length) + " cannot hold the " +
                            std::to_string(specials) + " special tokens of a " +
                            (pair ? "text pair" : "single text"));
  std::vector<std::string> a = impl_->tokenize(text);
  std::vector<std::string> b;
  if (pair) b = impl_->tokenize(*text_pair);

  if (max_length > 0) {
    size_t budget = static_cast<size_t>(max_length - specials);
    if (!pair) {
      if (a.size() > budget) a.resize(budget);
    } else {
      // HF "longest_first": remove one token at a time from the longer sequence (b on ties).
      size_t total = a.size() + b.size();
      if (total > budget) {
        size_t remove = total - budget;
        size_t la = a.size(), lb = b.size();
        // Equivalent closed form of the one-at-a-time loop.
        for (; remove > 0 && la != lb; --remove) (la > lb ? la : lb)--;
        la -= remove / 2;
        lb -= remove - remove / 2;
        a.resize(la);
        b.resize(lb);
      }
    }
  }

  Encoding enc;
  const size_t n = a.size() + b.size() + static_cast<size_t>(specials);
  enc.input_ids.reserve(n);
  enc.token_type_ids.reserve(n);
  enc.tokens.reserve(n);
  auto push = [&](const std::string& tok, int32_t id, int32_t type) {
    enc.tokens.push_back(tok);
    enc.input_ids.push_back(id);
    enc.token_type_ids.push_back(type);
  };
  const Impl& im = *impl_;
  push(im.vocab[static_cast<size_t>(im.cls)], im.cls, 0);
  for (const auto& t : a) push(t, im.id_of(t), 0);
  push(im.vocab[static_cast<size_t>(im.sep)], im.sep, 0);
  if (pair) {
    for (const auto& t : b) push(t, im.id_of(t), 1);
    push(im.vocab[static_cast<size_t>(im.sep)], im.sep, 1);
  }
  enc.attention_mask.assign(enc.input_ids.size(), 1);
  return enc;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  int32_t id = impl_->lookup(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string& Tokenizer::IdToToken(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || static_cast<size_t>(id) >= impl_->vocab.size()) return kEmpty;
  return impl_->vocab[static_cast<size_t>(id)];
}

int32_t Tokenizer::cls_id() const { return impl_->cls; }
int32_t Tokenizer::sep_id() const { return impl_->sep; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }
int32_t Tokenizer::mask_id() const { return impl_->mask; }
size_t Tokenizer::vocab_size() const { return impl_->vocab.size(); }
const std::vector<std::string>& Tokenizer::vocab() const { return impl_->vocab; }
const TokenizerOptions& Tokenizer::options() const { return impl_->opts; }

EncodedBatch pad_batch(const std::vector<Encoding>& encodings, int32_t pad_id) {
  EncodedBatch out;
  size_t seq = 0;
  for (const auto& e : encodings) seq = std::max(seq, e.input_ids.size());
  out.batch = static_cast<int>(encodings.size());
  out.seq = static_cast<int>(seq);
  const size_t total = encodings.size() * seq;
  out.input_ids.assign(total, pad_id);
  out.token_type_ids.assign(total, 0);
  out.attention_mask.assign(total, 0);
  for (size_t r = 0; r < encodings.size(); ++r) {
    const Encoding& e = encodings[r];
    const size_t n = e.input_ids.size();
    std::copy(e.input_ids.begin(), e.input_ids.end(), out.input_ids.begin() + r * seq);
    for (size_t k = 0; k < n; ++k) {
      out.token_type_ids[r * seq + k] = k < e.token_type_ids.size() ? e.token_type_ids[k] : 0;
      out.attention_mask[r * seq + k] = k < e.attention_mask.size() ? e.attention_mask[k] : 1;
    }
  }
  return out;
}

}  // namespace bert
