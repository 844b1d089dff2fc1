// The Python module sam2_fast._C. The ops themselves are registered with the torch dispatcher
// (TORCH_LIBRARY in ops.cpp) when this library is loaded and are called as
// torch.ops.sam2_fast.<name>; this module only adds build_info(). It includes no torch header.
#include <pybind11/pybind11.h>

#include <string>

#include "build_info.h"

namespace py = pybind11;

namespace {

// Empty CMake values (e.g. the CUDA version of a CPU-only build) become None.
py::object none_if_empty(const char* value) {
  if (std::string(value).empty()) {
    return py::none();
  }
  return py::str(value);
}

py::dict build_info() {
  namespace b = sam2_fast::build;
  py::dict info;
  info["version"] = b::kVersion;
  info["torch_version"] = b::kTorchVersion;
  info["torch_cuda_version"] = none_if_empty(b::kTorchCudaVersion);
  info["compiler"] = b::kCompiler;
  info["build_type"] = b::kBuildType;
  info["cxx_flags"] = b::kCxxFlags;
#ifdef _OPENMP
  info["openmp"] = true;  // at::parallel_for in the C++ ops runs on torch's threads
#else
  info["openmp"] = false;
#endif
#ifdef SAM2_FAST_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["build_cuda_mode"] = b::kBuildCudaMode;
  info["cuda_skip_reason"] = none_if_empty(b::kCudaSkipReason);
  info["cuda_version"] = none_if_empty(b::kCudaVersion);
  info["cuda_archs"] = none_if_empty(b::kCudaArchs);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sam2_fast compiled ops (registered as torch.ops.sam2_fast.*) and build_info()";
  m.def("build_info", &build_info,
        "What this extension was built with: versions, compiler, flags and CUDA support.");
}
