// Socket options on a socket's fd (from net.Socket's handle): cookie, mark, transparent,
// reuseport, the netfilter original destination, and what the L4 fast path needs (a
// non-blocking drain of the receive queue, TCP byte counters, SO_RCVLOWAT).
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
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

// recvAvailable(fd, max): what the socket's receive queue holds now, read without blocking
// (MSG_DONTWAIT) until it is empty or max bytes were read: { data, eof, error? }. Reading until
// EAGAIN leaves no skb half-read, which matters before a socket joins a sockmap: its stream
// verdict (tcp_read_skb) takes whole skbs.
Napi::Value RecvAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "recvAvailable");
  uint32_t max = U32Arg(info, 1, "recvAvailable", 0, false);
  std::string data;
  bool eof = false;
  int error = 0;
  char chunk[65536];
  while (data.size() < max) {
    ssize_t n = recv(fd, chunk, std::min<size_t>(sizeof(chunk), max - data.size()), MSG_DONTWAIT);
    if (n > 0) { data.append(chunk, static_cast<size_t>(n)); continue; }
    if (n == 0) { eof = true; break; }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) error = errno;
    break;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", Napi::Buffer<char>::Copy(env, data.data(), data.size()));
  result.Set("eof", Napi::Boolean::New(env, eof));
  if (error != 0) result.Set("error", Napi::String::New(env, strerror(error)));
  return result;
}

// tcpCounters(fd): { bytesReceived, bytesAcked, unacked }: TCP_INFO's tcpi_bytes_received and
// tcpi_bytes_acked, and SIOCOUTQ (bytes in the send queue not yet acknowledged).
Napi::Value TcpCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "tcpCounters");
  struct tcp_info tcp {};
  socklen_t len = sizeof(tcp);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &len) != 0)
    ThrowErrno(env, errno, "tcpCounters: getsockopt TCP_INFO on fd " + std::to_string(fd));
  int unacked = 0;
  if (ioctl(fd, SIOCOUTQ, &unacked) != 0) ThrowErrno(env, errno, "tcpCounters: ioctl SIOCOUTQ on fd " + std::to_string(fd));
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytesReceived", Napi::Number::New(env, static_cast<double>(tcp.tcpi_bytes_received)));
  result.Set("bytesAcked", Napi::Number::New(env, static_cast<double>(tcp.tcpi_bytes_acked)));
  result.Set("unacked", Napi::Number::New(env, unacked));
  return result;
}

// setRcvLowat(fd, bytes): SO_RCVLOWAT. On TCP setting it also runs the socket's data-ready
// callback when data is waiting (tcp_set_rcvlowat), which is how queued data that arrived
// before a socket joined a sockmap reaches its stream verdict.
Napi::Value SetRcvLowat(const Napi::CallbackInfo& info) {
  uint32_t bytes = U32Arg(info, 1, "setRcvLowat", 0, false);
  SetIntOption(info, SOL_SOCKET, SO_RCVLOWAT, static_cast<int>(bytes), "setRcvLowat", "SO_RCVLOWAT");
  return info.Env().Undefined();
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("getSocketCookie", Napi::Function::New(env, GetSocketCookie));
  exports.Set("setSocketMark", Napi::Function::New(env, SetSocketMark));
  exports.Set("setIpTransparent", Napi::Function::New(env, SetIpTransparent));
  exports.Set("setReusePort", Napi::Function::New(env, SetReusePort));
  exports.Set("getOriginalDst", Napi::Function::New(env, GetOriginalDst));
  exports.Set("recvAvailable", Napi::Function::New(env, RecvAvailable));
  exports.Set("tcpCounters", Napi::Function::New(env, TcpCounters));
  exports.Set("setRcvLowat", Napi::Function::New(env, SetRcvLowat));
}

}  // namespace weft
