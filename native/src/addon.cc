// weft_native: the few calls TypeScript cannot make (BPF objects, maps, links, socket
// options). Only src/bpf/ imports it; see src/bpf/native.ts for the typed surface.
#include <napi.h>

#include "bindings.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  weft::InitBpf(env, exports);
  weft::InitSocket(env, exports);
  return exports;
}

NODE_API_MODULE(weft_native, Init)
