# LibTorch comes from the project virtualenv's PyPI torch wheel (see
# requirements.txt). The wheel is a CUDA 13.0 build, so its CMake config also
# needs a CUDA 13.0 toolkit (nvcc and headers; scripts/deps installs one from
# PyPI wheels where none is installed); no GPU is needed to build or to run on
# CPU.
set(VOCODER_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python of the virtualenv that holds torch")
if(NOT EXISTS "${VOCODER_PYTHON}")
  message(FATAL_ERROR "No Python at ${VOCODER_PYTHON}: run scripts/deps first "
                      "(or set -DVOCODER_PYTHON=/path/to/venv/bin/python)")
endif()
execute_process(
  COMMAND "${VOCODER_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
  OUTPUT_VARIABLE TORCH_CMAKE_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE torch_rc)
if(NOT torch_rc EQUAL 0)
  message(FATAL_ERROR "${VOCODER_PYTHON} cannot import torch: run scripts/deps")
endif()
list(APPEND CMAKE_PREFIX_PATH "${TORCH_CMAKE_PREFIX}")

# The toolkit: CUDAToolkit_ROOT if given, else the one scripts/deps installs
# from PyPI wheels into .cuda/toolkit where no toolkit of torch's CUDA version
# is installed (the container image), else /usr/local/cuda. Torch's own
# FindCUDA reads CUDA_TOOLKIT_ROOT_DIR, CMake's FindCUDAToolkit the other two.
if(NOT DEFINED CUDAToolkit_ROOT)
  if(EXISTS "${CMAKE_SOURCE_DIR}/.cuda/toolkit/bin/nvcc")
    set(CUDAToolkit_ROOT "${CMAKE_SOURCE_DIR}/.cuda/toolkit")
  elseif(EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
endif()
if(DEFINED CUDAToolkit_ROOT)
  if(NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
    set(CUDA_TOOLKIT_ROOT_DIR "${CUDAToolkit_ROOT}")
  endif()
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS "${CUDAToolkit_ROOT}/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "${CUDAToolkit_ROOT}/bin/nvcc")
  endif()
  message(STATUS "CUDA toolkit for LibTorch's CMake package: ${CUDAToolkit_ROOT}")
endif()
# Kernels are never compiled from this project; the arch list only silences
# torch's detection, which would otherwise probe for a GPU.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")
endif()
find_package(Torch CONFIG REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} from ${TORCH_CMAKE_PREFIX}")
# Torch's CUDA headers include those of cuBLAS, cuSPARSE, cuSOLVER, ... A
# toolkit from scripts/deps' wheels has only nvcc and the runtime; the headers
# of the libraries come with the very wheels torch runs with, in the venv.
get_filename_component(_torch_site "${TORCH_CMAKE_PREFIX}/../../.." ABSOLUTE)
if(DEFINED CUDAToolkit_ROOT AND NOT EXISTS "${CUDAToolkit_ROOT}/include/cusparse.h"
   AND EXISTS "${_torch_site}/nvidia/cu13/include/cusparse.h")
  list(APPEND TORCH_INCLUDE_DIRS "${_torch_site}/nvidia/cu13/include")
  message(STATUS "CUDA library headers from the torch wheel's: ${_torch_site}/nvidia/cu13/include")
endif()
# Torch's config adds its ABI flag globally through TORCH_CXX_FLAGS; the
# project links torch only from model/.

# libtorch.so exports its own copy of std::filesystem (64 symbols). Whichever
# DSO comes first in an executable's NEEDED list wins symbol lookup, and torch
# comes before libstdc++ by default: std::filesystem::remove_all then ran
# torch's copy and crashed. Put libstdc++ first in every link.
add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
