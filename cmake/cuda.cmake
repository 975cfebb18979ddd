# The CUDA backend: library tessera_cuda (src/cuda/*.cu, src/kernels/cuda/*.cu) and its tests
# (tests/cuda/*.cpp). Included from the end of CMakeLists.txt, after the CPU library `tessera`,
# the test setup (GoogleTest) and TESSERA_WARNINGS are defined.
#
# On by default when nvcc can be found. CI has nvcc but no GPU: everything compiles and links,
# and the tests report themselves as skipped ("no CUDA device: <why>").
# TESSERA_CUDA_EMULATION: the same CUDA sources built with the host compiler against the
# emulated device (src/emu) instead of nvcc and the toolkit; cmake/cuda_emulation.cmake.
option(TESSERA_CUDA_EMULATION
       "Build the CUDA backend for the emulated CUDA device (src/emu): g++, no GPU, no toolkit" OFF)
if(TESSERA_CUDA_EMULATION)
  include(${CMAKE_CURRENT_LIST_DIR}/cuda_emulation.cmake)
  return()
endif()
include(CheckLanguage)
check_language(CUDA)
set(TESSERA_CUDA_DEFAULT OFF)
if(CMAKE_CUDA_COMPILER)
  set(TESSERA_CUDA_DEFAULT ON)
endif()
option(TESSERA_CUDA "Build the CUDA backend (needs nvcc, cuBLASLt and NCCL)" ${TESSERA_CUDA_DEFAULT})
if(NOT TESSERA_CUDA)
  if(CMAKE_CUDA_COMPILER)
    message(STATUS "CUDA backend: off (-DTESSERA_CUDA=OFF)")
  else()
    message(STATUS "CUDA backend: off (no CUDA compiler found: nvcc not on PATH)")
  endif()
  return()
endif()
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "TESSERA_CUDA=ON but no CUDA compiler was found: put nvcc on PATH, or set "
                      "CMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc, or pass -DTESSERA_CUDA=OFF")
endif()

# A100 (sm_80) as SASS; H100/H200 (sm_90) as SASS plus compute_90 PTX for later GPUs to JIT.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
endif()
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
enable_language(CUDA)
# C++20 like the rest (core headers use defaulted comparisons; CUDA targets inherit
# CXX_STANDARD 20). CMake 3.25 does not know nvcc's C++20 flag, which nvcc has had since 12.0:
# tell it, after enable_language so that its compiler checks run with the defaults.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
find_package(CUDAToolkit REQUIRED)

# NCCL ships with the toolkit here (/usr/local/cuda/lib64), as Debian's libnccl-dev, or as the pip
# package nvidia-nccl-cu13 (site-packages/nvidia/nccl/{include,lib}, which has libnccl.so.2 but no
# unversioned libnccl.so). TESSERA_NCCL_ROOT (a CMake or environment variable) names such a folder:
# it is searched first, alone, so that header and library come from the same NCCL.
set(TESSERA_NCCL_ROOT "$ENV{TESSERA_NCCL_ROOT}" CACHE PATH
    "Folder holding NCCL's include/nccl.h and lib/libnccl.so[.2] (e.g. pip's nvidia/nccl)")
if(TESSERA_NCCL_ROOT)
  find_library(TESSERA_NCCL_LIBRARY NAMES nccl libnccl.so.2 PATHS ${TESSERA_NCCL_ROOT}
               PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  find_path(TESSERA_NCCL_INCLUDE_DIR nccl.h PATHS ${TESSERA_NCCL_ROOT} PATH_SUFFIXES include
            NO_DEFAULT_PATH)
endif()
find_library(TESSERA_NCCL_LIBRARY NAMES nccl libnccl.so.2
             HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib64)
find_path(TESSERA_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
if(NOT TESSERA_NCCL_LIBRARY OR NOT TESSERA_NCCL_INCLUDE_DIR)
  message(FATAL_ERROR "CUDA backend: NCCL not found (library: ${TESSERA_NCCL_LIBRARY}, header: "
                      "${TESSERA_NCCL_INCLUDE_DIR}; looked in TESSERA_NCCL_ROOT='${TESSERA_NCCL_ROOT}', "
                      "next to the CUDA toolkit in ${CUDAToolkit_LIBRARY_DIR} and in the system "
                      "paths); install libnccl-dev, pass -DTESSERA_NCCL_ROOT=<folder with "
                      "include/nccl.h and lib/libnccl.so.2>, or pass -DTESSERA_CUDA=OFF")
endif()
add_library(tessera_nccl INTERFACE)
target_link_libraries(tessera_nccl INTERFACE ${TESSERA_NCCL_LIBRARY})
target_include_directories(tessera_nccl SYSTEM INTERFACE ${TESSERA_NCCL_INCLUDE_DIR})

message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures "
               "${CMAKE_CUDA_ARCHITECTURES}, NCCL ${TESSERA_NCCL_LIBRARY}")

# src/cuda/*.cu is host code against the CUDA runtime API (allocator, copies, errors, NCCL):
# compiled as C++ by the host compiler, which is several times faster than nvcc's per-
# architecture passes over the same headers and keeps the project's full warnings and fmt's
# compile-time format checks. (The .cu extension keeps them out of the CPU library's
# src/**/*.cpp glob.) Device code lives in src/kernels/cuda/*.cu and goes through nvcc.
# Host code with CUDA in it is named .cu wherever it lives (src/cuda, dist's NCCL communicator,
# src/backends): that keeps it out of the CPU library's src/**/*.cpp glob.
file(GLOB TESSERA_CUDA_HOST_SOURCES CONFIGURE_DEPENDS src/cuda/*.cu src/dist/*.cu src/backends/*.cu)
# src/backends/cuda.cu stands in for the CPU-only build's table of backends.
set_source_files_properties(src/backends/host_only.cpp PROPERTIES HEADER_FILE_ONLY ON)
file(GLOB TESSERA_CUDA_KERNEL_SOURCES CONFIGURE_DEPENDS src/kernels/cuda/*.cu)
set_source_files_properties(${TESSERA_CUDA_HOST_SOURCES} PROPERTIES LANGUAGE CXX)
# One library: the CUDA backend's tables (src/cuda/backend.cu, op_kernels.cu) name the kernels, so
# the host files join `tessera` (they get its C++ flags) and the kernels are compiled by nvcc
# as an object library with their own flags (tessera's -Wpedantic / -march=native are not nvcc
# options), whose objects go into `tessera` too. `tessera_cuda` stays as the name tests and
# scripts link and build: an interface library over `tessera`.
add_library(tessera_cuda_kernels OBJECT ${TESSERA_CUDA_KERNEL_SOURCES})
target_include_directories(tessera_cuda_kernels PRIVATE src)
target_link_libraries(tessera_cuda_kernels PRIVATE fmt::fmt CUDA::cudart CUDA::cublasLt)
target_sources(tessera PRIVATE ${TESSERA_CUDA_HOST_SOURCES}
                               $<TARGET_OBJECTS:tessera_cuda_kernels>)
target_link_libraries(tessera PUBLIC CUDA::cudart CUDA::cublasLt tessera_nccl)
add_library(tessera_cuda INTERFACE src/kernels/cuda/kernels.h)
target_link_libraries(tessera_cuda INTERFACE tessera)
# Host code: the project's warnings, as errors under TESSERA_WERROR; in the nvcc-compiled files
# without -Wpedantic (nvcc's generated host stubs use GNU line markers that it flags). Device
# code: nvcc's own warnings (e.g. unused variables in device functions) as errors too.
set(TESSERA_CUDA_HOST_WARNINGS -Wall,-Wextra,-Wno-unknown-pragmas)
if(TESSERA_WERROR)
  string(APPEND TESSERA_CUDA_HOST_WARNINGS ",-Werror")
  target_compile_options(tessera_cuda_kernels PRIVATE --Werror=all-warnings)
endif()
target_compile_options(tessera_cuda_kernels PRIVATE -Xcompiler=${TESSERA_CUDA_HOST_WARNINGS})
# fmt 9 under nvcc: its consteval format-string check is rejected by nvcc's front end ("did
# not produce a valid constant expression"), and it turns FMT_CONSTEXPR off when it sees
# __NVCC__, which then breaks g++'s host pass ("call to non-constexpr function"). So: no
# consteval (format strings in kernel files are checked at run time; the host files, compiled
# by g++, keep the compile-time check) and constexpr back on.
target_compile_definitions(tessera_cuda_kernels PRIVATE FMT_CONSTEVAL= FMT_USE_CONSTEXPR=1)

if(TESSERA_BUILD_TESTS)
  file(GLOB TESSERA_CUDA_TEST_SOURCES CONFIGURE_DEPENDS tests/cuda/test_*.cpp)
  foreach(src ${TESSERA_CUDA_TEST_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_compile_options(${name} PRIVATE ${TESSERA_WARNINGS} ${TESSERA_OPT})
    # test_nccl_* have their own main: it picks the CPU communicator (MPI under mpirun).
    if(name MATCHES "^test_nccl")
      target_link_libraries(${name} PRIVATE tessera_cuda GTest::gtest)
    else()
      target_link_libraries(${name} PRIVATE tessera_cuda GTest::gtest GTest::gtest_main)
    endif()
    target_include_directories(${name} PRIVATE tests tests/cuda)
    # Without a device every test calls GTEST_SKIP(), which CTest reports as skipped (gtest's
    # "[  SKIPPED ]" line) rather than passed or absent.
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS cuda)
  endforeach()
  # The NCCL communicator on 2 ranks under mpirun: the unique-id exchange over MPI always runs;
  # the collectives need 2 GPUs and skip themselves otherwise (NCCL allows one rank per GPU).
  # scripts/gpu_check.sh runs one rank per GPU of the machine.
  if(TESSERA_HAVE_MPI AND TARGET test_nccl_comm)
    add_test(NAME nccl_comm_2_ranks
             COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root -np 2
                     $<TARGET_FILE:test_nccl_comm>)
    set_tests_properties(nccl_comm_2_ranks PROPERTIES
                         ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_btl_vader_single_copy_mechanism=none"
                         LABELS "cuda;mpi" TIMEOUT 180)
  endif()
endif()

# The GPU training-step timing (scripts/gpu_check.sh): bench_train_step has its own main and
# needs no Google Benchmark, so it is built here even when the other benchmarks are off.
if(NOT TARGET bench_train_step)
  add_executable(bench_train_step bench/bench_train_step.cpp)
  target_compile_options(bench_train_step PRIVATE ${TESSERA_WARNINGS} ${TESSERA_OPT})
  target_link_libraries(bench_train_step PRIVATE tessera)
endif()
