// Argument checking shared by the bindings: a wrong argument is a TypeError naming the call.
#pragma once
#include <napi.h>
#include <string>

#include "errors.h"

namespace weft {

inline int FdArg(const Napi::CallbackInfo& info, size_t i, const char* call) {
  if (i >= info.Length() || !info[i].IsNumber())
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " must be an fd (number)");
  int fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowType(info.Env(), std::string(call) + ": fd must be >= 0, got " + std::to_string(fd));
  return fd;
}

inline uint32_t U32Arg(const Napi::CallbackInfo& info, size_t i, const char* call, uint32_t fallback,
                       bool optional) {
  if (i >= info.Length() || info[i].IsUndefined()) {
    if (optional) return fallback;
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " is required");
  }
  if (!info[i].IsNumber())
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().Uint32Value();
}

inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* call) {
  if (i >= info.Length() || !info[i].IsString())
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

inline Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* call) {
  if (i >= info.Length() || !info[i].IsBuffer())
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

inline bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* call) {
  if (i >= info.Length() || !info[i].IsBoolean())
    ThrowType(info.Env(), std::string(call) + ": argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

}  // namespace weft
