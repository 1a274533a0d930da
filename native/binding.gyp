{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["src/addon.cc", "src/bpf_ops.cc", "src/socket_ops.cc", "src/errors.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lbpf"]
    }
  ]
}
