#include "errors.h"

#include <cstring>

namespace weft {

std::string ErrnoCode(int err) {
  const char* name = strerrorname_np(err);
  return name ? std::string(name) : "E" + std::to_string(err);
}

void ThrowErrno(Napi::Env env, int err, const std::string& what, const std::string& extra,
                const std::string& verifierLog) {
  if (err < 0) err = -err;
  std::string code = ErrnoCode(err);
  std::string message = what + ": " + std::strerror(err) + " (" + code + ", errno " +
                        std::to_string(err) + ")";
  if (!extra.empty()) message += "\n" + extra;
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("errno", Napi::Number::New(env, err));
  error.Value().Set("code", Napi::String::New(env, code));
  if (!verifierLog.empty()) error.Value().Set("verifierLog", Napi::String::New(env, verifierLog));
  throw error;
}

void ThrowType(Napi::Env env, const std::string& what) {
  Napi::TypeError error = Napi::TypeError::New(env, what);
  error.Value().Set("errno", Napi::Number::New(env, EINVAL));
  error.Value().Set("code", Napi::String::New(env, "EINVAL"));
  throw error;
}

}  // namespace weft
