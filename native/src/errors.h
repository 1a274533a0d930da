// Errors thrown to JavaScript: every one names the call and the object, and carries
// `errno` (number) and `code` ('EPERM', ...) properties.
#pragma once
#include <napi.h>
#include <string>

namespace weft {

// Throws a JS Error: "<what>: <strerror> (<CODE>, errno <n>)" plus errno/code properties.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string& what,
                             const std::string& extra = "", const std::string& verifierLog = "");
[[noreturn]] void ThrowType(Napi::Env env, const std::string& what);
std::string ErrnoCode(int err);

}  // namespace weft
