// BPF object, program, map and link calls: thin, synchronous, fd-based wrappers over libbpf.
// The TypeScript loader (src/bpf/) owns every fd these return and closes it with close().
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "bindings.h"
#include "errors.h"

namespace weft {
namespace {

// libbpf prints warnings through this callback; we keep them so a failed load can say why.
std::string g_libbpf_log;

int CaptureLibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[4096];
  int n = vsnprintf(line, sizeof(line), format, args);
  if (n > 0 && g_libbpf_log.size() < (1u << 20)) g_libbpf_log.append(line);
  return n;
}

int DupFd(Napi::Env env, int fd, const std::string& what) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno(env, errno, "dup fd of " + what);
  return copy;
}

// Frees a bpf_object when leaving scope, whether we return or throw.
struct ObjectGuard {
  bpf_object* obj = nullptr;
  ~ObjectGuard() {
    if (obj) bpf_object__close(obj);
  }
};

// openAndLoadObject(path, reuseMaps?: Record<mapName, fd>): maps named in reuseMaps are not
// created: the programs are loaded against those existing (e.g. pinned) maps instead.
Napi::Value OpenAndLoadObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "openAndLoadObject");
  Napi::Object reuseMaps;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) ThrowType(env, "openAndLoadObject: argument 1 must be an object of map name -> fd");
    reuseMaps = info[1].As<Napi::Object>();
  }

  g_libbpf_log.clear();
  // Only filled when a load fails: libbpf then retries that program with log_level 1.
  std::vector<char> verifierLog(4u << 20, '\0');
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  opts.kernel_log_buf = verifierLog.data();
  opts.kernel_log_size = verifierLog.size();
  opts.kernel_log_level = 0;

  ObjectGuard guard;
  guard.obj = bpf_object__open_file(path.c_str(), &opts);
  if (!guard.obj) {
    int err = errno;
    std::string log = g_libbpf_log;
    ThrowErrno(env, err, "openAndLoadObject: bpf_object__open_file " + path,
               log);
  }
  if (!reuseMaps.IsEmpty()) {
    Napi::Array names = reuseMaps.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value fdValue = reuseMaps.Get(name);
      if (!fdValue.IsNumber()) ThrowType(env, "openAndLoadObject: reuseMaps." + name + " must be an fd");
      bpf_map* map = bpf_object__find_map_by_name(guard.obj, name.c_str());
      if (!map) ThrowErrno(env, ENOENT, "openAndLoadObject: " + path + " has no map " + name + " to reuse");
      if (bpf_map__reuse_fd(map, fdValue.As<Napi::Number>().Int32Value()) != 0)
        ThrowErrno(env, errno, "openAndLoadObject: reuse fd for map " + name + " of " + path, g_libbpf_log);
    }
  }
  if (bpf_object__load(guard.obj) != 0) {
    int err = errno;
    std::string log = g_libbpf_log;
    std::string kernelLog(verifierLog.data(), strnlen(verifierLog.data(), verifierLog.size()));
    std::string extra;
    if (!log.empty()) extra += log;
    if (!kernelLog.empty()) extra += "\nverifier log:\n" + kernelLog;
    ThrowErrno(env, err, "openAndLoadObject: bpf_object__load " + path, extra, kernelLog);
  }

  Napi::Object programs = Napi::Object::New(env);
  Napi::Object maps = Napi::Object::New(env);
  std::vector<int> owned;
  try {
    bpf_program* prog;
    bpf_object__for_each_program(prog, guard.obj) {
      int fd = DupFd(env, bpf_program__fd(prog), std::string("program ") + bpf_program__name(prog));
      owned.push_back(fd);
      programs.Set(bpf_program__name(prog), Napi::Number::New(env, fd));
    }
    bpf_map* map;
    bpf_object__for_each_map(map, guard.obj) {
      if (bpf_map__is_internal(map)) continue;  // .rodata/.bss: not part of our interface
      int fd = DupFd(env, bpf_map__fd(map), std::string("map ") + bpf_map__name(map));
      owned.push_back(fd);
      maps.Set(bpf_map__name(map), Napi::Number::New(env, fd));
    }
  } catch (...) {
    for (int fd : owned) ::close(fd);
    throw;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("programs", programs);
  result.Set("maps", maps);
  return result;
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "objPin");
  std::string path = StringArg(info, 1, "objPin");
  if (bpf_obj_pin(fd, path.c_str()) != 0) ThrowErrno(info.Env(), errno, "objPin fd " + std::to_string(fd) + " at " + path);
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "objGet");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), errno, "objGet " + path);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "close");
  if (::close(fd) != 0) ThrowErrno(info.Env(), errno, "close fd " + std::to_string(fd));
  return info.Env().Undefined();
}

bool AttachTypeByName(const std::string& name, bpf_attach_type* out) {
  if (name == "connect4") *out = BPF_CGROUP_INET4_CONNECT;
  else if (name == "connect6") *out = BPF_CGROUP_INET6_CONNECT;
  else if (name == "getpeername4") *out = BPF_CGROUP_INET4_GETPEERNAME;
  else if (name == "getpeername6") *out = BPF_CGROUP_INET6_GETPEERNAME;
  else if (name == "sockops") *out = BPF_CGROUP_SOCK_OPS;
  else if (name == "ingress") *out = BPF_CGROUP_INET_INGRESS;
  else return false;
  return true;
}

Napi::Value LinkCreateCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd = FdArg(info, 0, "linkCreateCgroup");
  int cgroupFd = FdArg(info, 1, "linkCreateCgroup");
  std::string typeName = StringArg(info, 2, "linkCreateCgroup");
  bpf_attach_type type;
  if (!AttachTypeByName(typeName, &type))
    ThrowType(env, "linkCreateCgroup: unknown attach type '" + typeName +
                       "' (known: connect4, connect6, getpeername4, getpeername6, sockops, ingress)");
  int fd = bpf_link_create(progFd, cgroupFd, type, nullptr);
  if (fd < 0)
    ThrowErrno(env, errno, "linkCreateCgroup " + typeName + " (prog fd " + std::to_string(progFd) +
                               ", cgroup fd " + std::to_string(cgroupFd) + ")");
  return Napi::Number::New(env, fd);
}

// progAttach(progFd, mapFd, 'stream_verdict'): a sockmap program, attached to the map itself
// (BPF_PROG_ATTACH; it lives as long as the map). Attaching again replaces the program for
// sockets added from then on.
Napi::Value ProgAttachMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd = FdArg(info, 0, "progAttachMap");
  int mapFd = FdArg(info, 1, "progAttachMap");
  std::string typeName = StringArg(info, 2, "progAttachMap");
  if (typeName != "stream_verdict") ThrowType(env, "progAttachMap: unknown attach type '" + typeName + "' (known: stream_verdict)");
  if (bpf_prog_attach(progFd, mapFd, BPF_SK_SKB_STREAM_VERDICT, 0) != 0)
    ThrowErrno(env, errno, "progAttachMap " + typeName + " (prog fd " + std::to_string(progFd) + ", map fd " + std::to_string(mapFd) + ")");
  return env.Undefined();
}

Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  int linkFd = FdArg(info, 0, "linkUpdate");
  int progFd = FdArg(info, 1, "linkUpdate");
  // Swaps the program under an attached link atomically: no moment without a program.
  if (bpf_link_update(linkFd, progFd, nullptr) != 0)
    ThrowErrno(info.Env(), errno, "linkUpdate link fd " + std::to_string(linkFd) + " to prog fd " + std::to_string(progFd));
  return info.Env().Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "linkDetach");
  if (bpf_link_detach(fd) != 0) ThrowErrno(info.Env(), errno, "linkDetach link fd " + std::to_string(fd));
  return info.Env().Undefined();
}

template <typename Info>
void GetInfo(Napi::Env env, int fd, Info* out, const char* call) {
  std::memset(out, 0, sizeof(*out));
  __u32 len = sizeof(*out);
  if (bpf_obj_get_info_by_fd(fd, out, &len) != 0) ThrowErrno(env, errno, std::string(call) + " fd " + std::to_string(fd));
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "progInfo");
  bpf_prog_info prog;
  GetInfo(env, fd, &prog, "progInfo");
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, prog.id));
  result.Set("name", Napi::String::New(env, prog.name));
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", prog.tag[i]);
  result.Set("tag", Napi::String::New(env, tag));
  const char* type = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(prog.type));
  result.Set("type", Napi::String::New(env, type ? type : std::to_string(prog.type)));
  return result;
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapInfo");
  bpf_map_info map;
  GetInfo(env, fd, &map, "mapInfo");
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, map.id));
  result.Set("name", Napi::String::New(env, map.name));
  const char* type = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(map.type));
  result.Set("type", Napi::String::New(env, type ? type : std::to_string(map.type)));
  result.Set("keySize", Napi::Number::New(env, map.key_size));
  result.Set("valueSize", Napi::Number::New(env, map.value_size));
  result.Set("maxEntries", Napi::Number::New(env, map.max_entries));
  result.Set("flags", Napi::Number::New(env, map.map_flags));
  return result;
}

Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "linkInfo");
  bpf_link_info link;
  GetInfo(env, fd, &link, "linkInfo");
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, link.id));
  result.Set("progId", Napi::Number::New(env, link.prog_id));
  if (link.type == BPF_LINK_TYPE_CGROUP) {
    result.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(link.cgroup.cgroup_id)));
    const char* attach = libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(link.cgroup.attach_type));
    if (attach) result.Set("attachType", Napi::String::New(env, attach));
  }
  return result;
}

// Map element calls. The kernel reads key_size bytes of the key and writes value_size bytes of
// the value (per CPU for per-CPU maps), whatever the buffers are: every call checks the sizes it
// is given against the map's own (one BPF_OBJ_GET_INFO_BY_FD), so a wrong size is a TypeError,
// never a read or write past a buffer.

static void CheckSize(Napi::Env env, const char* call, int fd, const char* what, size_t given, uint32_t expected) {
  if (given != expected)
    ThrowType(env, std::string(call) + ": " + what + " is " + std::to_string(given) + " bytes, map fd " +
                       std::to_string(fd) + " has " + std::to_string(expected) + "-byte " + what + "s");
}

static bpf_map_info MapSizes(Napi::Env env, int fd, const char* call) {
  bpf_map_info map;
  GetInfo(env, fd, &map, call);
  return map;
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapLookup");
  auto key = BufferArg(info, 1, "mapLookup");
  uint32_t valueSize = U32Arg(info, 2, "mapLookup", 0, false);
  bpf_map_info map = MapSizes(env, fd, "mapLookup");
  CheckSize(env, "mapLookup", fd, "key", key.Length(), map.key_size);
  CheckSize(env, "mapLookup", fd, "value", valueSize, map.value_size);
  auto value = Napi::Buffer<uint8_t>::New(env, valueSize);
  if (bpf_map_lookup_elem(fd, key.Data(), value.Data()) != 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, errno, "mapLookup map fd " + std::to_string(fd));
  }
  return value;
}

Napi::Value MapLookupAndDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapLookupAndDelete");
  auto key = BufferArg(info, 1, "mapLookupAndDelete");
  uint32_t valueSize = U32Arg(info, 2, "mapLookupAndDelete", 0, false);
  bpf_map_info map = MapSizes(env, fd, "mapLookupAndDelete");
  CheckSize(env, "mapLookupAndDelete", fd, "key", key.Length(), map.key_size);
  CheckSize(env, "mapLookupAndDelete", fd, "value", valueSize, map.value_size);
  auto value = Napi::Buffer<uint8_t>::New(env, valueSize);
  if (bpf_map_lookup_and_delete_elem(fd, key.Data(), value.Data()) != 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, errno, "mapLookupAndDelete map fd " + std::to_string(fd));
  }
  return value;
}

Napi::Value MapLookupPercpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapLookupPercpu");
  auto key = BufferArg(info, 1, "mapLookupPercpu");
  uint32_t valueSize = U32Arg(info, 2, "mapLookupPercpu", 0, false);
  bpf_map_info map = MapSizes(env, fd, "mapLookupPercpu");
  CheckSize(env, "mapLookupPercpu", fd, "key", key.Length(), map.key_size);
  CheckSize(env, "mapLookupPercpu", fd, "value", valueSize, map.value_size);
  int cpus = libbpf_num_possible_cpus();
  if (cpus < 0) ThrowErrno(env, -cpus, "mapLookupPercpu: libbpf_num_possible_cpus");
  // The kernel copies one slot per possible CPU, each rounded up to 8 bytes.
  size_t stride = (valueSize + 7) & ~size_t(7);
  std::vector<uint8_t> all(stride * cpus);
  if (bpf_map_lookup_elem(fd, key.Data(), all.data()) != 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, errno, "mapLookupPercpu map fd " + std::to_string(fd));
  }
  Napi::Array result = Napi::Array::New(env, cpus);
  for (int cpu = 0; cpu < cpus; cpu++)
    result.Set(cpu, Napi::Buffer<uint8_t>::Copy(env, all.data() + stride * cpu, valueSize));
  return result;
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapUpdate");
  auto key = BufferArg(info, 1, "mapUpdate");
  auto value = BufferArg(info, 2, "mapUpdate");
  uint32_t flags = U32Arg(info, 3, "mapUpdate", BPF_ANY, true);
  bpf_map_info map = MapSizes(env, fd, "mapUpdate");
  CheckSize(env, "mapUpdate", fd, "key", key.Length(), map.key_size);
  CheckSize(env, "mapUpdate", fd, "value", value.Length(), map.value_size);
  if (bpf_map_update_elem(fd, key.Data(), value.Data(), flags) != 0)
    ThrowErrno(env, errno, "mapUpdate map fd " + std::to_string(fd));
  return env.Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapDelete");
  auto key = BufferArg(info, 1, "mapDelete");
  CheckSize(env, "mapDelete", fd, "key", key.Length(), MapSizes(env, fd, "mapDelete").key_size);
  if (bpf_map_delete_elem(fd, key.Data()) != 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowErrno(env, errno, "mapDelete map fd " + std::to_string(fd));
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "mapKeys");
  uint32_t keySize = U32Arg(info, 1, "mapKeys", 0, false);
  CheckSize(env, "mapKeys", fd, "key", keySize, MapSizes(env, fd, "mapKeys").key_size);
  std::vector<uint8_t> current(keySize), next(keySize);
  Napi::Array result = Napi::Array::New(env);
  const void* prev = nullptr;  // NULL asks for the first key
  uint32_t count = 0;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    result.Set(count++, Napi::Buffer<uint8_t>::Copy(env, next.data(), keySize));
    current.swap(next);
    prev = current.data();
    if (count > (1u << 24)) break;  // a map cannot hold this many: guard against a cycle
  }
  if (errno != ENOENT) ThrowErrno(env, errno, "mapKeys map fd " + std::to_string(fd));
  return result;
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus < 0) ThrowErrno(info.Env(), -cpus, "numPossibleCpus");
  return Napi::Number::New(info.Env(), cpus);
}

}  // namespace

void InitBpf(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(CaptureLibbpfPrint);
  exports.Set("openAndLoadObject", Napi::Function::New(env, OpenAndLoadObject));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("linkCreateCgroup", Napi::Function::New(env, LinkCreateCgroup));
  exports.Set("progAttachMap", Napi::Function::New(env, ProgAttachMap));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapLookupAndDelete", Napi::Function::New(env, MapLookupAndDelete));
  exports.Set("mapLookupPercpu", Napi::Function::New(env, MapLookupPercpu));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapKeys", Napi::Function::New(env, MapKeys));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
}

}  // namespace weft
