// Socket options on a socket's fd (from net.Socket's handle): cookie, mark, transparent,
// reuseport, and the netfilter original destination.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "args.h"
#include "bindings.h"
#include "errors.h"

namespace weft {
namespace {

void SetIntOption(const Napi::CallbackInfo& info, int level, int name, int value, const char* call,
                  const char* option) {
  int fd = FdArg(info, 0, call);
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0)
    ThrowErrno(info.Env(), errno, std::string(call) + ": setsockopt " + option + " on fd " + std::to_string(fd));
}

Napi::Value GetSocketCookie(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "getSocketCookie");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
    ThrowErrno(info.Env(), errno, "getSocketCookie: getsockopt SO_COOKIE on fd " + std::to_string(fd));
  return Napi::BigInt::New(info.Env(), cookie);
}

Napi::Value SetSocketMark(const Napi::CallbackInfo& info) {
  uint32_t mark = U32Arg(info, 1, "setSocketMark", 0, false);
  SetIntOption(info, SOL_SOCKET, SO_MARK, static_cast<int>(mark), "setSocketMark", "SO_MARK");
  return info.Env().Undefined();
}

Napi::Value SetIpTransparent(const Napi::CallbackInfo& info) {
  bool on = BoolArg(info, 1, "setIpTransparent");
  SetIntOption(info, SOL_IP, IP_TRANSPARENT, on ? 1 : 0, "setIpTransparent", "IP_TRANSPARENT");
  return info.Env().Undefined();
}

Napi::Value SetReusePort(const Napi::CallbackInfo& info) {
  bool on = BoolArg(info, 1, "setReusePort");
  SetIntOption(info, SOL_SOCKET, SO_REUSEPORT, on ? 1 : 0, "setReusePort", "SO_REUSEPORT");
  return info.Env().Undefined();
}

Napi::Value GetOriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "getOriginalDst");
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0)
    ThrowErrno(env, errno, "getOriginalDst: getsockopt SO_ORIGINAL_DST on fd " + std::to_string(fd));
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
  Napi::Object result = Napi::Object::New(env);
  result.Set("ip", Napi::String::New(env, ip));
  result.Set("port", Napi::Number::New(env, ntohs(addr.sin_port)));
  return result;
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("getSocketCookie", Napi::Function::New(env, GetSocketCookie));
  exports.Set("setSocketMark", Napi::Function::New(env, SetSocketMark));
  exports.Set("setIpTransparent", Napi::Function::New(env, SetIpTransparent));
  exports.Set("setReusePort", Napi::Function::New(env, SetReusePort));
  exports.Set("getOriginalDst", Napi::Function::New(env, GetOriginalDst));
}

}  // namespace weft
