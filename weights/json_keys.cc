// check_unique_keys (json_keys.h): a SAX pass over the text with one key set per open object.
#include "weights/json_keys.h"

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

namespace bert {
namespace {

class KeyChecker : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string duplicate;  // the first repeated key, or empty
  size_t depth_of_duplicate = 0;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) {
      duplicate = k;
      depth_of_duplicate = keys_.size();
      return false;  // stop: one is enough
    }
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  std::vector<std::set<std::string>> keys_;
};

}  // namespace

Status check_unique_keys(std::string_view json_text, const std::string& what) {
  KeyChecker checker;
  try {
    nlohmann::json::sax_parse(json_text.begin(), json_text.end(), &checker);
  } catch (const std::exception&) {
    return Status();  // not JSON: the caller's own parse names that
  }
  if (checker.duplicate.empty()) return Status();
  return format_error(what + ": key '" + checker.duplicate + "' appears twice in one object" +
                      (checker.depth_of_duplicate == 1 ? "" : " (nested)") +
                      "; the format forbids duplicate keys (which entry would win is undefined)");
}

}  // namespace bert
