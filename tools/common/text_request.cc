// ParseJsonRequest / ParsePlainRequest (text_request.h).
#include "tools/common/text_request.h"

namespace cli {

bert::Result<TextRequest> ParseJsonRequest(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const nlohmann::json in = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded()) return bert::format_error("not valid JSON");
  if (!in.is_object()) return bert::format_error("expected a JSON object, got " + std::string(in.type_name()));
  auto text = in.find("text");
  if (text == in.end() || !text->is_string())
    return bert::format_error("expected an object with a string \"text\" field");
  TextRequest r;
  r.text = text->get<std::string>();
  if (auto pair = in.find("text_pair"); pair != in.end() && !pair->is_null()) {
    if (!pair->is_string()) return bert::format_error("\"text_pair\" must be a string");
    r.pair = pair->get<std::string>();
  }
  if (auto id = in.find("id"); id != in.end() && !id->is_null()) {
    if (!id->is_string() && !id->is_number()) return bert::format_error("\"id\" must be a string or a number");
    r.id = *id;
  }
  return r;
}

bert::Result<TextRequest> ParsePlainRequest(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  TextRequest r;
  const size_t tab = line.find('\t');
  if (tab == std::string_view::npos) {
    r.text = std::string(line);
    return r;
  }
  if (line.find('\t', tab + 1) != std::string_view::npos)
    return bert::format_error("more than one TAB (expected text or text<TAB>pair)");
  r.text = std::string(line.substr(0, tab));
  r.pair = std::string(line.substr(tab + 1));
  return r;
}

bool IsBlankLine(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

}  // namespace cli
