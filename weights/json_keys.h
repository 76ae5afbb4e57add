// Duplicate JSON object keys: nlohmann::json (and Python's json) keep the last of two equal keys,
// so a safetensors header or a sharded index could name a tensor twice and have the last entry
// win silently. The formats forbid it; the readers refuse it with this check.
#pragma once

#include <string>
#include <string_view>

#include "bert/status.h"

namespace bert {

// OK when no object in `json_text` (at any depth) has the same key twice, or when the text is not
// valid JSON (the caller's parse reports that). Otherwise a FormatError naming `what`, the key and
// the object's path ("header key 'a.weight' appears twice").
Status check_unique_keys(std::string_view json_text, const std::string& what);

}  // namespace bert
