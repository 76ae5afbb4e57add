// The restricted unpickler for torch.save's data.pkl: a small stack machine over an arena of values.
// Nothing it reads is ever executed; only a fixed allow-list of globals may appear, and the only
// calls (REDUCE) it interprets are OrderedDict(), _rebuild_tensor_v2(...) and _rebuild_parameter(...),
// which it evaluates symbolically. Values live in an arena (no recursion on destruction, cycles are
// harmless); the value count, nesting depth and input size are all capped.
#include "weights/pickle_reader.h"

#include <cstring>
#include <memory>
#include <new>
#include <unordered_map>

namespace bert {

namespace {

constexpr size_t kMaxPickleBytes = size_t{256} << 20;
constexpr size_t kMaxValues = size_t{1} << 22;
constexpr int kMaxDepth = 128;
constexpr size_t kMaxDims = 64;

enum class Kind { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
enum class GlobalKind { kOrderedDict, kRebuildTensorV2, kRebuildParameter, kStorageType };

struct Value {
  Kind kind = Kind::kNone;
  int depth = 0;  // container nesting below this value (0 for scalars)
  int64_t i = 0;  // kInt, kBool
  double f = 0;   // kFloat
  std::string s;  // kStr; kGlobal: "module.name"
  GlobalKind global = GlobalKind::kOrderedDict;
  DType dtype = DType::kF32;              // kGlobal of kStorageType
  std::vector<Value*> items;              // kTuple, kList
  std::vector<std::pair<Value*, Value*>> dict;  // kDict
  std::unique_ptr<TorchStorageRef> storage;     // kStorage
  std::unique_ptr<TorchTensorRef> tensor;       // kTensor
};

std::string kind_name(const Value* v) {
  switch (v->kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global '" + v->s + "'";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

struct StorageName {
  const char* name;
  DType dtype;
};
constexpr StorageName kStorageTypes[] = {
    {"FloatStorage", DType::kF32},  {"HalfStorage", DType::kF16}, {"BFloat16Storage", DType::kBF16},
    {"DoubleStorage", DType::kF64}, {"LongStorage", DType::kI64}, {"IntStorage", DType::kI32},
    {"ShortStorage", DType::kI16},  {"CharStorage", DType::kI8},  {"ByteStorage", DType::kU8},
    {"BoolStorage", DType::kBool},
};

std::string opcode_text(uint8_t op) {
  static const char kHex[] = "0123456789abcdef";
  std::string s = "0x";
  s.push_back(kHex[op >> 4]);
  s.push_back(kHex[op & 15]);
  if (op >= 0x21 && op < 0x7f) {
    s += " ('";
    s.push_back(static_cast<char>(op));
    s += "')";
  }
  return s;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& path)
      : d_(data), n_(size), path_(path) {}

  Result<Value*> run();

 private:
  // ---- errors ----
  Status fail(const std::string& what) const {
    return format_error(path_ + ": pickle opcode " + opcode_text(op_) + " at offset " +
                        std::to_string(op_pos_) + ": " + what);
  }
  Status truncated() const {
    return format_error(path_ + ": pickle ends inside opcode " + opcode_text(op_) +
                        " at offset " + std::to_string(op_pos_) + " (truncated data.pkl)");
  }

  // ---- input ----
  bool have(uint64_t k) const { return k <= n_ - pos_; }
  uint64_t le(size_t k) {  // caller checked have(k)
    uint64_t v = 0;
    for (size_t j = 0; j < k; ++j) v |= static_cast<uint64_t>(d_[pos_ + j]) << (8 * j);
    pos_ += k;
    return v;
  }

  // ---- values ----
  Result<Value*> make(Kind k) {
    if (arena_.size() >= kMaxValues)
      return Status(fail("more than " + std::to_string(kMaxValues) +
                         " objects; refusing such a large pickle"));
    arena_.push_back(std::make_unique<Value>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Result<Value*> pop() {
    if (stack_.size() <= floor()) return Status(fail("pops from an empty stack (malformed pickle)"));
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Result<Value*> top() {
    if (stack_.size() <= floor()) return Status(fail("needs a value but the stack is empty"));
    return stack_.back();
  }
  Result<std::vector<Value*>> pop_mark() {
    if (marks_.empty()) return Status(fail("has no MARK to pop to (malformed pickle)"));
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Status note_child(Value* parent, const Value* child) {
    int d = child->depth + 1;
    if (d > parent->depth) parent->depth = d;
    if (parent->depth > kMaxDepth)
      return fail("objects nested more than " + std::to_string(kMaxDepth) + " deep");
    return Status::Ok();
  }
  Status push_int(int64_t v) {
    BERT_ASSIGN_OR_RETURN(Value * x, make(Kind::kInt));
    x->i = v;
    stack_.push_back(x);
    return Status::Ok();
  }
  Status push_str(uint64_t len) {
    if (!have(len)) return truncated();
    BERT_ASSIGN_OR_RETURN(Value * x, make(Kind::kStr));
    x->s.assign(reinterpret_cast<const char*>(d_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    stack_.push_back(x);
    return Status::Ok();
  }
  Status push_tuple(std::vector<Value*> items) {
    BERT_ASSIGN_OR_RETURN(Value * t, make(Kind::kTuple));
    for (Value* v : items) BERT_RETURN_IF_ERROR(note_child(t, v));
    t->items = std::move(items);
    stack_.push_back(t);
    return Status::Ok();
  }
  Status memo_put(uint64_t idx) {
    BERT_ASSIGN_OR_RETURN(Value * v, top());
    memo_[idx] = v;
    return Status::Ok();
  }
  Status memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end())
      return fail("reads memo entry " + std::to_string(idx) + ", which was never stored");
    stack_.push_back(it->second);
    return Status::Ok();
  }
  Result<std::string> read_line() {
    const void* nl = std::memchr(d_ + pos_, '\n', n_ - pos_);
    if (nl == nullptr) return Status(truncated());
    size_t end = static_cast<size_t>(static_cast<const uint8_t*>(nl) - d_);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), end - pos_);
    pos_ = end + 1;
    return s;
  }

  Status global(const std::string& module, const std::string& name);
  Status reduce();
  Status build();
  Status persistent_load();
  Status set_items(std::vector<Value*> kv);
  Status append_items(std::vector<Value*> items);
  Status step();

  const uint8_t* d_;
  size_t n_;
  const std::string& path_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  bool stopped_ = false;
  Value* result_ = nullptr;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  std::unordered_map<std::string, DType> storage_dtypes_;
};

Status Unpickler::global(const std::string& module, const std::string& name) {
  BERT_ASSIGN_OR_RETURN(Value * g, make(Kind::kGlobal));
  g->s = module + "." + name;
  if (module == "collections" && name == "OrderedDict") {
    g->global = GlobalKind::kOrderedDict;
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    g->global = GlobalKind::kRebuildTensorV2;
  } else if (module == "torch._utils" && name == "_rebuild_parameter") {
    g->global = GlobalKind::kRebuildParameter;
  } else {
    bool found = false;
    if (module == "torch") {
      for (const auto& st : kStorageTypes) {
        if (name == st.name) {
          g->global = GlobalKind::kStorageType;
          g->dtype = st.dtype;
          found = true;
        }
      }
    }
    if (!found)
      return format_error(path_ + ": pickle references '" + g->s +
                          "', which is not tensor data; refusing to load (offset " +
                          std::to_string(op_pos_) + ")");
  }
  stack_.push_back(g);
  return Status::Ok();
}

Status Unpickler::reduce() {
  BERT_ASSIGN_OR_RETURN(Value * args, pop());
  BERT_ASSIGN_OR_RETURN(Value * fn, pop());
  if (fn->kind != Kind::kGlobal)
    return fail("REDUCE calls a " + kind_name(fn) + ", not an allowed global");
  if (args->kind != Kind::kTuple)
    return fail("REDUCE of '" + fn->s + "' with arguments of type " + kind_name(args) +
                " instead of a tuple");
  const auto& a = args->items;
  switch (fn->global) {
    case GlobalKind::kOrderedDict: {
      if (!a.empty()) return fail("OrderedDict(...) with arguments is not supported");
      BERT_ASSIGN_OR_RETURN(Value * d, make(Kind::kDict));
      stack_.push_back(d);
      return Status::Ok();
    }
    case GlobalKind::kRebuildParameter: {
      // _rebuild_parameter(data, requires_grad, backward_hooks): the parameter is its data.
      if (a.size() != 3 || a[0]->kind != Kind::kTensor)
        return fail("_rebuild_parameter expects (tensor, requires_grad, backward_hooks)");
      stack_.push_back(a[0]);
      return Status::Ok();
    }
    case GlobalKind::kStorageType:
      return fail("REDUCE calls storage type '" + fn->s + "', which is not allowed");
    case GlobalKind::kRebuildTensorV2:
      break;
  }
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  const std::string f = "_rebuild_tensor_v2";
  if (a.size() != 6 && a.size() != 7)
    return fail(f + " expects 6 or 7 arguments, got " + std::to_string(a.size()));
  if (a[0]->kind != Kind::kStorage)
    return fail(f + ": argument 0 is a " + kind_name(a[0]) + ", not a storage");
  if (a[1]->kind != Kind::kInt || a[1]->i < 0)
    return fail(f + ": storage_offset is not a non-negative int");
  auto ints = [&](const Value* v, const char* what, std::vector<int64_t>* out) -> Status {
    if (v->kind != Kind::kTuple && v->kind != Kind::kList)
      return fail(f + ": " + what + " is a " + kind_name(v) + ", not a tuple");
    if (v->items.size() > kMaxDims)
      return fail(f + ": " + what + " has more than " + std::to_string(kMaxDims) + " dims");
    for (const Value* x : v->items) {
      if (x->kind != Kind::kInt || x->i < 0)
        return fail(f + ": " + what + " holds a value that is not a non-negative int");
      out->push_back(x->i);
    }
    return Status::Ok();
  };
  auto t = std::make_unique<TorchTensorRef>();
  t->storage = *a[0]->storage;
  t->storage_offset = a[1]->i;
  BERT_RETURN_IF_ERROR(ints(a[2], "size", &t->size));
  BERT_RETURN_IF_ERROR(ints(a[3], "stride", &t->stride));
  if (t->size.size() != t->stride.size())
    return fail(f + ": size has " + std::to_string(t->size.size()) + " dims but stride has " +
                std::to_string(t->stride.size()));
  if (a[4]->kind != Kind::kBool && a[4]->kind != Kind::kInt)
    return fail(f + ": requires_grad is a " + kind_name(a[4]) + ", not a bool");
  if (a[5]->kind != Kind::kDict && a[5]->kind != Kind::kNone)
    return fail(f + ": backward_hooks is a " + kind_name(a[5]) + ", not a dict");
  BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kTensor));
  v->tensor = std::move(t);
  stack_.push_back(v);
  return Status::Ok();
}

Status Unpickler::build() {
  BERT_ASSIGN_OR_RETURN(Value * state, pop());
  (void)state;
  BERT_ASSIGN_OR_RETURN(Value * obj, top());
  // A state dict is an OrderedDict whose `_metadata` attribute arrives through BUILD: ignore it.
  if (obj->kind != Kind::kDict)
    return fail("BUILD on a " + kind_name(obj) + " is not supported (only on a dict)");
  return Status::Ok();
}

Status Unpickler::persistent_load() {
  BERT_ASSIGN_OR_RETURN(Value * pid, pop());
  const char* want = "a persistent id ('storage', storage_type, key, location, numel)";
  if (pid->kind != Kind::kTuple || pid->items.size() != 5)
    return fail(std::string("expected ") + want + ", got a " + kind_name(pid));
  const auto& a = pid->items;
  if (a[0]->kind != Kind::kStr || a[0]->s != "storage")
    return fail(std::string("expected ") + want + "; the first item is not 'storage'");
  if (a[1]->kind != Kind::kGlobal || a[1]->global != GlobalKind::kStorageType)
    return fail(std::string("expected ") + want + "; the storage type is a " + kind_name(a[1]));
  if (a[2]->kind != Kind::kStr || a[3]->kind != Kind::kStr)
    return fail(std::string("expected ") + want + "; key or location is not a str");
  if (a[4]->kind != Kind::kInt || a[4]->i < 0)
    return fail(std::string("expected ") + want + "; numel is not a non-negative int");
  auto [it, fresh] = storage_dtypes_.emplace(a[2]->s, a[1]->dtype);
  if (!fresh && it->second != a[1]->dtype)
    return fail("storage '" + a[2]->s + "' is used with two different element types");
  BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kStorage));
  v->storage = std::make_unique<TorchStorageRef>();
  v->storage->dtype = a[1]->dtype;
  v->storage->key = a[2]->s;
  v->storage->location = a[3]->s;
  v->storage->numel = a[4]->i;
  stack_.push_back(v);
  return Status::Ok();
}

Status Unpickler::set_items(std::vector<Value*> kv) {
  BERT_ASSIGN_OR_RETURN(Value * d, top());
  if (d->kind != Kind::kDict) return fail("sets items on a " + kind_name(d) + ", not a dict");
  if (kv.size() % 2 != 0) return fail("has an odd number of keys and values");
  for (size_t j = 0; j < kv.size(); j += 2) {
    BERT_RETURN_IF_ERROR(note_child(d, kv[j]));
    BERT_RETURN_IF_ERROR(note_child(d, kv[j + 1]));
    d->dict.emplace_back(kv[j], kv[j + 1]);
  }
  return Status::Ok();
}

Status Unpickler::append_items(std::vector<Value*> items) {
  BERT_ASSIGN_OR_RETURN(Value * l, top());
  if (l->kind != Kind::kList) return fail("appends to a " + kind_name(l) + ", not a list");
  for (Value* v : items) {
    BERT_RETURN_IF_ERROR(note_child(l, v));
    l->items.push_back(v);
  }
  return Status::Ok();
}

Status Unpickler::step() {
  op_pos_ = pos_;
  op_ = d_[pos_++];
  switch (op_) {
    case 0x80: {  // PROTO
      if (!have(1)) return truncated();
      uint64_t p = le(1);
      if (p > 5) return fail("pickle protocol " + std::to_string(p) + " is not supported");
      return Status::Ok();
    }
    case 0x95:  // FRAME: an 8-byte length hint; the frame's opcodes follow inline
      if (!have(8)) return truncated();
      le(8);
      return Status::Ok();
    case '.': {  // STOP
      BERT_ASSIGN_OR_RETURN(result_, pop());
      stopped_ = true;
      return Status::Ok();
    }
    case '(':  // MARK
      marks_.push_back(stack_.size());
      return Status::Ok();
    case '}': {  // EMPTY_DICT
      BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kDict));
      stack_.push_back(v);
      return Status::Ok();
    }
    case ']': {  // EMPTY_LIST
      BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kList));
      stack_.push_back(v);
      return Status::Ok();
    }
    case ')':  // EMPTY_TUPLE
      return push_tuple({});
    case 't': {  // TUPLE
      BERT_ASSIGN_OR_RETURN(auto items, pop_mark());
      return push_tuple(std::move(items));
    }
    case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
      size_t k = static_cast<size_t>(op_ - 0x84);
      std::vector<Value*> items(k);
      for (size_t j = k; j-- > 0;) {
        BERT_ASSIGN_OR_RETURN(items[j], pop());
      }
      return push_tuple(std::move(items));
    }
    case 'J':  // BININT
      if (!have(4)) return truncated();
      return push_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))));
    case 'K':  // BININT1
      if (!have(1)) return truncated();
      return push_int(static_cast<int64_t>(le(1)));
    case 'M':  // BININT2
      if (!have(2)) return truncated();
      return push_int(static_cast<int64_t>(le(2)));
    case 0x8a: {  // LONG1
      if (!have(1)) return truncated();
      uint64_t k = le(1);
      if (k > 8) return fail("integer of " + std::to_string(k) + " bytes is too large");
      if (!have(k)) return truncated();
      uint64_t v = le(static_cast<size_t>(k));
      if (k > 0 && k < 8 && (v >> (8 * k - 1)) & 1) v |= ~uint64_t{0} << (8 * k);  // sign-extend
      return push_int(static_cast<int64_t>(v));
    }
    case 'G': {  // BINFLOAT (big-endian double)
      if (!have(8)) return truncated();
      uint64_t bits = 0;
      for (int j = 0; j < 8; ++j) bits = (bits << 8) | d_[pos_ + j];
      pos_ += 8;
      BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kFloat));
      std::memcpy(&v->f, &bits, 8);
      stack_.push_back(v);
      return Status::Ok();
    }
    case 'N': {  // NONE
      BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kNone));
      stack_.push_back(v);
      return Status::Ok();
    }
    case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
      BERT_ASSIGN_OR_RETURN(Value * v, make(Kind::kBool));
      v->i = op_ == 0x88 ? 1 : 0;
      stack_.push_back(v);
      return Status::Ok();
    }
    case 'X':  // BINUNICODE
      if (!have(4)) return truncated();
      return push_str(le(4));
    case 0x8c:  // SHORT_BINUNICODE
    case 'U':   // SHORT_BINSTRING
      if (!have(1)) return truncated();
      return push_str(le(1));
    case 0x8d:  // BINUNICODE8
      if (!have(8)) return truncated();
      return push_str(le(8));
    case 'T': {  // BINSTRING (signed 4-byte length)
      if (!have(4)) return truncated();
      int32_t len = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
      if (len < 0) return fail("negative string length");
      return push_str(static_cast<uint64_t>(len));
    }
    case 'q':  // BINPUT
      if (!have(1)) return truncated();
      return memo_put(le(1));
    case 'r':  // LONG_BINPUT
      if (!have(4)) return truncated();
      return memo_put(le(4));
    case 0x94:  // MEMOIZE
      return memo_put(memo_.size());
    case 'h':  // BINGET
      if (!have(1)) return truncated();
      return memo_get(le(1));
    case 'j':  // LONG_BINGET
      if (!have(4)) return truncated();
      return memo_get(le(4));
    case 's': {  // SETITEM
      BERT_ASSIGN_OR_RETURN(Value * v, pop());
      BERT_ASSIGN_OR_RETURN(Value * k, pop());
      return set_items({k, v});
    }
    case 'u': {  // SETITEMS
      BERT_ASSIGN_OR_RETURN(auto kv, pop_mark());
      return set_items(std::move(kv));
    }
    case 'a': {  // APPEND
      BERT_ASSIGN_OR_RETURN(Value * v, pop());
      return append_items({v});
    }
    case 'e': {  // APPENDS
      BERT_ASSIGN_OR_RETURN(auto items, pop_mark());
      return append_items(std::move(items));
    }
    case 'c': {  // GLOBAL "module\nname\n"
      BERT_ASSIGN_OR_RETURN(std::string module, read_line());
      BERT_ASSIGN_OR_RETURN(std::string name, read_line());
      return global(module, name);
    }
    case 0x93: {  // STACK_GLOBAL
      BERT_ASSIGN_OR_RETURN(Value * name, pop());
      BERT_ASSIGN_OR_RETURN(Value * module, pop());
      if (name->kind != Kind::kStr || module->kind != Kind::kStr)
        return fail("STACK_GLOBAL needs two strings");
      return global(module->s, name->s);
    }
    case 'R':  // REDUCE
      return reduce();
    case 'b':  // BUILD
      return build();
    case 'Q':  // BINPERSID
      return persistent_load();
    default:
      return format_error(path_ + ": unsupported pickle opcode " + opcode_text(op_) +
                          " at offset " + std::to_string(op_pos_) +
                          " (only the opcodes of a tensor state dict are accepted)");
  }
}

Result<Value*> Unpickler::run() {
  if (n_ > kMaxPickleBytes)
    return format_error(path_ + ": data.pkl is " + std::to_string(n_) +
                        " bytes, more than the " + std::to_string(kMaxPickleBytes) + " allowed");
  while (!stopped_) {
    if (pos_ >= n_)
      return format_error(path_ + ": pickle ends at offset " + std::to_string(pos_) +
                          " without a STOP opcode (truncated data.pkl)");
    BERT_RETURN_IF_ERROR(step());
  }
  return result_;
}

}  // namespace

Result<std::vector<std::pair<std::string, TorchTensorRef>>> unpickle_torch_state_dict(
    const uint8_t* data, size_t size, const std::string& path) {
  try {
    Unpickler u(data, size, path);
    BERT_ASSIGN_OR_RETURN(Value * root, u.run());
    if (root->kind != Kind::kDict)
      return format_error(path + ": the pickled object is a " + kind_name(root) +
                          ", not a state dict (a dict of name -> tensor)");
    std::vector<std::pair<std::string, TorchTensorRef>> out;
    std::unordered_map<std::string, size_t> index;
    for (const auto& [k, v] : root->dict) {
      if (k->kind != Kind::kStr)
        return format_error(path + ": state dict has a key of type " + kind_name(k) +
                            ", not a str");
      if (v->kind != Kind::kTensor)
        return format_error(path + ": state dict entry '" + k->s + "' is a " + kind_name(v) +
                            ", not a tensor");
      auto [it, fresh] = index.emplace(k->s, out.size());
      if (!fresh)  // a dict built with the same key twice: the last would win silently
        return format_error(path + ": state dict names tensor '" + k->s + "' twice");
      out.emplace_back(k->s, *v->tensor);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return internal_error(path + ": out of memory while reading the pickle");
  }
}

}  // namespace bert
