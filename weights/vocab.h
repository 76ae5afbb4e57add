// WordPiece vocabulary files (vocab.txt): one token per line, id = line number, read the way
// HuggingFace's load_vocab does; plus a newline-joined form for embedding a vocab in model metadata.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bert/status.h"

namespace bert {

// Reads a vocab.txt. As Python's text-mode readlines() + rstrip("\n") (HF load_vocab) does, a line
// ends at "\n", "\r\n" or a lone "\r" and only that terminator is removed: spaces and other
// characters stay part of the token; an empty line is the token "". A last line without a
// terminator counts; there is no extra empty token after a final newline.
// Errors (the message names the file): missing/unreadable file (NotFound/IoError), no tokens,
// invalid UTF-8 (FormatError, with the line number), a token that appears twice (FormatError,
// naming both line numbers, 1-based).
Result<std::vector<std::string>> read_vocab_file(const std::string& path);

// Tokens joined with "\n" (no trailing newline). Tokens never contain '\n' when they come from
// read_vocab_file.
std::string join_vocab(const std::vector<std::string>& tokens);

// The inverse of join_vocab: splits on '\n' only. Same checks as read_vocab_file (empty, invalid
// UTF-8, duplicates).
Result<std::vector<std::string>> split_vocab(std::string_view joined);

}  // namespace bert
