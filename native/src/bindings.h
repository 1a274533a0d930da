#pragma once
#include <napi.h>

namespace weft {
void InitBpf(Napi::Env env, Napi::Object exports);
void InitSocket(Napi::Env env, Napi::Object exports);
}  // namespace weft
