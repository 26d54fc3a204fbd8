// `sse-chat token …`: prints a signed token for operators and scripts (and the README's curl
// session), with the same key file and algorithm the server verifies with (for RS256/ES256, the
// private key of the pair).
#pragma once

#include <string>

namespace sse {

// Runs the subcommand on `argv` (argv[0] is "token"); the exit status. Writes the token, or the
// usage and error, to `out` and `err`.
int token_command(int argc, char** argv, std::string& out, std::string& err);

}  // namespace sse
