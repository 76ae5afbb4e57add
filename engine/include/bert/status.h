// Errors as values for the public API: Status (ok or code + message) and Result<T> (a value or a Status).
// Nothing in the engine throws across this boundary or calls exit(); every failure comes back as one of these.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace bert {

// `bytes` with every byte a terminal could act on written as \xNN: C0 controls (newline and tab
// included), DEL, C1 controls and bytes that are not valid UTF-8. Printable ASCII and valid UTF-8
// text are kept, so the result is unchanged by a second pass. Every Status message goes through it
// (a malicious file's tensor name, pickle global or TSV label cannot reach the terminal raw).
std::string printable(std::string_view bytes);

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // a caller-supplied value is wrong (shape, dtype, token id, option)
  kNotFound,         // a file, tensor or name does not exist
  kIoError,          // the OS refused a read or write
  kFormatError,      // a file's bytes do not follow its format
  kUnsupported,      // valid input this build cannot handle (a dtype, an architecture, a device)
  kOutOfRange,       // a value beyond a planned or allowed limit (batch, seq, vocab)
  kInternal,         // a bug or a library failure
  kAborted,          // another rank of a data-parallel job failed, or the job's collectives broke
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  // The message is kept printable (see printable()): bytes echoed from input cannot act on a terminal.
  Status(ErrorCode code, std::string message) : code_(code), message_(printable(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "FormatError: <message>", or "OK".
  std::string to_string() const;

  // Prefix the message with context ("loading model.safetensors: ...").
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status io_error(std::string m) { return {ErrorCode::kIoError, std::move(m)}; }
inline Status format_error(std::string m) { return {ErrorCode::kFormatError, std::move(m)}; }
inline Status unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
inline Status out_of_range(std::string m) { return {ErrorCode::kOutOfRange, std::move(m)}; }
inline Status internal_error(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }
inline Status aborted(std::string m) { return {ErrorCode::kAborted, std::move(m)}; }

// A value of T or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace bert

// Internal helpers: return early on failure.
#define BERT_CONCAT_INNER(a, b) a##b
#define BERT_CONCAT(a, b) BERT_CONCAT_INNER(a, b)
#define BERT_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::bert::Status _st = (expr);            \
    if (!_st.ok()) return _st;              \
  } while (0)
#define BERT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
#define BERT_ASSIGN_OR_RETURN(lhs, expr) \
  BERT_ASSIGN_OR_RETURN_IMPL(BERT_CONCAT(_res_, __LINE__), lhs, expr)
