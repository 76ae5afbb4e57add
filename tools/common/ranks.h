// What the tools share about the ranks of a data-parallel job (bert/comm.h): an error that reaches
// every rank, and a rank's contiguous share of a range.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "bert/comm.h"

namespace cli {

// Prints "tool: error" (naming the rank in a multi-rank job) and reports the error to the other
// ranks, which stop at their next collective with a message naming this one. Returns 1.
inline int FailOnRanks(const char* tool, const bert::Status& st, bert::Communicator* comm) {
  if (comm && comm->world_size() > 1) {
    std::fprintf(stderr, "%s: rank %d: %s\n", tool, comm->rank(), st.to_string().c_str());
    if (st.code() != bert::ErrorCode::kAborted) comm->Fail(st.message());
  } else {
    std::fprintf(stderr, "%s: %s\n", tool, st.to_string().c_str());
  }
  return 1;
}

// Rank `rank` of `ranks`' share of [begin, end): contiguous, the shares' sizes differ by at most one.
inline std::pair<size_t, size_t> RankShare(size_t begin, size_t end, int rank, int ranks) {
  const size_t n = end - begin, per = n / static_cast<size_t>(ranks), extra = n % static_cast<size_t>(ranks);
  const size_t r = static_cast<size_t>(rank), from = begin + r * per + std::min(r, extra);
  return {from, from + per + (r < extra ? 1 : 0)};
}

}  // namespace cli
