// Exceptions never cross the public API: guarded() runs a body and turns std::bad_alloc (memory
// exhaustion, an absurd size that got past the checks) and any other std::exception (a JSON type
// error, std::length_error from make_owned_tensor) into an error value naming `what`.
#pragma once

#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "bert/status.h"

namespace bert {

template <typename F>
auto guarded(const std::string& what, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return out_of_range(what + ": out of memory (a size in the input is larger than this machine can hold)");
  } catch (const std::length_error& e) {
    return out_of_range(what + ": " + e.what());
  } catch (const std::exception& e) {
    return internal_error(what + ": unexpected error: " + e.what());
  }
}

}  // namespace bert
